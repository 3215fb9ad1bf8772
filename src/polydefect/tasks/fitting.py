"""One Lightning fit for every trained stage (detectors and the U-Net): resumable, keeping the best epoch."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


def fit_task(
    task: L.LightningModule, trainer_kwargs: Mapping[str, Any], folder: str | Path, monitor: str | None, **data: Any
) -> L.Trainer:
    """Fit `task` on `data` (`datamodule=` or `train_dataloaders=` / `val_dataloaders=`), checkpointing into
    `folder/checkpoints`; a `last.ckpt` left there by a killed run is resumed from.

    `last.ckpt` is rewritten every epoch by a checkpoint of its own: Lightning's `save_last` refreshes it only in
    epochs that also improve the best. With a `monitor`, `best.ckpt` keeps the epoch where it was lowest and the
    task holds those weights when this returns; without one the task keeps its last epoch's.

    Ctrl-C raises KeyboardInterrupt here, as anywhere else: Lightning catches it in `fit`, finishes its callbacks
    and calls `sys.exit(1)`, and this raises the interrupt again so the runs end KILLED, not FAILED.
    """
    checkpoints = Path(folder) / "checkpoints"
    last = ModelCheckpoint(dirpath=str(checkpoints), filename="last", enable_version_counter=False)
    callbacks: list[ModelCheckpoint] = [last]
    if monitor:
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(checkpoints), filename="best", monitor=monitor, mode="min", enable_version_counter=False
            )
        )
    kwargs = dict(trainer_kwargs)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), *callbacks]
    trainer = L.Trainer(**kwargs)
    resume = checkpoints / "last.ckpt"
    on_interrupt = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(task, ckpt_path=str(resume) if resume.is_file() else None, **data)
    except SystemExit as stop:
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        signal.signal(signal.SIGINT, on_interrupt)  # Lightning ignores any further Ctrl-C of the process
        raise stop.__context__ from None
    best = callbacks[-1].best_model_path if monitor else ""
    if best:
        task.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return trainer
