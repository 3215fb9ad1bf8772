"""Thesis-sized benchmark data: grey images of a textured part on a dark holder, with object masks, on disk in
the thesis layout (`batch_NN/{images,object_masks,defect_masks}/pPP_cC.png`), read back as the sample table."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from polydefect.data.io import write_image_atomic
from polydefect.data.layout import discover_thesis

THESIS_SIZE = (1536, 1024)  # (width, height) of the thesis' images (3.8.1)
VIEWS_PER_BATCH = 12  # 6 scanner positions x 2 cameras


def _part(rng: np.random.Generator, size: tuple[int, int], view: int) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W) uint8 image and its (H, W) uint8 0/255 object mask."""
    width, height = size
    centre = (width // 2 + int(rng.integers(-20, 21)), height // 2 + int(rng.integers(-20, 21)))
    axes = (width // 3 + 8 * (view % 6), height // 3)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, centre, axes, 5 * view, 0, 360, 255, -1)
    # low-frequency texture: smooth noise upsampled, like moulded surface shading
    coarse = rng.normal(0, 12, (height // 32 + 1, width // 32 + 1)).astype(np.float32)
    shading = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = rng.normal(35, 4, (height, width)).astype(np.float32)
    part = 165 + shading + rng.normal(0, 6, (height, width)).astype(np.float32)
    image = np.where(mask > 0, part, image)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_thesis_images(
    root: Path, count: int, size: tuple[int, int] = THESIS_SIZE, defective_every: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Write `count` images (12 views per batch; every `defective_every`-th batch has scratches) under `root`.

    Images already there are kept, so several benchmarks share one folder.

    Returns:
        the first `count` rows of the sample table of `root` (`thesis_table`).
    """
    rng = np.random.default_rng(seed)
    for index in range(count):
        batch, view = index // VIEWS_PER_BATCH + 1, index % VIEWS_PER_BATCH
        folder = root / f"batch_{batch:02d}"
        stem = f"p{view // 2 + 1:02d}_c{view % 2}"
        if (folder / "images" / f"{stem}.png").is_file():
            continue
        image, mask = _part(rng, size, view)
        if defective_every and batch % defective_every == 0:
            defect = np.zeros_like(mask)
            x, y = size[0] // 2, size[1] // 2
            cv2.line(defect, (x - 60, y - 10), (x + 60, y + 15), 255, 4)
            defect &= mask
            image[defect > 0] = 70
            write_image_atomic(folder / "defect_masks" / f"{stem}.png", defect)
        write_image_atomic(folder / "images" / f"{stem}.png", image)
        write_image_atomic(folder / "object_masks" / f"{stem}.png", mask)
    return thesis_table(root, count)


def thesis_table(root: Path, count: int) -> pd.DataFrame:
    """The first `count` rows of the sample table of `root`, with the `domain` column the data stage adds."""
    table = discover_thesis(root)
    if len(table) < count:
        raise ValueError(f"{root}: {len(table)} images, {count} needed (write_thesis_images first)")
    return table.iloc[:count].reset_index(drop=True).assign(domain="real")
