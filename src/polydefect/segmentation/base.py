"""The interface every segmenter implements, and building one from its `segmenter` config node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from hydra.utils import instantiate


@runtime_checkable
class Segmenter(Protocol):
    """Turns raw images into object masks, so U-Net and classical methods run in the same sweeps."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) uint8/uint16 image -> (H, W) bool object mask."""
        ...

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`predict` over a list of images (sizes may differ); batched where the method allows."""
        ...

    def score_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(H, W) float32 object scores in [0, 1] per image, for ROC curves (hard methods give 0/1)."""
        ...


def build_segmenter(cfg: Any) -> Segmenter:
    """Instantiate the `segmenter` config node (conf/segmenter/*.yaml); a U-Net still needs `fit`."""
    segmenter = instantiate(cfg, _convert_="all")
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"segmenter._target_: {type(segmenter).__name__} does not implement the Segmenter interface")
    return segmenter
