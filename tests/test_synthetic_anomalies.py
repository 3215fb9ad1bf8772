"""Procedural anomalies: Perlin noise and masks, and pasting that changes only the masked pixels."""

from __future__ import annotations

import pytest
import torch

from polydefect.data.synthetic_anomalies import paste_anomalies, perlin_mask, perlin_noise


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_perlin_noise_is_reproducible_smooth_and_bounded() -> None:
    noise = perlin_noise(61, 83, (4, 6), _generator())
    assert noise.shape == (61, 83) and torch.equal(noise, perlin_noise(61, 83, (4, 6), _generator()))
    assert noise.abs().max() <= 1.0 + 1e-5 and noise.std() > 0.1
    assert noise.diff(dim=1).abs().max() < 0.3  # neighbouring pixels are close: gradient noise, not white noise


def test_perlin_masks_are_never_empty_and_not_the_whole_image() -> None:
    generator = _generator(1)
    fractions = [perlin_mask(64, 48, generator).float().mean().item() for _ in range(20)]
    assert min(fractions) > 0 and max(fractions) < 0.9


def test_pasting_changes_only_pixels_inside_the_returned_masks() -> None:
    images = torch.rand(6, 3, 40, 56, generator=_generator(2))
    pasted, masks = paste_anomalies(images, _generator(3), probability=1.0)
    assert masks.shape == (6, 1, 40, 56) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all()
    outside = (masks == 0).expand_as(images)
    assert torch.equal(pasted[outside], images[outside])
    assert (pasted != images).any() and pasted.min() >= 0 and pasted.max() <= 1


def test_probability_zero_leaves_every_image_good() -> None:
    images = torch.rand(4, 1, 32, 32, generator=_generator(4))
    pasted, masks = paste_anomalies(images, _generator(5), probability=0.0)
    assert torch.equal(pasted, images) and masks.sum() == 0


def test_probability_outside_zero_one_is_an_error_naming_the_key() -> None:
    with pytest.raises(ValueError, match="model.anomaly_probability"):
        paste_anomalies(torch.rand(1, 1, 8, 8), _generator(), probability=1.5)


def test_a_threshold_range_draws_anomalies_from_small_spots_to_large_regions() -> None:
    images = torch.rand(64, 1, 48, 48, generator=_generator(6))
    _, fixed = paste_anomalies(images, _generator(7), probability=1.0, threshold=0.5)
    _, ranged = paste_anomalies(images, _generator(7), probability=1.0, threshold=(-0.1, 0.6))
    fixed_areas, ranged_areas = fixed.mean((1, 2, 3)), ranged.mean((1, 2, 3))
    assert ranged_areas.max() > 0.5 > fixed_areas.max()  # regions covering most of the image appear
    assert ranged_areas.min() < 0.05  # and small spots remain


def test_a_single_threshold_and_an_empty_range_draw_the_same_anomalies() -> None:
    images = torch.rand(8, 1, 32, 32, generator=_generator(8))
    pasted, masks = paste_anomalies(images, _generator(9), probability=0.5, threshold=0.4)
    again, again_masks = paste_anomalies(images, _generator(9), probability=0.5, threshold=[0.4, 0.4])
    assert torch.equal(pasted, again) and torch.equal(masks, again_masks)


@pytest.mark.parametrize("threshold", [(0.6, 0.2), (-1.5, 0.5), (0.1, 0.2, 0.3), 1.0])
def test_a_bad_threshold_is_an_error_naming_the_key(threshold: object) -> None:
    with pytest.raises(ValueError, match="model.anomaly_threshold"):
        paste_anomalies(torch.rand(1, 1, 8, 8), _generator(), probability=1.0, threshold=threshold)
