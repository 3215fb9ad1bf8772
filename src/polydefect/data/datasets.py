"""Torch datasets of the sample table's images: raw images with object masks (segmentation), overlap-tile windows
of good images (reconstruction), whole preprocessed images with their keys (scoring). They need no Lightning, so
scoring with an exported bundle does not import it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from polydefect.data.augment import augment_with_masks
from polydefect.data.io import read_image, read_mask
from polydefect.data.layout import DataLayoutError
from polydefect.data.preprocess import resize, to_grey_uint8
from polydefect.data.sample import Sample, optional_path, read_samples
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
    the surface. Grey images brought to RGB (`preprocess.colour` on grey files) are kept as one channel and
    handed out as the same RGB: the three equal channels took 236 of the 310 MB of 630 magnetic tiles' windows at
    256 x 296 px.
    """

    def __init__(
        self, samples: Sequence[Sample], core: int, window: int, min_foreground: float = 0.0, augment: Any = None
    ) -> None:
        if not samples:
            raise DataLayoutError("no good images to cut training windows from")
        margin = (window - core) // 2
        pixels, masks, foreground = [], [], []
        for start in range(0, len(samples), CUT_CHUNK):
            chunk = read_samples(samples, range(start, min(start + CUT_CHUNK, len(samples))))  # each read once
            image_windows, _ = split(torch.stack([to_tensor(s.image) for s in chunk]), core, window)
            mask_windows, _ = split(torch.stack([to_tensor(s.object_mask) for s in chunk]), core, window)
            foreground.append(mask_windows[:, 0, margin : margin + core, margin : margin + core].mean(dim=(1, 2)))
            pixels.append((image_windows * 255).round().to(torch.uint8))
            masks.append(mask_windows[:, 0].bool())
        keep = torch.cat(foreground) >= min_foreground
        if not keep.any():
            keep[:] = True
        chosen = keep.split([len(chunk) for chunk in pixels])
        pixels = [chunk[rows] for chunk, rows in zip(pixels, chosen, strict=True)]
        self.grey_as_rgb = all(chunk.shape[1] == 3 and bool((chunk[:, 1:] == chunk[:, :1]).all()) for chunk in pixels)
        # (N, window, window) grey or (N, window, window, C) colour: the layout albumentations expects
        kept = torch.cat([chunk[:, :1] if self.grey_as_rgb else chunk for chunk in pixels]).permute(0, 2, 3, 1)
        self.images = (kept[..., 0] if kept.shape[-1] == 1 else kept).numpy()
        self.masks = torch.cat([chunk[rows] for chunk, rows in zip(masks, chosen, strict=True)]).numpy()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.images[index]
        if self.grey_as_rgb:
            image = np.repeat(image[..., None], 3, axis=-1)
        image, (mask,) = augment_with_masks(self.augment, image, [self.masks[index]])
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
        return self.item(self.samples[index])

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items (the loader asks for a batch at once), its images read side by side (`read_samples`):
        reading is the larger share of scoring an image at the network's size."""
        return [self.item(sample) for sample in read_samples(self.samples, indices)]

    @staticmethod
    def item(s: Sample) -> dict[str, Any]:
        """One sample as tensors with its keys."""
        return {
            "image": to_tensor(s.image),
            "object_mask": to_tensor(s.object_mask),
            "defect_mask": to_tensor(s.defect_mask),
            "label": s.label,
            "row_id": s.row_id,
            "view": s.view_key,  # for detectors that compare an image with the same view of good batches
        }
