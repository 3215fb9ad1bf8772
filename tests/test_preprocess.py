"""Preprocessing: grey conversion of 8/16-bit and colour input, mask-aware CLAHE, resizing."""

from __future__ import annotations

import cv2
import numpy as np

from polydefect.data.preprocess import apply_mask, clahe, resize, to_grey_uint8


def test_sixteen_bit_images_are_scaled_by_full_range_not_their_own_maximum() -> None:
    image = np.full((4, 4), 32768, np.uint16)
    assert to_grey_uint8(image).max() == 128


def test_colour_images_become_grey() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 2] = 255  # pure red in BGR
    grey = to_grey_uint8(image)
    assert grey.shape == (4, 4)
    assert grey[0, 0] == cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[0, 0]


def test_clahe_keeps_the_background_black_and_raises_contrast_on_the_part() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 20, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    image[mask] = rng.integers(100, 130, mask.sum())
    out = clahe(image, mask, clip_limit=9.0, tile_grid=4)
    assert out[~mask].max() == 0
    assert out[mask].std() > image[mask].std()


def test_clahe_without_a_mask_equalises_the_whole_frame() -> None:
    image = np.tile(np.arange(100, 132, dtype=np.uint8), (32, 1))
    out = clahe(image, None, clip_limit=40.0, tile_grid=2)
    assert out.max() - out.min() > image.max() - image.min()


def test_apply_mask_zeroes_only_the_background_of_colour_images() -> None:
    image = np.full((3, 3, 3), 9, np.uint8)
    mask = np.eye(3, dtype=bool)
    out = apply_mask(image, mask)
    assert (out[mask] == 9).all() and (out[~mask] == 0).all()


def test_resized_masks_stay_binary() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:7, 3:8] = True
    small = resize(mask, (5, 5), is_mask=True)
    assert small.dtype == bool and small.shape == (5, 5)
    assert resize(np.zeros((10, 12), np.uint8), (24, 20)).shape == (20, 24)
