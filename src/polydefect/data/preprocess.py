"""Image preprocessing before any model (thesis 3.4.2): grey-scale (or colour), background masking, CLAHE,
resizing."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 or uint16 pixels -> uint8, any shape.

    16-bit images are scaled by their full range (65535 -> 255), not by their own maximum, so
    brightness stays comparable across images.
    """
    if image.dtype == np.uint16:
        return (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    return image


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) BGR, uint8 or uint16 -> (H, W) uint8 grey."""
    image = to_uint8(image)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) BGR, uint8 or uint16 -> (H, W, 3) uint8 RGB; grey is replicated, so a data set of
    mixed grey and colour files gives one channel count."""
    image = to_uint8(image)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.ndim == 3 else cv2.COLOR_GRAY2RGB)


def apply_mask(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Zero every pixel outside the object mask (bool (H, W)); None keeps the whole frame."""
    if mask is None:
        return image
    return image * (mask if image.ndim == 2 else mask[..., None])  # a product keeps the dtype, 10x np.where's speed


def clahe(image: np.ndarray, mask: np.ndarray | None, clip_limit: float = 9.0, tile_grid: int = 9) -> np.ndarray:
    """Mask-aware CLAHE on a uint8 grey or RGB image (thesis listing 3.2).

    The image is masked, equalised, then masked again: CLAHE lifts the black background by
    ~10 grey levels, and the second masking keeps it black. Colour images are equalised on their
    lightness (L of CIE Lab), so hues stay as they were.
    """
    equaliser = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    masked = apply_mask(image, mask)
    if masked.ndim == 2:
        return apply_mask(equaliser.apply(masked), mask)
    lab = cv2.cvtColor(masked, cv2.COLOR_RGB2LAB)
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return apply_mask(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), mask)


def resize(image: np.ndarray, size: tuple[int, int] | None, is_mask: bool = False) -> np.ndarray:
    """Resize to (width, height); masks use nearest neighbour so they stay binary. None keeps the size."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    if is_mask:
        return cv2.resize(image.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def aspect_kept_size(shapes: list[tuple[int, int]], short_side: int, multiple: int = 8) -> list[int]:
    """One [width, height] for a data set's images (H, W): their median aspect ratio, the short side at
    `short_side` and the long side a multiple of `multiple`. Every image is brought to it, so the maps stack for
    the pixel metrics, and a long narrow surface keeps its length instead of being squashed to a square."""
    if not shapes:
        raise ValueError("preprocess.short_side: no images to take the aspect ratio from")
    if short_side < multiple:
        raise ValueError(f"preprocess.short_side must be >= {multiple} px, got {short_side}")
    ratio = float(np.median([width / height for height, width in shapes]))  # > 1: wide
    long_side = max(short_side, round(short_side * max(ratio, 1 / ratio) / multiple) * multiple)
    return [long_side, short_side] if ratio >= 1 else [short_side, long_side]


def object_box(mask: np.ndarray, margin: float) -> tuple[slice, slice] | None:
    """Rows and columns of a square box around the object (H, W) bool, its side the object's longer extent plus
    `margin` of it on each side, kept inside the frame; None where the object fills the frame (no crop).

    Cropping to it lets a small part in a large frame fill the detector's input, whatever its place and pose.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    if not rows.size or (rows[0] == 0 and cols[0] == 0 and rows[-1] == height - 1 and cols[-1] == width - 1):
        return None
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    side = max(16, round(extent * (1 + 2 * margin)))

    def span(low: int, high: int, length: int) -> slice:
        size = min(side, length)
        start = min(max(0, (low + high + 1) // 2 - size // 2), length - size)
        return slice(start, start + size)

    return span(rows[0], rows[-1], height), span(cols[0], cols[-1], width)
