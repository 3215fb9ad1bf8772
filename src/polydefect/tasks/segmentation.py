"""Training the background segmenter (thesis 3.6.3): BCE (+ Dice) on object masks, Adam, early stopping."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss, 1 - 2|P∩T| / (|P| + |T|), per image then averaged; logits and target (B, 1, H, W)."""
    probability = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (probability * target).sum(1)
    return (1 - (2 * overlap + eps) / (probability.sum(1) + target.sum(1) + eps)).mean()


class SegmentationTask(L.LightningModule):
    """A segmentation net trained on {"image": (B, 1, S, S) in [0, 1], "mask": (B, 1, S, S) in {0, 1}} batches.

    Args:
        net: a module mapping (B, C, S, S) images to (B, 1, S, S) logits, e.g. `polydefect.models.unet.UNet`.
        optimizer: a partial optimizer (Hydra `_partial_: true`), completed with the net's parameters.
        dice_weight: weight of the Dice loss added to BCE (thesis: 0, BCE only); Dice helps small objects.
        threshold: probability above which a pixel counts as object for the validation F1 and IoU.
        patience: epochs without a lower `val/loss` before training stops (thesis 3.6.3: 9 to 50); None trains
            every epoch (no early stopping, nor need of validation data).
    """

    checkpoint_monitor = "val/loss"  # `fit_task` keeps the epoch with the lowest

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        dice_weight: float = 0.0,
        threshold: float = 0.5,
        patience: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"], logger=False)
        self.net = net
        self.optimizer = optimizer
        self.dice_weight = float(dice_weight)
        # validate_args=False: the checks scan every pixel of every batch for non-binary targets
        self.val_f1 = BinaryF1Score(threshold=threshold, validate_args=False)
        self.val_iou = BinaryJaccardIndex(threshold=threshold, validate_args=False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, 1, S, S) logits."""
        return self.net(images)

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, masks)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, masks)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        size = len(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), on_epoch=True, prog_bar=True, batch_size=size)
        probability, target = torch.sigmoid(logits), batch["mask"].int()
        self.val_f1(probability, target)
        self.val_iou(probability, target)
        self.log("val/f1", self.val_f1, on_epoch=True, batch_size=size)
        self.log("val/iou", self.val_iou, on_epoch=True, batch_size=size)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.net.parameters())

    def configure_callbacks(self) -> list[Callback]:
        """Early stopping on `val/loss` (listing 3.5); the checkpoints are `fit_task`'s."""
        if self.hparams.patience is None:
            return []
        return [EarlyStopping(monitor=self.checkpoint_monitor, mode="min", patience=int(self.hparams.patience))]
