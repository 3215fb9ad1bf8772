"""The validation signal: good held-out images against their pasted-anomaly copies ranks a detector that sees
the surface above one that does not, reads no test label, and is reported beside every run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers.stand_ins import MapStandIn
from omegaconf import OmegaConf
from torch import Tensor

from polydefect.config import PastedValidationConfig
from polydefect.data.sample import Sample
from polydefect.evaluation.pasted_validation import (
    PASTED_SUFFIX,
    SHAPES,
    paste_one,
    pasted_set,
    synthetic_validation,
)

SETTINGS = OmegaConf.structured(PastedValidationConfig)
CFG = OmegaConf.create(
    {
        "detect": {"validation": SETTINGS, "map_sigma": 0.0},
        "scoring": {"error": "squared", "reduction": "max", "k": 0.01},
        "data": {"batch_size": 4, "num_workers": 0},
        "trainer": {"precision": "32-true"},
    }
)


def good_sample(index: int, rng: np.random.Generator) -> Sample:
    """A flat grained disc (the part) on a black background: 64 x 64, its object mask the disc."""
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 26**2
    image = np.where(disc, 140 + rng.normal(0, 3, (64, 64)), 0).clip(0, 255).astype(np.uint8)
    return Sample(image, disc, np.zeros_like(disc), 0, 1, "all", f"good_{index}.png", f"real/{index}")


class StandIn(MapStandIn):
    """A detector whose map is the image's deviation from the part's flat level (sees the surface), or noise
    (sees nothing)."""

    def __init__(self, sees: bool) -> None:
        super().__init__()
        self.sees = sees

    def map_and_reconstruction(self, images: Tensor, views: list[str]) -> tuple[Tensor, Tensor]:
        if self.sees:
            return (images - 140 / 255).abs(), images
        generator = torch.Generator().manual_seed(len(views))
        return torch.rand(images.shape, generator=generator), images


@pytest.fixture
def samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    return [good_sample(i, rng) for i in range(24)]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_pasted_copy_changes_only_pixels_of_the_object_within_the_area_limit(samples, shape) -> None:
    generator = torch.Generator().manual_seed(0)
    for sample in samples:
        copy = paste_one(sample, generator, SETTINGS.threshold, SETTINGS.max_area, shape)
        assert copy is not None and copy.label == 1 and copy.row_id == sample.row_id + PASTED_SUFFIX
        changed = copy.image != sample.image
        assert not (changed & ~sample.object_mask).any()
        assert not (copy.defect_mask & ~sample.object_mask).any() and copy.defect_mask.any()
        assert copy.defect_mask.sum() <= SETTINGS.max_area * sample.object_mask.sum()
        assert (sample.label, sample.defect_mask.any()) == (0, False)  # the source is left as it was


def test_spots_and_scratches_are_smaller_than_blobs_and_scratches_are_thin(samples) -> None:
    generator = torch.Generator().manual_seed(1)
    areas = {
        shape: np.mean([paste_one(s, generator, SETTINGS.threshold, 1.0, shape).defect_mask.sum() for s in samples])
        for shape in SHAPES
    }
    assert areas["spot"] < areas["blob"] and areas["scratch"] < areas["blob"]
    scratch = paste_one(samples[0], generator, SETTINGS.threshold, 1.0, "scratch").defect_mask
    thinned = cv2.erode(scratch.astype(np.uint8), np.ones((3, 3), np.uint8))
    assert thinned.sum() < 0.2 * scratch.sum()  # a line one or two pixels wide, gone after one erosion


def test_the_shapes_take_turns_and_an_unknown_one_is_named(samples) -> None:
    settings = OmegaConf.merge(SETTINGS, {"shapes": ["spot", "scratch"]})
    pasted = pasted_set(samples[:4], settings)[4:]
    generator = torch.Generator().manual_seed(settings.seed)
    turns = [
        paste_one(sample, generator, settings.threshold, settings.max_area, shape)
        for sample, shape in zip(samples[:4], ["spot", "scratch", "spot", "scratch"], strict=True)
    ]
    assert all(np.array_equal(a.defect_mask, b.defect_mask) for a, b in zip(pasted, turns, strict=True))
    with pytest.raises(ValueError, match="detect.validation.shapes: unknown shape 'crack'"):
        pasted_set(samples[:1], OmegaConf.merge(SETTINGS, {"shapes": ["crack"]}))
    with pytest.raises(ValueError, match="detect.validation.shapes is empty"):
        pasted_set(samples[:1], OmegaConf.merge(SETTINGS, {"shapes": []}))


def test_the_pasted_set_is_the_same_draw_every_time(samples) -> None:
    first, second = pasted_set(samples, SETTINGS), pasted_set(samples, SETTINGS)
    assert len(first) == 2 * len(samples)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))


def test_the_signal_ranks_a_detector_that_sees_the_surface_above_one_that_does_not(samples) -> None:
    seeing = synthetic_validation(StandIn(sees=True), samples, CFG, calibrate=False).figures["none"]
    blind = synthetic_validation(StandIn(sees=False), samples, CFG, calibrate=False).figures["none"]
    # pasted blobs of the part's own texture on a flat part are invisible to anyone: neither figure reaches 1
    assert seeing["synthetic_image_auroc"] >= 0.85 and seeing["synthetic_pixel_auroc"] >= 0.75
    assert 0.25 < blind["synthetic_image_auroc"] < 0.75 and 0.4 < blind["synthetic_pixel_auroc"] < 0.6


def test_without_validation_images_there_is_no_signal() -> None:
    signal = synthetic_validation(StandIn(sees=True), [], CFG, calibrate=True)
    assert signal.figures == {} and signal.normaliser is None
