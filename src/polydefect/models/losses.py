"""Reconstruction losses for the autoencoders: MSE, SSIM and their sum (thesis 2.5.1, 4.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    """Separable Gaussian kernel, (C, 1, size, size), normalised to sum 1."""
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    line = line / line.sum()
    return (line[:, None] * line[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean structural similarity of each image pair (Wang et al. 2004), Gaussian-weighted.

    Only windows that fit inside the image are used (no padding), as scikit-image's
    `structural_similarity(gaussian_weights=True, use_sample_covariance=False)` does.

    Args:
        x, y: (B, C, H, W) with H, W >= window_size, values in a range of width `data_range`.

    Returns:
        (B,) SSIM in [-1, 1]; 1 for identical images. Computed in float32 under autocast too: the variances
        are differences of nearly equal local means, which bf16 cancels to noise or below zero (NaN losses).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim window of {window_size} px does not fit images of {x.shape[-2]}x{x.shape[-1]}")
    dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 and fp16 up to float32; float64 stays
    with torch.autocast(x.device.type, enabled=False):
        return _ssim(x.to(dtype), y.to(dtype), window_size, sigma, data_range)


def _ssim(x: Tensor, y: Tensor, window_size: int, sigma: float, data_range: float) -> Tensor:
    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma, channels, x)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)


def ssim_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """1 - SSIM, averaged over the batch: 0 for a perfect reconstruction."""
    return 1.0 - ssim(x_hat, x).mean()


def mse_ssim_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """MSE + (1 - SSIM): pixel fidelity plus local structure, equally weighted."""
    return F.mse_loss(x_hat, x) + ssim_loss(x_hat, x)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "ssim": ssim_loss,
    "mse+ssim": mse_ssim_loss,
}


def reconstruction_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function `(x_hat, x) -> scalar` called `name` in the config (`model.loss`)."""
    if name not in LOSSES:
        raise ValueError(f"model.loss: unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
