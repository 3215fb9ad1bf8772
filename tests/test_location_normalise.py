"""Per-location calibration: a place that is high on every good image stops deciding the image score, a
validation image is never its own reference, and the calibration a run saves scores new images the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydefect.scoring.location import LocationNormaliser
from polydefect.scoring.scores import image_score


def good_maps(count: int, seed: int = 0) -> np.ndarray:
    """(count, 32, 32) maps of good images: noise, and a top row that is hot on every one of them."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(1.0, 0.1, (count, 32, 32))
    maps[:, 0] += rng.normal(2.0, 0.1, (count, 32))
    return maps.astype(np.float32)


def as_batch(maps: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(maps, np.float32))[:, None]


def test_a_defect_outranks_the_places_hot_on_every_good_image() -> None:
    normaliser = LocationNormaliser.from_maps(list(good_maps(20)), [f"val/{i}" for i in range(20)])
    tests = good_maps(10, seed=1)
    tests[5:, 16:19, 16:19] += 1.0  # a defect, fainter than the hot row
    labels = np.array([0] * 5 + [1] * 5)
    raw = image_score(as_batch(tests), None, "max").numpy()
    calibrated = image_score(normaliser(as_batch(tests), [f"test/{i}" for i in range(10)]), None, "max").numpy()
    assert raw[labels == 1].min() < raw[labels == 0].max()  # on the raw maps the hot row hides the defects
    assert calibrated[labels == 1].min() > calibrated[labels == 0].max()


def test_a_validation_image_and_its_copies_are_scored_against_the_others_only() -> None:
    maps = good_maps(6)
    ids = [f"val/{i}" for i in range(6)]
    normaliser = LocationNormaliser.from_maps(list(maps), ids)
    without_first = LocationNormaliser.from_maps(list(maps[1:]), ids[1:])
    expected = without_first(as_batch(maps[:1]), ["new"])
    assert torch.allclose(normaliser(as_batch(maps[:1]), ["val/0"]), expected)
    assert torch.allclose(normaliser(as_batch(maps[:1]), ["val/0#pasted"]), expected)
    assert not torch.allclose(normaliser(as_batch(maps[:1]), ["new"]), expected)


def test_the_saved_calibration_scores_new_images_as_the_run_did(tmp_path) -> None:
    normaliser = LocationNormaliser.from_maps(list(good_maps(8)), [f"val/{i}" for i in range(8)])
    normaliser.save(tmp_path / "location.npz")
    loaded = LocationNormaliser.load(tmp_path / "location.npz")
    new = as_batch(good_maps(3, seed=2))
    assert torch.allclose(loaded(new, ["a", "b", "c"]), normaliser(new, ["a", "b", "c"]))


def test_the_calibration_reloaded_with_its_maps_still_scores_each_validation_image_against_the_others(
    tmp_path,
) -> None:
    ids = [f"val/{i}" for i in range(8)]
    maps = good_maps(8)
    normaliser = LocationNormaliser.from_maps(list(maps), ids)
    normaliser.save(tmp_path / "location.npz")
    normaliser.save_maps(tmp_path / "location_maps.npz")
    loaded = LocationNormaliser.load(tmp_path / "location.npz", tmp_path / "location_maps.npz")
    scored = ["val/0", "val/3#pasted", "new"]
    assert torch.equal(loaded(as_batch(maps[[0, 3, 5]]), scored), normaliser(as_batch(maps[[0, 3, 5]]), scored))
    without_maps = LocationNormaliser.load(tmp_path / "location.npz")
    assert not torch.allclose(without_maps(as_batch(maps[:1]), ["val/0"]), normaliser(as_batch(maps[:1]), ["val/0"]))


def test_too_few_images_mixed_sizes_and_a_wrong_size_are_named() -> None:
    with pytest.raises(ValueError, match="at least 3 good validation images.*data.val_fraction"):
        LocationNormaliser.from_maps(list(good_maps(2)), ["a", "b"])
    with pytest.raises(ValueError, match="maps of one size"):
        LocationNormaliser.from_maps([np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4))], ["a", "b", "c"])
    normaliser = LocationNormaliser.from_maps(list(good_maps(4)), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"scoring.normalise=location: maps of \(16, 16\) px"):
        normaliser(torch.zeros(1, 1, 16, 16), ["x"])
