"""Training the feature segmenter on good images with pasted synthetic anomalies; its logits are the map."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydefect.data.synthetic_anomalies import paste_anomalies
from polydefect.models.feature_segmenter import FeatureSegmenter
from polydefect.tasks.inputs import resize_input
from polydefect.tasks.pasted_anomalies import PastedAnomalyTask
from polydefect.tasks.patch_maps import PatchMapTask


class FeatureSegmentationTask(PatchMapTask, PastedAnomalyTask):
    """Pasted Perlin-noise anomalies (the data layer's, as DRAEM's) and binary cross-entropy against each
    patch's share of anomalous pixels; only the head learns, the pretrained backbone stays frozen.

    Images are resized to a square `input_size` inside the task (or to that short side with `keep_aspect`) and
    the maps come back at the caller's H, W.

    Args:
        net: the `FeatureSegmenter`.
        optimizer: a partial optimizer (Hydra `_partial_: true`) completed with the head's parameters.
        input_size: side of the square the backbone sees, px (its short side with `keep_aspect`).
        keep_aspect: keep the image's aspect ratio instead of squashing it to a square.
        anomaly_probability: chance that a training image gets a synthetic anomaly.
        anomaly_threshold: Perlin threshold of the anomaly shapes, or a [low, high] range drawn per anomaly
            (`paste_anomalies`).
        repeats: anomalies drawn per image and batch (each a different one), so an epoch teaches more.
        sigma: Gaussian smoothing std of the map at `input_size` resolution, px; 0 turns it off.
        logits: map the head's log-odds instead of probabilities: unbounded, so confident detections keep their
            order when an ensemble averages this map with others (probabilities saturate at 1).
        seed: seeds the synthetic anomalies (validation uses a fixed stream, so `val/loss` is comparable).
        max_epochs: this stage's epoch budget; the pipeline hands it to the Trainer.
    """

    def __init__(
        self,
        net: FeatureSegmenter,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        input_size: int = 160,
        keep_aspect: bool = False,
        anomaly_probability: float = 0.5,
        anomaly_threshold: float | Sequence[float] = (-0.1, 0.6),
        repeats: int = 2,
        sigma: float = 4.0,
        logits: bool = False,
        seed: int = 0,
        max_epochs: int = 10,
    ) -> None:
        super().__init__(optimizer, seed)
        if input_size < 32:
            raise ValueError(f"model.input_size must be >= 32 px, got {input_size}")
        if repeats < 1:
            raise ValueError(f"model.repeats must be >= 1, got {repeats}")
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net

    def losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        images = resize_input(batch["image"].float(), self.hparams.input_size, self.hparams.keep_aspect)
        images = images.repeat(self.hparams.repeats, 1, 1, 1)
        anomalous, masks = paste_anomalies(
            images, generator, self.hparams.anomaly_probability, self.hparams.anomaly_threshold
        )
        logits = self.net(anomalous)
        target = F.adaptive_avg_pool2d(masks, logits.shape[-2:])  # each patch's share of anomalous pixels
        return {"loss": F.binary_cross_entropy_with_logits(logits, target)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.head.parameters())

    def patch_map(self, features: Tensor) -> Tensor:
        """(B, D, h, w) features -> (B, 1, h, w) anomaly probability (or log-odds) per patch, the head in eval
        mode."""
        was_training = self.training
        self.eval()
        try:
            logits = self.net.head(features).float()
        finally:
            self.train(was_training)
        return logits if self.hparams.logits else torch.sigmoid(logits)
