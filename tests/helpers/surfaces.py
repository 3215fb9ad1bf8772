"""Small generated images for detector unit tests."""

from __future__ import annotations

import numpy as np
import torch


def textured_surfaces(count: int, channels: int = 1, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    """Smooth textured surfaces (B, C, H, W) in [0, 1], the same for the same arguments."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: size[0], : size[1]]
    images = [0.5 + 0.2 * np.sin(xx / 4.0 + rng.uniform(0, 6)) * np.cos(yy / 5.0) for _ in range(count)]
    return torch.from_numpy(np.stack(images)).float()[:, None].expand(-1, channels, -1, -1).contiguous()
