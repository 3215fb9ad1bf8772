"""Write 8-bit grey PNGs with the standard library only, so the script needs nothing beyond Blender's numpy.

The encoder is fixed (zlib level 6, filter 0), so equal pixels always give equal bytes; files appear by rename.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_grey_png(image: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 image."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grey, no interlace
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1)  # filter byte 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_grey_png_atomic(path: Path, image: np.ndarray) -> None:
    """Write a grey PNG via a temporary file and a rename: a reader never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(encode_grey_png(image))
    os.replace(tmp, path)
