"""What the detectors trained on pasted synthetic anomalies share: one seeded stream of anomalies for training,
and a fixed draw per validation batch, so `val/loss` compares across epochs and the best epoch is kept."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from polydefect.tasks.base import DetectorTask


class PastedAnomalyTask(DetectorTask):
    """Training and validation steps over pasted anomalies; a subclass defines `losses` and the map.

    Args:
        optimizer: a partial optimizer (Hydra `_partial_: true`), completed in `configure_optimizers`.
        seed: seeds the training anomalies; validation batch i draws from seed + 1 + i.
    """

    checkpoint_monitor = "val/loss"  # the pipeline keeps the epoch with the lowest

    def __init__(self, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer], seed: int) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.anomaly_seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    @abstractmethod
    def losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """The losses of one batch with anomalies drawn from `generator`: "loss" (the one minimised) and any parts
        of it worth logging, as name -> scalar tensor."""

    def training_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`losses` with the next anomalies of the seeded training stream (an ensemble steps its members so)."""
        return self.losses(batch, self.generator)

    def _logged_loss(self, batch: dict[str, Tensor], stage: str, generator: torch.Generator) -> Tensor:
        losses, training = self.losses(batch, generator), stage == "train"
        size = len(batch["image"])
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                prog_bar=name == "loss",
                on_step=training,
                on_epoch=not training,
                batch_size=size,
            )
        return losses["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._logged_loss(batch, "train", self.generator)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._logged_loss(batch, "val", torch.Generator().manual_seed(self.anomaly_seed + 1 + batch_idx))
