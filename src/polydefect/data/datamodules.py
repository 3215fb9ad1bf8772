"""Lightning DataModules: image -> object mask for segmentation, windows of good images for reconstruction, whole
good images with their view keys for per-view references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from polydefect.data.augment import augment_with_masks, build_augmentation
from polydefect.data.io import read_image, read_mask
from polydefect.data.layout import DataLayoutError
from polydefect.data.preprocess import resize, to_grey_uint8
from polydefect.data.sample import Sample, optional_path
from polydefect.data.tiling import split


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 or bool -> (1, H, W) or (C, H, W) float32 in [0, 1]."""
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(scale)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


class SegmentationDataset(Dataset):
    """Raw grey images and their true object masks, resized to a square model input (thesis 3.6.3)."""

    def __init__(self, table: pd.DataFrame, image_size: int, augment: Any = None) -> None:
        missing = table[[optional_path(p) is None for p in table["object_mask_path"]]]
        if not missing.empty:
            raise DataLayoutError(f"{missing.iloc[0]['image_path']}: no object mask, needed to train a segmenter")
        self.rows = table.reset_index(drop=True)
        self.size = (int(image_size), int(image_size))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.rows.iloc[index]
        image = to_grey_uint8(read_image(row["image_path"]))
        mask = read_mask(row["object_mask_path"], image.shape)
        image, (mask,) = augment_with_masks(self.augment, resize(image, self.size), [resize(mask, self.size, True)])
        return {"image": to_tensor(image), "mask": to_tensor(mask)}


CUT_CHUNK = 32  # images cut into windows together by `WindowDataset`


class WindowDataset(Dataset):
    """Overlap-tile windows of preprocessed good images, optionally augmented per window (thesis 3.8.1).

    Windows are cut once, `CUT_CHUNK` images at a time and kept as uint8, so cutting holds a few float copies of
    a chunk instead of the whole training set (630 magnetic tiles: 4 GB); windows whose core holds less than
    `min_foreground` object pixels are dropped, since a window of pure background teaches the model nothing about
    the surface.
    """

    def __init__(
        self, samples: Sequence[Sample], core: int, window: int, min_foreground: float = 0.0, augment: Any = None
    ) -> None:
        if not samples:
            raise DataLayoutError("no good images to cut training windows from")
        margin = (window - core) // 2
        pixels, masks, foreground = [], [], []
        for start in range(0, len(samples), CUT_CHUNK):
            chunk = samples[start : start + CUT_CHUNK]
            image_windows, _ = split(torch.stack([to_tensor(s.image) for s in chunk]), core, window)
            mask_windows, _ = split(torch.stack([to_tensor(s.object_mask) for s in chunk]), core, window)
            foreground.append(mask_windows[:, 0, margin : margin + core, margin : margin + core].mean(dim=(1, 2)))
            pixels.append((image_windows * 255).round().to(torch.uint8))
            masks.append(mask_windows[:, 0].bool())
        keep = torch.cat(foreground) >= min_foreground
        if not keep.any():
            keep[:] = True
        # (N, window, window) grey or (N, window, window, C) colour: the layout albumentations expects
        kept = torch.cat(pixels)[keep].permute(0, 2, 3, 1)
        self.images = (kept[..., 0] if kept.shape[-1] == 1 else kept).numpy()
        self.masks = torch.cat(masks)[keep].numpy()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, (mask,) = augment_with_masks(self.augment, self.images[index], [self.masks[index]])
        return {"image": to_tensor(image), "mask": to_tensor(mask)}


class ImageDataset(Dataset):
    """Whole preprocessed images with masks, labels and keys, for scoring and evaluation.

    The samples are indexed, never copied, so a sequence that loads on access keeps only a batch in memory.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        return {
            "image": to_tensor(s.image),
            "object_mask": to_tensor(s.object_mask),
            "defect_mask": to_tensor(s.defect_mask),
            "label": s.label,
            "row_id": s.row_id,
            "view": s.view_key,  # for detectors that compare an image with the same view of good batches
        }


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
        self.samples = [s for s in train if s.label == 0]
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
        self.samples = {"train": [s for s in train if s.label == 0], "val": [s for s in val if s.label == 0]}
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
