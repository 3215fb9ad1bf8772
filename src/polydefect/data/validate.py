"""Check every file of the sample tables before a run writes anything, so bad input never leaves a failed run.

Each image is decoded in full (a truncated file fails only then) and each mask must decode and have its
image's size. The decodes run in a thread pool, OpenCV releasing the GIL, and every failure is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from polydefect.data.io import ImageReadError, read_image, read_mask
from polydefect.data.sample import optional_path

MASK_COLUMNS = ("object_mask_path", "defect_mask_path")
SHOWN = 20  # failures listed in one error; the rest are counted


def check_files(image_path: str, mask_paths: tuple[str, ...]) -> tuple[list[str], tuple[int, int] | None]:
    """The problems of one image and its masks (one message per unusable file, [] when all are fine) and the
    image's (H, W), None where it does not decode."""
    problems = []
    try:
        shape: tuple[int, int] | None = read_image(image_path).shape[:2]
    except ImageReadError as error:
        problems.append(str(error))
        shape = None  # the masks are still decoded, their size cannot be checked
    for mask_path in mask_paths:
        try:
            read_mask(mask_path, shape)
        except ImageReadError as error:
            problems.append(str(error))
    return problems, shape


def validate_tables(tables: Iterable[pd.DataFrame], workers: int | None = None) -> dict[str, tuple[int, int]]:
    """Raise one `ImageReadError` naming every unusable image or mask listed in `tables`; where all are fine,
    each image's (H, W) by its path (decoded anyway, so a size rule needs no second read).

    Args:
        tables: sample tables with image_path, object_mask_path and defect_mask_path (empty cells allowed).
        workers: threads decoding at once; None lets `ThreadPoolExecutor` choose.
    """
    rows: dict[tuple[str, tuple[str, ...]], None] = {}  # an image listed twice is decoded once, order kept
    for table in tables:
        for record in table[["image_path", *MASK_COLUMNS]].itertuples(index=False):
            masks = tuple(path for path in map(optional_path, record[1:]) if path)
            rows[(record[0], masks)] = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda row: check_files(*row), rows))
    problems = list(dict.fromkeys(problem for row_problems, _ in found for problem in row_problems))
    if len(problems) == 1:
        raise ImageReadError(problems[0])
    if problems:
        listed = "\n  ".join(problems[:SHOWN])
        more = f"\n  and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise ImageReadError(f"{len(problems)} unusable input files:\n  {listed}{more}")
    return {image: shape for (image, _), (_, shape) in zip(rows, found, strict=True) if shape is not None}
