"""Anomaly maps from an image and its reconstruction (thesis eq. 2.10 and 4.1): higher = more anomalous."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ERRORS = ("squared", "absolute")


def error_map(x: Tensor, x_hat: Tensor, error: str = "squared") -> Tensor:
    """Per-pixel reconstruction error summed over channels.

    The thesis writes eq. 4.1 as sqrt((x - x_hat)^2), i.e. |x - x_hat|, but describes and plots
    the squared difference (figure 1.6, section 4.3); both are offered, squared is the default.

    Args:
        x, x_hat: (B, C, H, W), the input and its reconstruction.
        error: "squared" or "absolute" (`scoring.error`).

    Returns:
        (B, 1, H, W), >= 0.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"image {tuple(x.shape)} and reconstruction {tuple(x_hat.shape)} differ in shape")
    difference = x - x_hat
    if error == "squared":
        per_channel = difference.square()
    elif error == "absolute":
        per_channel = difference.abs()
    else:
        raise ValueError(f"scoring.error: unknown error {error!r}; choose one of {list(ERRORS)}")
    return per_channel.sum(1, keepdim=True)


def patch_map_to_image(patch_map: Tensor, square: tuple[int, int], sigma: float, size: tuple[int, int]) -> Tensor:
    """(B, 1, h, w) per-patch map of a detector's input square -> (B, 1, *size): upsampled to the square,
    smoothed there with std `sigma` px (so the blur is the same whatever the caller's image size), then
    resized to the caller's image; in float32 whatever the network's precision was."""
    amap = F.interpolate(patch_map.float(), size=square, mode="bilinear", align_corners=False)
    return F.interpolate(smooth(amap, sigma), size=size, mode="bilinear", align_corners=False)


def smooth(amap: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (B, 1, H, W) maps with std `sigma` px (0 returns the map), reflecting at the border.
    The blur runs in float32 under autocast too: a bf16 map has 8 bits of mantissa, and ties spoil rankings."""
    if sigma <= 0:
        return amap
    with torch.autocast(amap.device.type, enabled=False):
        return _gaussian_blur(amap.to(torch.promote_types(amap.dtype, torch.float32)), sigma)


def _gaussian_blur(amap: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=amap.dtype, device=amap.device)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    line = line / line.sum()
    height, width = amap.shape[-2:]
    if min(height, width) <= radius:
        raise ValueError(
            f"smoothing sigma {sigma} (detect.map_sigma, or the model's model.sigma) is too wide for maps of "
            f"{height}x{width} px"
        )
    padded = F.pad(amap, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, line.view(1, 1, 1, -1))
    return F.conv2d(blurred, line.view(1, 1, -1, 1))
