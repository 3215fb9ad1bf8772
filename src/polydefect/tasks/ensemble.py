"""Several feature-memory detectors (backbones, input sizes) as one: maps normalised on good validation images."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor, nn

from polydefect.tasks.memory_bank import MemoryBankTask


class EnsembleTask(L.LightningModule):
    """Mean of member maps, each standardised by the image scores (map maxima) of good validation images.

    Members' raw distances live on different scales (backbones differ in feature norms), so each map
    becomes (map - mean) / std of its maxima over the validation images seen during `trainer.fit`;
    then the ensemble's max is the mean of standardised image scores. Test images never enter the
    statistics.

    Args:
        members: name -> `MemoryBankTask`, e.g. two backbones or two input sizes.
        max_epochs: this stage's epoch budget; one pass is all the banks need.
    """

    def __init__(self, members: Mapping[str, MemoryBankTask], max_epochs: int = 1) -> None:
        super().__init__()
        if not members:
            raise ValueError("model.members must name at least one detector")
        self.save_hyperparameters(ignore=["members"], logger=False)
        self.members = nn.ModuleDict(dict(members))
        self.register_buffer("score_mean", torch.zeros(len(members)))
        self.register_buffer("score_std", torch.ones(len(members)))
        self.validation_images: list[Tensor] = []  # good validation batches, (B, C, H, W) on the CPU

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        for member in self.members.values():
            count = member.collect(batch["image"])
        self.log("train/features", float(count), on_step=True, batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self.validation_images = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if not self.trainer.sanity_checking:
            self.validation_images.append(batch["image"].cpu())

    def on_train_epoch_end(self) -> None:
        self.trainer.should_stop = True

    def configure_optimizers(self) -> None:
        return None

    def fit(self) -> None:
        """Build every member's bank, then standardise each member on the stored validation images."""
        if not self.validation_images:
            raise RuntimeError(
                "EnsembleTask.fit(): no validation images seen; it standardises its members on good validation"
                " images (set data.val_fraction > 0, or pass val_dataloaders to trainer.fit)"
            )
        for member in self.members.values():
            member.fit()
        for index, member in enumerate(self.members.values()):
            scores = torch.cat([member.anomaly_map(images).flatten(1).amax(1) for images in self.validation_images])
            self.score_mean[index] = scores.mean()
            self.score_std[index] = scores.std().clamp_min(1e-6) if len(scores) > 1 else 1.0

    @torch.inference_mode()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) float32 mean of the members' standardised maps."""
        maps = [
            (member.anomaly_map(images) - self.score_mean[i]) / self.score_std[i]
            for i, member in enumerate(self.members.values())
        ]
        return torch.stack(maps).mean(0)
