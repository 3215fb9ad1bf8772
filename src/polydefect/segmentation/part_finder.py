"""Where a part finder runs: on folders without object masks whose frames show a part on a plain floor.

A part finder is a segmenter with `finds_parts_in` (`grabcut`, the `data=mvtec` default): it fills in the object
masks that an MVTec-layout folder lacks. A folder with masks of its own keeps them, and a surface that fills the
frame (magnetic tiles, commutators) has no floor around a part, so it is left whole, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from polydefect.data.io import read_image
from polydefect.data.sample import optional_path

SAMPLE = 64  # images, evenly spread over the table, that decide whether the frames show parts on a floor


def has_masks(table: pd.DataFrame, column: str = "object_mask_path") -> bool:
    """Whether any row of the table has a mask file in `column` (the folder's own masks by default)."""
    return column in table and any(optional_path(path) is not None for path in table[column])


def part_finder_skip(segmenter: Any, table: pd.DataFrame) -> str | None:
    """Why a part finder should leave these images alone (None: it runs, or it is no part finder)."""
    if not hasattr(segmenter, "finds_parts_in"):
        return None
    if has_masks(table):
        return "the images have object masks of their own"
    picked = table["image_path"].iloc[np.linspace(0, len(table) - 1, min(SAMPLE, len(table))).astype(int)]
    if not segmenter.finds_parts_in([read_image(path) for path in picked]):
        return "a surface fills the frames (no part on a plain floor): the whole frame is the object"
    return None
