"""Augmentation from config (thesis 3.5.1): an albumentations pipeline applied alike to an image and its masks."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from hydra.utils import instantiate


def build_augmentation(cfg: Any) -> A.BasicTransform | None:
    """Instantiate the `augment` node (an albumentations `Compose` with `_target_`s); None or {} disables it."""
    if not cfg:
        return None
    return instantiate(cfg, _convert_="all")


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
