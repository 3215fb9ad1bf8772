"""Lightning DataModules: image -> object mask for segmentation, windows of good images for reconstruction, whole
good images with their view keys for per-view references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from polydefect.data.augment import build_augmentation
from polydefect.data.datasets import ImageDataset, SegmentationDataset, WindowDataset
from polydefect.data.layout import DataLayoutError
from polydefect.data.sample import Sample, good_samples


def _reseed_augmentation(worker_id: int) -> None:
    """A worker process starts with a copy of the parent's augmentation generator: give each its own draws,
    from the worker seed that the loader's seeded generator decides."""
    info = get_worker_info()
    augment = getattr(info.dataset, "augment", None)
    if augment is not None:
        augment.set_random_seed(info.seed % 2**32)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
        worker_init_fn=_reseed_augmentation,
    )


class SegmentationDataModule(L.LightningDataModule):
    """Image -> object mask pairs from the train and validation tables."""

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        image_size: int,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tables = {"train": train, "val": val}
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.augment_cfg, self.seed = augment, seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = SegmentationDataset(
            self.tables["train"], self.image_size, build_augmentation(self.augment_cfg, self.seed)
        )
        self.val_set = SegmentationDataset(self.tables["val"], self.image_size)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, True, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.val_set, self.batch_size, False, self.num_workers, self.seed)


class ImageDataModule(L.LightningDataModule):
    """Whole good training images with their view keys, unaugmented and in table order: a detector that keeps
    each view's references at their pixel positions (`Detector.needs_views`) needs the frame as the scanner saw it.
    """

    def __init__(self, train: Sequence[Sample], batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.samples = good_samples(train)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def setup(self, stage: str | None = None) -> None:
        if not self.samples:
            raise DataLayoutError("no good training images to keep as references")
        self.train_set = ImageDataset(self.samples)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, False, self.num_workers, self.seed)


class ReconstructionDataModule(L.LightningDataModule):
    """Windows of good training and validation images for the detectors."""

    def __init__(
        self,
        train: Sequence[Sample],
        val: Sequence[Sample],
        core: int,
        window: int,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: Any = None,
        min_foreground: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.samples = {"train": good_samples(train), "val": good_samples(val)}
        self.core, self.window, self.min_foreground = core, window, min_foreground
        self.batch_size, self.num_workers, self.augment_cfg, self.seed = batch_size, num_workers, augment, seed

    def setup(self, stage: str | None = None) -> None:
        cut = dict(core=self.core, window=self.window, min_foreground=self.min_foreground)
        self.train_set = WindowDataset(
            self.samples["train"], augment=build_augmentation(self.augment_cfg, self.seed), **cut
        )
        self.val_set = WindowDataset(self.samples["val"] or self.samples["train"], **cut)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, True, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.val_set, self.batch_size, False, self.num_workers, self.seed)
