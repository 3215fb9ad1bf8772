"""Studded parts with planted local defects, in the thesis and the MVTec layout, for tests that a detector detects.

A part is a bright plate with rounded corners and a 3 x 3 grid of studs, its surface grained, on a dark grained
holder. Every view of the thesis layout has its own place in the frame (as the scanner's positions do); from
image to image the grain and the lighting (a gain of +-5%) change. A defect is local: a thin scratch or a small
spot, each dark or bright, or a chip out of the part through which the holder shows: 13 to 50 pixels of a part of
about 2400, so it moves an image's mean brightness less than the lighting does. A detector has to look at the
surface to find it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, open_dict

from helpers.tiny import compose_app, store_uri

KINDS = ("scratch", "spot", "missing_blob")
SIZE = 64  # square images, which the feature detectors see whole
PART, HOLDER, DARK, BRIGHT = 150.0, 45.0, 40.0, 255.0  # grey levels


def _part(rng: np.random.Generator, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float image and uint8 object mask of one good part, `shift` px right of the frame's centre."""
    holder = cv2.GaussianBlur(rng.normal(HOLDER, 6, (SIZE, SIZE)), (0, 0), 1.2)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    half, cx, cy = SIZE // 2 - SIZE // 8, SIZE // 2 + shift, SIZE // 2
    cv2.rectangle(mask, (cx - half, cy - half), (cx + half, cy + half), 255, -1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    gain = rng.uniform(0.95, 1.05)
    surface = np.full((SIZE, SIZE), PART * gain)
    pitch = 2 * half // 3
    for i in range(3):
        for j in range(3):
            centre = (cx - half + pitch // 2 + i * pitch, cy - half + pitch // 2 + j * pitch)
            cv2.circle(surface, centre, pitch // 3 + 1, 120 * gain, 1)  # the stud's shadowed rim
            cv2.circle(surface, centre, pitch // 3 - 1, 190 * gain, -1)  # its lit top
    grain = cv2.GaussianBlur(rng.normal(0, 12, (SIZE, SIZE)), (0, 0), 1.5)
    return np.where(mask > 0, cv2.GaussianBlur(surface, (0, 0), 0.8) + grain, holder), mask


def _plant(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """Draw one defect of `kind` into `image` (in place), away from the part's edge; returns its uint8 mask."""
    inner = np.argwhere(cv2.erode(mask, np.ones((9, 9), np.uint8)) > 0)
    y, x = (int(v) for v in inner[rng.integers(len(inner))])
    level = DARK if rng.random() < 0.5 else BRIGHT
    defect = np.zeros_like(mask)
    if kind == "scratch":
        angle, half_length = rng.uniform(0, np.pi), SIZE // 10
        dx, dy = round(half_length * np.cos(angle)), round(half_length * np.sin(angle))
        cv2.line(defect, (x - dx, y - dy), (x + dx, y + dy), 255, 1)
    elif kind == "spot":
        cv2.circle(defect, (x, y), 3, 255, -1)
    elif kind == "missing_blob":
        cv2.ellipse(defect, (x, y), (4, 3), rng.uniform(0, 180), 0, 360, 255, -1)
        level = HOLDER
    else:
        raise ValueError(f"unknown defect kind {kind!r}; choose from {KINDS}")
    defect &= mask
    image[defect > 0] = level + rng.normal(0, 4, int((defect > 0).sum()))
    return defect


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(array, 0, 255).astype(np.uint8))


def write_planted_thesis(root: Path, batches: int = 16, positions: int = 3, seed: int = 0) -> Path:
    """Thesis layout; batch 1 is defective: each of its views carries one planted defect (the kinds in turn)."""
    rng = np.random.default_rng(seed)
    for batch in range(1, batches + 1):
        folder = root / f"batch_{batch:02d}"
        for index, view in enumerate(f"p{p:02d}_c{c}" for p in range(1, positions + 1) for c in (0, 1)):
            image, mask = _part(rng, shift=2 * (index % 3) - 2)
            if batch == 1:
                _write(folder / "defect_masks" / f"{view}.png", _plant(rng, image, mask, KINDS[index % len(KINDS)]))
            _write(folder / "images" / f"{view}.png", image)
            _write(folder / "object_masks" / f"{view}.png", mask)
    return root


def write_planted_mvtec(root: Path, train: int = 60, good: int = 10, per_kind: int = 4, seed: int = 0) -> Path:
    """MVTec layout: `train/good`, `test/good`, `test/<kind>` per defect kind and `ground_truth/<kind>` masks."""
    rng = np.random.default_rng(seed)
    folders = [("train", "good", train), ("test", "good", good), *(("test", kind, per_kind) for kind in KINDS)]
    for split, kind, count in folders:
        for index in range(count):
            image, mask = _part(rng, shift=0)
            if kind != "good":
                _write(root / "ground_truth" / kind / f"{index:03d}_mask.png", _plant(rng, image, mask, kind))
            _write(root / split / kind / f"{index:03d}.png", image)
    return root


def planted_run_config(store: Path, data: Path, cache: Path, output: Path, *overrides: str) -> DictConfig:
    """A seconds-long data=mvtec run on the planted parts at 64 px, its MLflow store in `store`; the whole frame
    is the object unless the overrides name a segmenter."""
    cfg = compose_app(
        "data=mvtec",
        f"data.root={data}",
        "segmenter=none",
        "preprocess.size=[64,64]",
        "trainer=fast",
        "trainer.limit_train_batches=1.0",
        "data.batch_size=8",
        "detect.samples=2",
        f"paths.cache_dir={cache}",
        f"mlflow.tracking_uri={store_uri(store)}",
        *overrides,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(output)
    return cfg
