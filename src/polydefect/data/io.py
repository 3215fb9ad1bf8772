"""Read images and masks from disk with errors that name the file; write images atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An image or mask could not be used; the message names the file and what is wrong."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as stored: (H, W) grey or (H, W, 3) BGR, uint8 or uint16.

    Alpha channels are dropped; anything else that is not 8/16-bit grey or colour is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file does not exist")
    return decode_image(np.fromfile(str(path), dtype=np.uint8).tobytes(), str(path))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """`read_image` of an encoded file's bytes (an upload); errors name the file as `name`."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{name}: unsupported pixel type {image.dtype}; expected 8- or 16-bit")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        elif image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] != 3:
            raise ImageReadError(f"{name}: {image.shape[2]} channels; expected grey or colour")
    return image


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as bool (H, W); any non-zero pixel (> half range for 8-bit) is foreground.

    Args:
        path: mask file.
        shape: the (H, W) the mask must have (its image's size); a mismatch is an error.
    """
    mask = read_image(path)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if shape is not None and mask.shape != tuple(shape):
        raise ImageReadError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    threshold = 127 if mask.dtype == np.uint8 else 32767
    return mask > threshold


def write_image_atomic(path: str | Path, image: np.ndarray) -> None:
    """Write an image so that readers never see a half-written file (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ImageReadError(f"{path}: could not encode image of shape {image.shape} and type {image.dtype}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
