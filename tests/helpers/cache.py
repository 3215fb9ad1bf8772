"""Changing a data file as a user would."""

from __future__ import annotations

import os
from pathlib import Path

import cv2


def replace_image(path: Path) -> None:
    """Write other pixels to `path`, with a modification time a second later than the old one's."""
    before = path.stat().st_mtime_ns
    cv2.imwrite(str(path), 255 - cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    os.utime(path, ns=(before + 10**9, before + 10**9))
