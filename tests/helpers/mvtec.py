"""A tiny generated MVTec-layout folder of colour images, for the colour path of the pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ORANGE, BLUE = (30, 140, 230), (200, 120, 40)  # BGR; the blue stain is a hue change more than a lightness one


def _plate(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 BGR: an orange plastic plate with fine texture."""
    width, height = size
    noise = rng.normal(0, 6, (height, width, 1))
    return np.clip(np.array(ORANGE, np.float32) + noise, 0, 255).astype(np.uint8)


def write_colour_mvtec(root: Path, size: tuple[int, int] = (90, 70), train: int = 10, test: int = 3) -> Path:
    """`train/good`, `test/good`, `test/stain` (blue discs) and `ground_truth/stain` under `root`; odd size."""
    rng = np.random.default_rng(0)
    for folder, count in (("train/good", train), ("test/good", test), ("test/stain", test)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = _plate(rng, size)
            if folder == "test/stain":
                mask = np.zeros(image.shape[:2], np.uint8)
                cv2.circle(mask, (int(rng.integers(20, size[0] - 20)), int(rng.integers(20, size[1] - 20))), 9, 255, -1)
                image[mask > 0] = BLUE
                (root / "ground_truth" / "stain").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "ground_truth" / "stain" / f"{index:03d}_mask.png"), mask)
            cv2.imwrite(str(root / folder / f"{index:03d}.png"), image)
    return root
