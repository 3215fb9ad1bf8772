"""An anomaly map drawn over its image, for eyes rather than metrics."""

from __future__ import annotations

import cv2
import numpy as np


def anomaly_overlay(image: np.ndarray, amap: np.ndarray, mask: np.ndarray, vmax: float) -> np.ndarray:
    """The image beside the same image with the map as a heat colour inside the object.

    Args:
        image: (H, W) uint8 grey or (H, W, 3) uint8 RGB, as the detector saw it.
        amap: (H, W) float anomaly map; 0 to `vmax` spans the colour scale (one scale for a whole report).
        mask: (H, W) bool object mask; outside it the image is shown as is.
        vmax: map value drawn as the hottest colour (> 0).
    Returns:
        (H, 2W, 3) uint8 BGR, ready for cv2.imwrite.
    """
    base = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
    level = np.clip(amap / max(vmax, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.6 * level * mask)[..., None]  # (H, W, 1): cold and background pixels stay as they were
    blended = (base * (1 - alpha) + heat * alpha).astype(np.uint8)
    return np.concatenate([base, blended], axis=1)
