"""Image preprocessing before any model (thesis 3.4.2): grey-scale, background masking, CLAHE, resizing."""

from __future__ import annotations

import cv2
import numpy as np


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) BGR, uint8 or uint16 -> (H, W) uint8 grey.

    16-bit images are scaled by their full range (65535 -> 255), not by their own maximum, so
    brightness stays comparable across images.
    """
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    return image


def apply_mask(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Zero every pixel outside the object mask (bool (H, W)); None keeps the whole frame."""
    if mask is None:
        return image
    return np.where(mask if image.ndim == 2 else mask[..., None], image, 0).astype(image.dtype)


def clahe(image: np.ndarray, mask: np.ndarray | None, clip_limit: float = 9.0, tile_grid: int = 9) -> np.ndarray:
    """Mask-aware CLAHE on a uint8 grey image (thesis listing 3.2).

    The image is masked, equalised, then masked again: CLAHE lifts the black background by
    ~10 grey levels, and the second masking keeps it black.
    """
    equaliser = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    return apply_mask(equaliser.apply(apply_mask(image, mask)), mask)


def resize(image: np.ndarray, size: tuple[int, int] | None, is_mask: bool = False) -> np.ndarray:
    """Resize to (width, height); masks use nearest neighbour so they stay binary. None keeps the size."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    if is_mask:
        return cv2.resize(image.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
