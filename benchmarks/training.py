"""Training throughput: steps per second fed by the real ReconstructionDataModule (windows cut from preprocessed
images, augmented per window) against the same task fed batches already in memory: is the data the bottleneck?"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from timing import synchronize
from torch.utils.data import DataLoader

from polydefect.data.sample import load_samples
from polydefect.pipeline.detect import reconstruction_datamodule
from polydefect.pipeline.training import TrainingAllocation
from polydefect.tasks.base import build_detector


class StepTimer(L.Callback):
    """Steps per second after `warmup` steps (the first ones allocate and pick kernels), across epochs."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.seen, self.started, self.seconds = warmup, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, task: L.LightningModule, batch: Any, index: int) -> None:
        if self.seen == self.warmup:
            synchronize(task.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, out: Any, batch: Any, index: int) -> None:
        self.seen += 1
        if self.seen > self.warmup:
            synchronize(task.device)
            self.seconds = time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return (self.seen - self.warmup) / self.seconds


def _fit_rate(cfg: DictConfig, data: Any, steps: int, warmup: int) -> float:
    """Train a fresh task for `warmup + steps` steps on `data` (a DataModule or a loader); steps per second."""
    torch.manual_seed(cfg.seed)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, TrainingAllocation()] if cfg.reuse_freed_memory else [timer],  # as the stages train
    )
    task = build_detector(OmegaConf.merge(cfg.model, {"patience": None}))  # no validation: no early stopping
    if isinstance(data, L.LightningDataModule):
        trainer.fit(task, datamodule=data)
    else:
        trainer.fit(task, train_dataloaders=data)
    return timer.rate


def training_figures(cfg: DictConfig, table: pd.DataFrame, steps: int, warmup: int = 2) -> dict[str, float]:
    """Steps/s of the CAE fed by the DataModule (as the detect stage builds it) and by in-memory tensors."""
    good = load_samples(table[table["label"] == 0], cfg.preprocess)
    module = reconstruction_datamodule(cfg, good, good)
    module.setup("fit")
    windows = torch.from_numpy(module.train_set.images).unsqueeze(1)  # (N, 1, window, window) uint8
    count = (warmup + steps) * cfg.data.batch_size
    windows = windows[torch.arange(count) % len(windows)].float().div_(255)
    batches = [{"image": chunk} for chunk in windows.split(cfg.data.batch_size)]
    in_memory = DataLoader(batches, batch_size=None)  # already collated: the loader only hands them over
    datamodule_rate = _fit_rate(cfg, module, steps, warmup)
    tensor_rate = _fit_rate(cfg, in_memory, steps, warmup)
    return {
        "train_windows": len(module.train_set),
        "train_batch_size": cfg.data.batch_size,
        "train_datamodule_steps_per_s": datamodule_rate,
        "train_tensor_steps_per_s": tensor_rate,
        "train_datamodule_to_tensor_ratio": datamodule_rate / tensor_rate,
        "train_windows_per_s": tensor_rate * cfg.data.batch_size,
    }
