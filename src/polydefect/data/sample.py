"""One record type that carries an image through the pipeline, and loading it from a row of the sample table."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pandas as pd
import torch

from polydefect.data.io import read_image, read_mask
from polydefect.data.preprocess import apply_mask, clahe, object_box, resize, to_grey_uint8, to_rgb_uint8

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """An image with its masks and keys; the anomaly map and score are filled in by scoring."""

    image: np.ndarray  # (H, W) uint8 grey, or (H, W, 3) RGB with preprocess.colour; preprocessed
    object_mask: np.ndarray  # (H, W) bool; all True where the data has no object mask
    defect_mask: np.ndarray  # (H, W) bool; all False where there is none
    label: int
    batch: int
    view: str
    image_path: str
    row_id: str  # the row's key in the sample table (`polydefect.data.layout.COLUMNS`)
    domain: str = "real"  # real | synthetic: the renders' cameras differ, so their views are other views
    anomaly_map: np.ndarray | None = None
    score: float | None = None

    @property
    def view_key(self) -> str:
        """Which reference images show the same view: domain and view, e.g. "real/p03_c1"."""
        return f"{self.domain}/{self.view}"


def optional_path(value: Any) -> str | None:
    """A path cell of the sample table, or None where it is empty (None or NaN after a pandas concat)."""
    return value if isinstance(value, str) and value else None


def read_object_mask(path: str | None, shape: tuple[int, int]) -> np.ndarray:
    """The object mask at `path` (H, W) bool, or the whole frame where there is none or it is empty.

    A segmenter that finds no part in one image of a batch must not stop the run after every model is
    trained: that image is scored over its whole frame instead, with a warning naming the mask file.
    """
    if path is None:
        return np.ones(shape, bool)
    mask = read_mask(path, shape)
    if not mask.any():
        log.warning("%s: the object mask is empty; the whole frame is used for this image", path)
        return np.ones(shape, bool)
    return mask


def equalised(image: np.ndarray, object_mask: np.ndarray, preprocess: Any) -> np.ndarray:
    """`preprocess.clahe` applied where enabled (mask-aware where the background is masked), else the image."""
    if not preprocess.clahe.enabled:
        return image
    background_mask = object_mask if preprocess.mask_background else None
    return clahe(image, background_mask, preprocess.clahe.clip_limit, preprocess.clahe.tile_grid)


def load_sample(row: Any, preprocess: Any) -> Sample:
    """Read and preprocess one table row (thesis 3.4): grey (or RGB), crop to the object (where
    `preprocess.crop_margin` is set), mask the background, CLAHE, resize (CLAHE after the resize where it
    shrinks the image).

    The object mask is the row's `predicted_mask_path` where a segmenter wrote one, else its own
    `object_mask_path`, else the whole frame.

    Args:
        row: a row of the sample table (key access).
        preprocess: the `preprocess` config node (colour, crop_margin, mask_background, clahe.*, size).
    """
    raw = read_image(row["image_path"])
    image = to_rgb_uint8(raw) if preprocess.get("colour", False) else to_grey_uint8(raw)
    shape = image.shape[:2]
    mask_path = optional_path(row.get("predicted_mask_path")) or optional_path(row["object_mask_path"])
    object_mask = read_object_mask(mask_path, shape)
    defect_path = optional_path(row["defect_mask_path"])
    defect_mask = read_mask(defect_path, shape) if defect_path else None
    box = object_box(object_mask, preprocess.crop_margin) if preprocess.get("crop_margin") is not None else None
    if box is not None:  # object-centric input: the frame cropped to the part (maps and masks alike)
        image, object_mask = image[box], object_mask[box]
        defect_mask = None if defect_mask is None else defect_mask[box]
    image = apply_mask(image, object_mask if preprocess.mask_background else None)
    size = tuple(preprocess.size) if preprocess.size else None
    # CLAHE runs at the smaller of the two sizes: its tiles are a fixed share of the frame either way, and a
    # detector scoring at its network's size does not pay for equalising the full-size image
    shrinking = size is not None and size[0] * size[1] < image.shape[0] * image.shape[1]
    if not shrinking:
        image = equalised(image, object_mask, preprocess)
    object_mask = resize(object_mask, size, is_mask=True)
    # resampling blends the part's edge into the background: mask again at the new size
    image = apply_mask(resize(image, size), object_mask if preprocess.mask_background else None)
    if shrinking:
        image = equalised(image, object_mask, preprocess)
    return Sample(
        image=image,
        object_mask=object_mask,
        defect_mask=np.zeros(object_mask.shape, bool) if defect_mask is None else resize(defect_mask, size, True),
        label=int(row["label"]),
        batch=int(row["batch"]),
        view=str(row["view"]),
        image_path=str(row["image_path"]),
        row_id=str(row["row_id"]),
        domain=str(row.get("domain", "real")),  # tables found outside make_splits (inspect) are real images
    )


def load_samples(table: pd.DataFrame, preprocess: Any) -> list[Sample]:
    """Every row of the table, read and preprocessed (training data, held in memory)."""
    return read_samples(LazySamples(table, preprocess), range(len(table)))


class LazySamples(Sequence[Sample]):
    """The rows of a table as samples read and preprocessed on access, so scoring holds one batch of images
    at a time, however many the table lists."""

    def __init__(self, table: pd.DataFrame, preprocess: Any) -> None:
        self.rows, self.preprocess = table.reset_index(drop=True), preprocess

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> LazySamples: ...

    def __getitem__(self, index: int | slice) -> Sample | LazySamples:
        if isinstance(index, slice):  # still lazy: nothing read until an element is
            return LazySamples(self.rows.iloc[index], self.preprocess)
        return load_sample(self.rows.iloc[index], self.preprocess)


def good_samples(samples: Sequence[Sample]) -> Sequence[Sample]:
    """The good samples (label 0); lazy ones stay lazy, so nothing is read to choose them."""
    if isinstance(samples, LazySamples):
        return LazySamples(samples.rows[samples.rows["label"] == 0], samples.preprocess)
    return [sample for sample in samples if sample.label == 0]


def read_samples(samples: Sequence[Sample], indices: Iterable[int]) -> list[Sample]:
    """`samples[i]` for each index, in order. Samples read on access (`LazySamples`) are read on as many threads
    as torch uses: decoding and preprocessing (OpenCV, numpy) let go of the GIL, so the images decode side by
    side (a worker process of a loader has one thread, and reads one by one)."""
    indices = list(indices)
    threads = min(len(indices), torch.get_num_threads())
    if threads < 2 or not isinstance(samples, LazySamples):
        return [samples[index] for index in indices]
    with ThreadPoolExecutor(threads, thread_name_prefix="read") as pool:
        return list(pool.map(samples.__getitem__, indices))
