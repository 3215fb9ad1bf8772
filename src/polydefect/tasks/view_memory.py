"""Training a per-view feature memory: one pass keeping each view's good images as feature maps, no optimizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polydefect.models.view_memory import ViewFeatureMemory, image_fingerprints
from polydefect.scoring.maps import patch_map_to_image
from polydefect.tasks.memory_bank import OnePassTask


class ViewMemoryTask(OnePassTask):
    """Compares each image with the same view of the good training batches (`ViewFeatureMemory`).

    With fixed views the natural reference of an image is its own view: a feature that is normal somewhere on
    some part (a dark edge) is anomalous where that view shows a flat face. The detect stage hands this task
    whole images with their view keys (`needs_views`), unaugmented, so the references keep their positions.

    Args:
        net: the per-view memory whose references `fit()` fills.
        input_scale: factor on the images' own size (aspect kept) before the backbone; finer cells for small defects.
        sigma: Gaussian smoothing std of the map at the backbone's input resolution, px; 0 turns it off.
        max_epochs: this stage's epoch budget; one pass is all the memory needs.
    """

    needs_views = True

    def __init__(
        self, net: ViewFeatureMemory, input_scale: float = 1.0, sigma: float = 4.0, max_epochs: int = 1
    ) -> None:
        super().__init__()
        if input_scale <= 0:
            raise ValueError(f"model.input_scale must be > 0, got {input_scale}")
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.collected: list[tuple[Tensor, list[str], Tensor]] = []  # (features, view keys, image hashes) per batch

    def _scaled(self, images: Tensor) -> Tensor:
        scale = self.hparams.input_scale
        if scale == 1.0:
            return images
        return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1)

    def start_collection(self) -> None:
        """Forget the references collected so far: a new pass over the training images begins."""
        self.collected = []

    @torch.no_grad()
    def collect(self, images: Tensor, views: Sequence[str]) -> int:
        """Keep the feature maps of good images (B, C, H, W) of the given views (float32, on the CPU) for `fit()`;
        returns how many images are kept."""
        images = images.to(self.device, torch.float32)
        features = self.net.embed(self._scaled(images)).float().cpu()
        self.collected.append((features, list(views), image_fingerprints(images)))
        return sum(len(f) for f, _, _ in self.collected)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("train/references", float(self.collect(batch["image"], batch["view"])), on_step=True, batch_size=1)

    def fit(self) -> None:
        """Make the collected feature maps the references of their views, then free them."""
        if not self.collected:
            raise RuntimeError("ViewMemoryTask.fit(): no images collected; run trainer.fit on good images first")
        features, views, hashes = zip(*self.collected, strict=True)
        self.net.remember(torch.cat(features), [v for batch in views for v in batch], torch.cat(hashes))
        self.collected = []

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor, views: Sequence[str] | None = None) -> Tensor:
        """(B, C, H, W) in [0, 1], C = 1 or 3, and their view keys -> (B, 1, H, W) float32 patch distance to the
        same view's good images: higher = more anomalous."""
        if views is None:
            raise ValueError("ViewMemoryTask.anomaly_map needs each image's view key (Sample.view_key)")
        return self._image_map(images, lambda scaled: self.net(scaled, views))

    def hashed_map(self, images: Tensor, view_hashes: Tensor, image_hashes: Tensor) -> Tensor:
        """`anomaly_map` with the view keys and the images as 64-bit hashes (`key_hashes`, `image_fingerprints`),
        what an exported graph computes (`polydefect.export`)."""
        return self._image_map(images, lambda scaled: self.net.hashed_forward(scaled, view_hashes, image_hashes))

    def _image_map(self, images: Tensor, distances_of: Callable[[Tensor], Tensor]) -> Tensor:
        images = images.to(self.device, torch.float32)
        scaled = self._scaled(images)
        with torch.autocast(images.device.type, enabled=False):  # distances between near-equal features
            distances = distances_of(scaled)
        return patch_map_to_image(distances, scaled.shape[-2:], self.hparams.sigma, images.shape[-2:])
