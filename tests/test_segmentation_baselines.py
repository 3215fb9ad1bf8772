"""Post-processing (listing 3.7), the classical segmenters and the per-view mean mask."""

import numpy as np
import pytest
from helpers.scenes import iou, toy_scenes

from polydefect.segmentation.base import Segmenter
from polydefect.segmentation.classical import KMeansSegmenter, OtsuSegmenter, WatershedSegmenter, orient
from polydefect.segmentation.mean_mask import MeanMask
from polydefect.segmentation.postprocess import close_mask, postprocess

BASELINES = [OtsuSegmenter, KMeansSegmenter, WatershedSegmenter]


def test_closing_fills_a_one_pixel_gap_and_keeps_the_outline():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    mask[20, 12:28] = False  # a crack inside the square
    mask[15, 15] = False  # a pinhole
    closed = close_mask(mask, kernel_size=5, iterations=3)
    expected = np.zeros((40, 40), bool)
    expected[10:30, 10:30] = True
    assert np.array_equal(closed, expected)


def test_closing_keeps_objects_that_touch_the_border():
    mask = np.zeros((20, 20), bool)
    mask[:, :8] = True
    assert np.array_equal(close_mask(mask, 5, 3), mask)


def test_postprocess_thresholds_closes_and_resizes_back_to_the_original_size():
    probability = np.zeros((32, 32), np.float32)
    probability[8:24, 8:24] = 0.9
    probability[16, 10:22] = 0.2  # a crack the closing fills
    probability[0, 0] = 0.5  # exactly at the threshold: background
    mask = postprocess(probability, (64, 96), threshold=0.5, closing_kernel=5, closing_iterations=3)
    expected = np.zeros((64, 96), bool)
    expected[16:48, 24:72] = True
    assert mask.dtype == bool and mask.shape == (64, 96)
    assert mask[32, 24:72].all()  # the crack, at twice the size, is filled
    # linear upsampling then cutting at half level rounds only the four corners, by one pixel each
    assert (mask != expected).sum() == 4


def test_postprocess_without_closing_keeps_the_thresholded_map():
    probability = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    mask = postprocess(probability, (16, 16), threshold=0.7, closing_kernel=0, closing_iterations=3)
    assert np.array_equal(mask, probability > 0.7)


@pytest.mark.parametrize("segmenter_class", BASELINES)
def test_each_baseline_segments_bright_ellipses_with_iou_above_0_95(segmenter_class):
    images, masks = toy_scenes(4, seed=3)
    segmenter = segmenter_class()
    assert isinstance(segmenter, Segmenter)
    predictions = segmenter.predict_batch(images)
    assert all(p.dtype == bool and p.shape == m.shape for p, m in zip(predictions, masks, strict=True))
    assert min(iou(p, m) for p, m in zip(predictions, masks, strict=True)) > 0.95


@pytest.mark.parametrize("segmenter_class", BASELINES)
def test_auto_polarity_finds_a_dark_part_on_a_bright_holder(segmenter_class):
    images, masks = toy_scenes(2, seed=4)
    inverted = [255 - image for image in images]
    for image, mask in zip(inverted, masks, strict=True):
        assert iou(segmenter_class(polarity="auto").predict(image), mask) > 0.95
        assert iou(segmenter_class(polarity="bright").predict(image), mask) < 0.05


@pytest.mark.parametrize("segmenter_class", BASELINES)
def test_baseline_scores_are_their_masks_as_floats(segmenter_class):
    images, _ = toy_scenes(2, seed=5)
    segmenter = segmenter_class()
    for score, mask in zip(segmenter.score_batch(images), segmenter.predict_batch(images), strict=True):
        assert score.dtype == np.float32
        assert np.array_equal(score, mask.astype(np.float32))


def test_baselines_accept_16_bit_and_colour_images():
    images, masks = toy_scenes(1, seed=6)
    sixteen = images[0].astype(np.uint16) * 257
    colour = np.repeat(images[0][..., None], 3, axis=2)
    for image in (sixteen, colour):
        assert iou(OtsuSegmenter().predict(image), masks[0]) > 0.95


def test_kmeans_masks_repeat_with_the_same_seed_and_a_subsample():
    images, masks = toy_scenes(1, shape=(200, 300), seed=7)
    first = KMeansSegmenter(max_samples=5000, seed=1).predict(images[0])
    assert np.array_equal(first, KMeansSegmenter(max_samples=5000, seed=1).predict(images[0]))
    assert iou(first, masks[0]) > 0.95


def test_a_flat_image_gives_an_empty_kmeans_mask():
    assert not KMeansSegmenter(polarity="bright").predict(np.full((20, 20), 80, np.uint8)).any()


def test_unknown_polarity_and_even_blur_are_rejected_naming_the_key():
    with pytest.raises(ValueError, match="segmenter.polarity"):
        OtsuSegmenter(polarity="brightest")
    with pytest.raises(ValueError, match="segmenter.blur"):
        OtsuSegmenter(blur=4)


def test_orient_takes_the_class_that_covers_less_of_the_border():
    bright = np.ones((10, 10), bool)
    bright[3:7, 3:7] = False
    assert np.array_equal(orient(bright, "auto"), ~bright)
    assert np.array_equal(orient(~bright, "auto"), ~bright)


def test_mean_mask_equals_the_mean_of_its_inputs():
    rng = np.random.default_rng(0)
    masks = {"p01_c1": rng.random((5, 12, 16)) > 0.5, "p02_c2": rng.random((3, 12, 16)) > 0.3}
    means = MeanMask()
    for view, stack in masks.items():
        means.update(view, stack[0])  # one image, then the rest as a stack
        means.update(view, stack[1:])
    assert means.views == ["p01_c1", "p02_c2"]
    for view, stack in masks.items():
        np.testing.assert_allclose(means.mean(view), stack.mean(axis=0), rtol=1e-6)
        assert np.array_equal(means.mask(view, 0.5), stack.mean(axis=0) >= 0.5)


def test_mean_mask_memory_does_not_grow_with_the_number_of_updates():
    means = MeanMask()
    for _ in range(50):
        means.update("v", np.ones((8, 8), bool))
    assert means._sums["v"].shape == (8, 8)
    assert means.mean("v").min() == 1.0


def test_mean_mask_rejects_a_view_whose_size_changes():
    means = MeanMask()
    means.update("p01_c1", np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="p01_c1"):
        means.update("p01_c1", np.ones((4, 5), bool))
    with pytest.raises(KeyError, match="p09_c1"):
        means.mean("p09_c1")
