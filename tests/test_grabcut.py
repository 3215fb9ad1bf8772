"""The GrabCut part finder: a part's shaded faces stay with it (where a grey-level split drops them), one piece
per image with its holes filled, repeatable, and a flat frame or a bad setting handled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.scenes import grained_surface, iou, toy_scenes

from polydefect.segmentation.base import Segmenter, build_segmenter
from polydefect.segmentation.classical import OtsuSegmenter
from polydefect.segmentation.grabcut import GrabCutSegmenter, border_ratio, largest_piece


def lit_box(seed: int, shape: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A box seen from above and one side on a dark floor lit from one corner: its top bright, its side face in
    shade (nearer the floor's grey than the top's), a hole through the top; (H, W) uint8 image, (H, W) bool mask."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 40 + 45 * (1 - (yy / height + xx / width) / 2)  # the floor, 85 at the lit corner, 40 at the far one
    top, side = np.zeros(shape, bool), np.zeros(shape, bool)
    top[30:70, 50:110] = True
    side[70:90, 50:110] = True
    image[top] = 200
    image[side] = 110
    cv2.circle(image, (80, 50), 6, 20, -1)  # a hole through the top face: part of the part, not of the floor
    image += 3 * rng.standard_normal(shape)
    return np.clip(image, 0, 255).astype(np.uint8), top | side


def test_grabcut_keeps_the_shaded_face_that_otsu_drops() -> None:
    for seed in range(3):
        image, mask = lit_box(seed)
        found = GrabCutSegmenter().predict(image)
        assert found.dtype == bool and found.shape == mask.shape
        assert iou(found, mask) > 0.9
        assert found[80, 60:100].all()  # the shaded side face
        assert found[50, 80]  # the hole is filled
        assert iou(OtsuSegmenter().predict(image), mask) < 0.75  # the grey split keeps the lit top alone


def test_grabcut_finds_textured_parts_on_an_unevenly_lit_holder_and_repeats() -> None:
    images, masks = toy_scenes(4, seed=3)
    segmenter = GrabCutSegmenter()
    assert isinstance(segmenter, Segmenter)
    for image, mask in zip(images, masks, strict=True):
        found = segmenter.predict(image)
        # one piece per image: the largest of the scene's parts, whole
        largest = largest_piece(mask)
        assert iou(found, largest) > 0.9
        assert np.array_equal(found, GrabCutSegmenter().predict(image))
        assert np.array_equal(segmenter.score_batch([image])[0], found.astype(np.float32))


def test_grabcut_works_on_colour_and_16_bit_images_and_is_built_from_its_config() -> None:
    image, mask = lit_box(0)
    segmenter = build_segmenter({"_target_": "polydefect.segmentation.grabcut.GrabCutSegmenter", "side": 96})
    for variant in (np.repeat(image[..., None], 3, axis=2), image.astype(np.uint16) * 257):
        assert iou(segmenter.predict(variant), mask) > 0.9


def test_a_flat_frame_gives_an_empty_mask() -> None:
    assert not GrabCutSegmenter().predict(np.full((40, 60), 90, np.uint8)).any()


def test_largest_piece_keeps_one_component_with_its_holes_filled() -> None:
    mask = np.zeros((30, 30), bool)
    mask[5:20, 5:20] = True
    mask[10:13, 10:13] = False  # a hole
    mask[25:28, 25:28] = True  # a speck elsewhere
    piece = largest_piece(mask)
    expected = np.zeros((30, 30), bool)
    expected[5:20, 5:20] = True
    assert np.array_equal(piece, expected)
    assert not largest_piece(np.zeros((5, 5), bool)).any()


@pytest.mark.parametrize(
    ("settings", "message"), [({"side": 8}, r"segmenter\.side"), ({"border": 0.6}, r"segmenter\.border")]
)
def test_a_bad_setting_is_refused_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GrabCutSegmenter(**settings)


def test_a_folder_of_parts_on_a_floor_is_searched_and_a_frame_filling_surface_is_not() -> None:
    parts = [lit_box(seed)[0] for seed in range(5)]
    rng = np.random.default_rng(0)
    surfaces = [grained_surface(rng, (120, 160)) for _ in range(5)]
    assert max(border_ratio(image, 0.03) for image in parts) < 0.6 < min(border_ratio(s, 0.03) for s in surfaces)
    segmenter = GrabCutSegmenter()
    assert segmenter.finds_parts_in(parts) and not segmenter.finds_parts_in(surfaces)
    assert not segmenter.finds_parts_in([])
