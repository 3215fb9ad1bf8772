"""Lightning Trainer arguments shared by every trained stage: hardware from `trainer`, metrics to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import mlflow
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.plugins.environments import LightningEnvironment
from omegaconf import DictConfig

from polydefect.allocator import hold_freed_memory_for_training, release_training_memory

SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # strategies whose ranks are processes started by the fit


def mlflow_logger() -> MLFlowLogger | bool:
    """A Lightning logger writing per-epoch metrics into the active (stage) MLflow run, or False if none."""
    run = mlflow.active_run()
    if run is None:
        return False
    return MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(), run_id=run.info.run_id)


def epoch_budget(own: int, cap: int | None) -> int:
    """A stage's epochs: its model's own number (`model.max_epochs`, `segmenter.max_epochs`: their one home),
    capped by the run's budget (`detect.max_epochs`, `segment.max_epochs`: the `budget` group)."""
    return own if cap is None else min(own, cap)


class TrainingAllocation(Callback):
    """Holds freed memory on the heap while a stage trains and gives it back when the fit ends or fails.

    Scoring keeps at most 128 MB of freed heap so its peak does not grow with the data; a training step's
    blocks are larger and come back at every step, so during the fit they stay (`polydefect.allocator`).
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        hold_freed_memory_for_training()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        release_training_memory()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        release_training_memory()


def trainer_kwargs(cfg: DictConfig, stage_max_epochs: int, root_dir: Path) -> dict[str, Any]:
    """`lightning.Trainer` keyword arguments for one stage.

    Args:
        cfg: the run config (its `trainer` node).
        stage_max_epochs: the stage's epochs (`epoch_budget`).
        root_dir: where Lightning may write (the stage's cache folder).
    """
    t = cfg.trainer
    kwargs: dict[str, Any] = dict(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=stage_max_epochs,
        max_steps=t.max_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        num_sanity_val_steps=t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        logger=mlflow_logger(),
        default_root_dir=str(root_dir),
        callbacks=[],
    )
    if t.enable_progress_bar:
        kwargs["callbacks"].append(RichProgressBar(leave=True))
    if cfg.reuse_freed_memory:
        kwargs["callbacks"].append(TrainingAllocation())
    if t.strategy in SPAWNING:
        # The strategy starts its ranks itself: inside a SLURM job, Lightning would otherwise take the job's one
        # task for the whole world and train on a single process.
        kwargs["plugins"] = [LightningEnvironment()]
    return kwargs
