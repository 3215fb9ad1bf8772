"""The part finder runs where a folder has no object masks and its frames show a part on a plain floor; a folder
with masks of its own keeps them, a surface that fills the frame stays whole; `polydefect.inspect` decides alike."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from helpers.planted import write_planted_mvtec
from helpers.scenes import grained_surface

from polydefect.segmentation.classical import OtsuSegmenter
from polydefect.segmentation.grabcut import GrabCutSegmenter
from polydefect.segmentation.part_finder import part_finder_skip


def table_of(paths: list[Path], masks: list[Path] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_path": [str(p) for p in paths], "object_mask_path": [str(m) for m in masks] if masks else None}
    )


def surfaces(folder: Path, count: int = 6) -> list[Path]:
    """Grained grey surfaces that fill the frame, as magnetic tiles and commutators do."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = [folder / f"{i:03d}.png" for i in range(count)]
    for path in paths:
        cv2.imwrite(str(path), grained_surface(rng, (64, 96)))
    return paths


def test_the_part_finder_runs_on_parts_without_masks_and_not_on_surfaces_or_masked_folders(tmp_path: Path) -> None:
    parts = sorted(
        (write_planted_mvtec(tmp_path / "planted", train=8, good=1, per_kind=1) / "train" / "good").glob("*")
    )
    finder = GrabCutSegmenter()
    assert part_finder_skip(finder, table_of(parts)) is None
    assert "own" in part_finder_skip(finder, table_of(parts, masks=parts))
    assert "surface" in part_finder_skip(finder, table_of(surfaces(tmp_path / "surfaces")))
    assert part_finder_skip(OtsuSegmenter(), table_of(surfaces(tmp_path / "more"))) is None  # not a part finder
