"""Object-centric input (`preprocess.crop_margin`): the frame is cropped to a square around the part's object mask,
so a part small in a large frame fills the detector's input; image, object mask and defect mask alike."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from polydefect.config import PreprocessConfig
from polydefect.data.preprocess import object_box
from polydefect.data.sample import load_sample


def blob(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + height, left : left + width] = True
    return mask


def test_the_box_is_a_square_around_the_object_with_its_margin() -> None:
    rows, cols = object_box(blob((200, 300), 50, 100, 20, 40), margin=0.25)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (60, 60)  # 40 px extent + 2 x 10 px margin
    assert rows.start <= 50 and rows.stop >= 70 and cols.start <= 100 and cols.stop >= 140


def test_a_part_at_the_edge_keeps_its_box_inside_the_frame() -> None:
    rows, cols = object_box(blob((100, 100), 0, 85, 10, 15), margin=0.5)
    assert rows.start == 0 and cols.stop == 100 and rows.stop - rows.start == cols.stop - cols.start == 30


def test_a_frame_filling_object_or_none_is_not_cropped() -> None:
    assert object_box(np.ones((50, 80), bool), margin=0.1) is None
    assert object_box(np.zeros((50, 80), bool), margin=0.1) is None


def test_a_loaded_sample_is_the_crop_with_its_defect_at_the_input_size(tmp_path: Path) -> None:
    image = np.full((240, 320), 30, np.uint8)
    part, defect = blob(image.shape, 100, 200, 40, 40), blob(image.shape, 115, 215, 6, 6)
    image[part] = 180
    image[defect] = 60
    paths = {}
    for name, array in (("image", image), ("object", part), ("defect", defect)):
        paths[name] = str(tmp_path / f"{name}.png")
        cv2.imwrite(paths[name], array.astype(np.uint8) * (255 if array.dtype == bool else 1))
    row = pd.Series(
        {
            "image_path": paths["image"],
            "object_mask_path": paths["object"],
            "defect_mask_path": paths["defect"],
            "label": 1,
            "batch": 1,
            "view": "all",
            "row_id": "test/x/000.png",
        }
    )
    preprocess = OmegaConf.structured(PreprocessConfig(size=[64, 64], mask_background=False, crop_margin=0.1))
    sample = load_sample(row, preprocess)
    assert sample.image.shape == (64, 64) and sample.object_mask.shape == (64, 64)
    assert sample.object_mask.mean() > 0.6  # the part fills the input (40 of a 48 px box)
    assert 40 < sample.defect_mask.sum() < 80  # 6 x 6 px of 48 x 48, at 64 x 64: about 64 px
    whole = load_sample(row, OmegaConf.structured(PreprocessConfig(size=[64, 64], mask_background=False)))
    assert whole.object_mask.mean() < 0.05 and whole.defect_mask.sum() <= 4  # without the crop it nearly vanishes
