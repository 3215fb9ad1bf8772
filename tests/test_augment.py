"""Augmentation from config keeps images and masks aligned."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from polydefect.data.augment import augment_with_masks, build_augmentation

STRONG_GEOMETRY = {
    "_target_": "albumentations.Compose",
    "transforms": [
        {"_target_": "albumentations.Affine", "rotate": [-30, 30], "translate_percent": [-0.2, 0.2], "p": 1.0},
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    ],
}


def test_geometric_augmentation_moves_image_and_mask_together() -> None:
    transform = build_augmentation(OmegaConf.create(STRONG_GEOMETRY))
    image = np.zeros((64, 64), np.uint8)
    mask = np.zeros((64, 64), bool)
    image[20:40, 10:30] = 200
    mask[20:40, 10:30] = True
    for _ in range(10):
        out, (out_mask,) = augment_with_masks(transform, image, [mask])
        assert out_mask.dtype == bool
        # pixels of the part stay bright under the moved mask, the background stays dark outside it
        assert out[out_mask].mean() > 150
        assert out[~out_mask].mean() < 50


def test_every_mask_gets_the_same_draw() -> None:
    transform = build_augmentation(OmegaConf.create(STRONG_GEOMETRY))
    mask = np.zeros((32, 32), bool)
    mask[5:15, 5:25] = True
    _, (first, second) = augment_with_masks(transform, mask.astype(np.uint8) * 255, [mask, mask.copy()])
    assert np.array_equal(first, second)


def test_empty_config_disables_augmentation() -> None:
    assert build_augmentation(OmegaConf.create({})) is None
    image = np.ones((4, 4), np.uint8)
    assert augment_with_masks(None, image, [])[0] is image


def test_shipped_augment_configs_instantiate() -> None:
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "conf" / "augment").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        transform = build_augmentation(cfg)
        if transform is not None:
            out, (m,) = augment_with_masks(transform, np.zeros((40, 40), np.uint8), [np.ones((40, 40), bool)])
            assert out.shape == (40, 40) and m.shape == (40, 40), path.name


def test_the_seed_decides_the_draws() -> None:
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)

    def draws(seed: int) -> list[np.ndarray]:
        transform = build_augmentation(OmegaConf.create(STRONG_GEOMETRY), seed)
        return [augment_with_masks(transform, image, [mask])[0] for _ in range(3)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
