"""`scoring.normalise=auto`: the per-location calibration is used where it raises the validation signal (a place
hot on every good image) and left off where it lowers it (a part that moves in the frame), from one pass of the
detector over the validation images; no test label is read."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.stand_ins import MapStandIn
from omegaconf import OmegaConf
from torch import Tensor

from polydefect.config import PastedValidationConfig
from polydefect.data.sample import Sample
from polydefect.pipeline.detect import calibrate
from polydefect.scoring.location import check_normalise

LEVEL = 140 / 255  # the part's surface


def config(normalise: str, enabled: bool = True) -> OmegaConf:
    return OmegaConf.create(
        {
            "detect": {"validation": OmegaConf.structured(PastedValidationConfig(enabled=enabled)), "map_sigma": 0.0},
            "scoring": {"error": "squared", "reduction": "max", "k": 0.01, "normalise": normalise},
            "data": {"batch_size": 8, "num_workers": 0},
            "trainer": {"precision": "32-true"},
        }
    )


def part(index: int, rng: np.random.Generator, moving: bool) -> Sample:
    """A grained disc on black, 64 x 64: in the frame's centre, or anywhere in it where `moving`."""
    cy, cx = rng.integers(14, 50, 2) if moving else (32, 32)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 14**2
    image = np.where(disc, 140 + rng.normal(0, 3, (64, 64)), 0).clip(0, 255).astype(np.uint8)
    return Sample(image, disc, np.zeros_like(disc), 0, 1, "all", f"good_{index}.png", f"real/{index}")


class Deviation(MapStandIn):
    """A detector that sees the surface: its map is each pixel's deviation from the part's level, plus, with
    `hot_row`, a row that is high on every image (a fixture)."""

    def __init__(self, hot_row: int | None = None) -> None:
        super().__init__()
        self.hot_row = hot_row

    def map_and_reconstruction(self, images: Tensor, views: list[str]) -> tuple[Tensor, Tensor]:
        amap = (images - LEVEL).abs()
        if self.hot_row is not None:
            amap[..., self.hot_row, :] += 0.6
        return amap, images


def parts(moving: bool) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [part(i, rng, moving) for i in range(24)]


def test_a_place_hot_on_every_good_image_is_calibrated_away() -> None:
    normaliser, validation = calibrate(Deviation(hot_row=30), parts(moving=False), config("auto"))
    assert normaliser is not None
    none, location = validation["none/synthetic_image_auroc"], validation["location/synthetic_image_auroc"]
    assert none < 0.7 < 0.85 < location  # the hot row hides every pasted anomaly until it is calibrated away
    assert validation["synthetic_image_auroc"] == location


def test_a_part_that_moves_in_the_frame_is_scored_uncalibrated() -> None:
    normaliser, validation = calibrate(Deviation(), parts(moving=True), config("auto"))
    assert normaliser is None
    none, location = validation["none/synthetic_image_auroc"], validation["location/synthetic_image_auroc"]
    assert location < none  # where the part seldom lies, any grain of it looks extreme against the good maps
    assert validation["synthetic_image_auroc"] == none


@pytest.mark.parametrize(("normalise", "calibrated"), [("location", True), ("none", False)])
def test_location_and_none_are_kept_whatever_the_signal_says(normalise: str, calibrated: bool) -> None:
    normaliser, validation = calibrate(Deviation(), parts(moving=True), config(normalise))
    assert (normaliser is not None) == calibrated
    assert ("location/synthetic_image_auroc" in validation) == calibrated


def test_auto_without_the_validation_signal_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="scoring.normalise=auto chooses on the validation signal"):
        check_normalise("auto", validation_enabled=False)
    normaliser, validation = calibrate(Deviation(hot_row=30), parts(moving=False), config("location", enabled=False))
    assert normaliser is not None and validation == {}
