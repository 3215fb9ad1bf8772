"""Augmentation from config (thesis 3.5.1): an albumentations pipeline applied alike to an image and its masks."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from hydra.utils import instantiate


def build_augmentation(cfg: Any, seed: int = 0) -> A.BasicTransform | None:
    """Instantiate the `augment` node (an albumentations `Compose` with `_target_`s); None or {} disables it.

    albumentations 2 draws from its own generator, not from the global seeds that `seed_everything` sets,
    so the run's seed is handed to the transform: the same config then trains the same model.
    """
    if not cfg:
        return None
    transform = instantiate(cfg, _convert_="all")
    transform.set_random_seed(seed)
    return transform


def augment_with_masks(
    transform: A.BasicTransform | None, image: np.ndarray, masks: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply one random draw of `transform` to an image and every mask, so they stay aligned.

    Masks are bool (H, W) and come back bool; geometric transforms move them with nearest-neighbour sampling,
    photometric ones leave them untouched.
    """
    if transform is None:
        return image, masks
    out = transform(image=image, masks=[m.astype(np.uint8) for m in masks])
    return out["image"], [m.astype(bool) for m in out["masks"]]
