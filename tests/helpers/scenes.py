"""Toy segmentation scenes: bright textured ellipses on a dark textured holder, for the segmenter tests.

Small, instant and exact (the masks are the drawn ellipses), unlike the rendered default data.
"""

from __future__ import annotations

import cv2
import numpy as np


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(H, W) float32 smooth noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def toy_scene(rng: np.random.Generator, shape: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W) uint8 grey image and its (H, W) bool object mask."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(1, 3, endpoint=True)):
        centre = (int(rng.uniform(0.3, 0.7) * width), int(rng.uniform(0.3, 0.7) * height))
        axes = (int(rng.uniform(0.1, 0.25) * width), int(rng.uniform(0.1, 0.25) * height))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    xx = np.arange(width, dtype=np.float32)  # broadcasts over the rows
    light = 1.0 + 0.25 * (xx / width - 0.5) * rng.choice([-1, 1])  # uneven illumination across the frame
    background = 45 + 10 * _texture(rng, shape, 2.0)
    part = rng.uniform(150, 190) + 12 * _texture(rng, shape, 1.0)
    image = np.where(mask.astype(bool), part, background) * light
    image += 4 * rng.standard_normal(shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(bool)


def toy_scenes(
    count: int, shape: tuple[int, int] = (96, 128), seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`count` scenes from one seed: a list of (H, W) uint8 images and a list of (H, W) bool masks."""
    rng = np.random.default_rng(seed)
    scenes = [toy_scene(rng, shape) for _ in range(count)]
    return [image for image, _ in scenes], [mask for _, mask in scenes]


def grained_surface(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 grey grain that fills the frame, as a magnetic tile or a commutator does: no floor, no part."""
    return cv2.GaussianBlur(rng.normal(120, 30, shape), (0, 0), 2).clip(0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks."""
    return float((a & b).sum() / (a | b).sum())
