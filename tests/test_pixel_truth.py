"""Which test pixels the pixel metrics judge: a defective image without a defect mask file has no pixel truth,
so its pixels are left out rather than counted as good ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polydefect.pipeline.artifacts import NpzWriter
from polydefect.pipeline.detect import DetectResult
from polydefect.pipeline.evaluate import _pixel_records, pixel_metrics


def _detection(folder: Path, mask_of_second_defect: str | None) -> DetectResult:
    """Three test images: good, defective with a marked square, defective whose map is hot everywhere."""
    square = np.zeros((8, 8), bool)
    square[2:5, 2:5] = True
    maps = [np.zeros((8, 8), np.float32), square.astype(np.float32), np.full((8, 8), 2.0, np.float32)]
    defects = [np.zeros((8, 8), bool), square, np.zeros((8, 8), bool)]
    objects = [np.ones((8, 8), bool)] * 3
    rows = ["good.png", "marked.png", "unmarked.png"]
    for name, arrays in (("test_maps", maps), ("test_defect_masks", defects), ("test_object_masks", objects)):
        with NpzWriter(folder / f"{name}.npz") as writer:
            for row_id, array in zip(rows, arrays, strict=True):
                writer.add(row_id, array)
    scores = pd.DataFrame(
        {
            "role": ["train", "test", "test", "test"],
            "label": [0, 0, 1, 1],
            "row_id": ["train.png", "good.png", "marked.png", "unmarked.png"],
            "image_path": ["train.png", "good.png", "marked.png", "unmarked.png"],
            "defect_mask_path": [None, None, "marked_mask.png", mask_of_second_defect],
        }
    )
    return DetectResult("key", scores, folder)


def test_a_defective_image_without_a_mask_file_is_left_out_of_the_pixel_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        records = _pixel_records(_detection(tmp_path, None))
    assert "1 defective test image(s) have no defect mask (first: unmarked.png)" in caplog.text
    assert not records["object_mask"][2].any() and records["object_mask"][:2].all()
    assert pixel_metrics(records)["pixel_auroc"] == pytest.approx(1.0)


def test_a_defective_image_with_an_empty_mask_file_keeps_its_pixels_as_good_ones(tmp_path: Path) -> None:
    records = _pixel_records(_detection(tmp_path, "unmarked_mask.png"))
    assert records["object_mask"].all()
    assert pixel_metrics(records)["pixel_auroc"] < 1.0
