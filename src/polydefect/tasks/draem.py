"""Training DRAEM on good images with pasted synthetic anomalies; its segmentation output is the anomaly map."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydefect.data.synthetic_anomalies import paste_anomalies
from polydefect.models.draem import Draem
from polydefect.models.losses import mse_ssim_loss
from polydefect.tasks.inputs import match_channels, resize_input
from polydefect.tasks.pasted_anomalies import PastedAnomalyTask


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Binary focal loss (Lin et al. 2017) of logits and {0, 1} targets of one shape, averaged over pixels.

    Anomalous pixels are a few percent of a batch: the focal term keeps the many easy good pixels
    from swamping them, as in DRAEM's discriminative loss. In float32, whatever the autocast.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return ((1 - torch.exp(-bce)) ** gamma * bce).mean()


class DraemTask(PastedAnomalyTask):
    """DRAEM's training: reconstruction loss (MSE + SSIM) plus focal segmentation loss on pasted anomalies.

    Images are resized to a square `input_size` inside the task (it must suit the net's poolings)
    and maps are resized back to the caller's H, W.

    Args:
        net: the `Draem` networks.
        optimizer: a partial optimizer (Hydra `_partial_: true`) completed with the net's parameters.
        input_size: side of the square the nets see, px.
        anomaly_probability: chance that a training image gets a synthetic anomaly.
        anomaly_threshold: Perlin threshold of the anomaly shapes, or a [low, high] range drawn per anomaly
            (`paste_anomalies`).
        focal_gamma: focusing exponent of the segmentation loss.
        seed: seeds the synthetic anomalies (validation uses a fixed stream, so `val/loss` is comparable).
        max_epochs: this stage's epoch budget; the pipeline hands it to the Trainer.
    """

    def __init__(
        self,
        net: Draem,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        input_size: int = 128,
        anomaly_probability: float = 0.5,
        anomaly_threshold: float | Sequence[float] = 0.5,
        focal_gamma: float = 2.0,
        seed: int = 0,
        max_epochs: int = 30,
    ) -> None:
        super().__init__(optimizer, seed)
        if input_size % net.divisor:
            raise ValueError(f"model.input_size {input_size} must be divisible by {net.divisor} (the net's poolings)")
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net

    def _prepare(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, net.in_channels, S, S): grey replicated to colour, colour averaged to grey."""
        return resize_input(match_channels(images, self.net.in_channels), self.hparams.input_size)

    def losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        x = self._prepare(batch["image"])  # (B, C, S, S) in [0, 1]
        anomalous, masks = paste_anomalies(
            x, generator, self.hparams.anomaly_probability, self.hparams.anomaly_threshold
        )
        x_hat = self.net.reconstruct(anomalous)
        logits = self.net.segment(anomalous, x_hat)
        reconstruction = mse_ssim_loss(x_hat, x)
        segmentation = focal_loss(logits, masks, self.hparams.focal_gamma)
        return {
            "loss": reconstruction + segmentation,
            "reconstruction_loss": reconstruction,
            "segmentation_loss": segmentation,
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) float32 anomaly probability from the segmentation head (views
        unused)."""
        was_training = self.training
        self.eval()
        try:
            images = images.to(self.device, torch.float32)
            probability = torch.sigmoid(self.net(self._prepare(images)).float())
        finally:
            self.train(was_training)
        return F.interpolate(probability, size=images.shape[-2:], mode="bilinear", align_corners=False)
