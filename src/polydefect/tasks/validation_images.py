"""Keeping the good validation batches of a fit, for detectors that calibrate themselves on them in `fit()`."""

from __future__ import annotations

from torch import Tensor


class KeepsValidationImages:
    """A LightningModule mixin (listed before the module's base): each validation epoch's good batches are kept
    on the CPU as `validation_images`, (B, C, H, W) each, outside the sanity check. Test images never enter."""

    validation_images: list[Tensor]

    def on_validation_epoch_start(self) -> None:
        self.validation_images = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if not self.trainer.sanity_checking:  # type: ignore[attr-defined]
            self.validation_images.append(batch["image"].cpu())
