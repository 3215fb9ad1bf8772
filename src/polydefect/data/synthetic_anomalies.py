"""Procedural anomalies pasted on good images (DRAEM-style): Perlin-noise blobs of foreign texture or intensity.

They give a detector trained only on good images pixel-exact positive examples; the shapes are
random blobs, so no real defect type is imitated and nothing is tuned to one data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)  # Perlin's quintic, zero first and second derivative at 0 and 1


def perlin_noise(height: int, width: int, cells: tuple[int, int], generator: torch.Generator) -> Tensor:
    """2D gradient noise on a grid of `cells` (rows, columns) over the image -> (height, width), about [-1, 1]."""
    rows, cols = cells
    angles = 2 * math.pi * torch.rand(rows + 1, cols + 1, generator=generator)
    gradients = torch.stack([angles.cos(), angles.sin()], -1)  # (rows+1, cols+1, 2)
    y = torch.linspace(0, rows, height + 1)[:-1, None].expand(height, width)
    x = torch.linspace(0, cols, width + 1)[:-1][None, :].expand(height, width)
    y0, x0 = y.floor().long(), x.floor().long()
    fy, fx = y - y0, x - x0

    def corner(dy: int, dx: int) -> Tensor:
        g = gradients[y0 + dy, x0 + dx]  # (H, W, 2)
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), ux)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), ux)
    return torch.lerp(top, bottom, uy) * math.sqrt(2)


def perlin_mask(
    height: int, width: int, generator: torch.Generator, threshold: float = 0.5, max_octave: int = 5
) -> Tensor:
    """A random blob mask (height, width) bool: thresholded Perlin noise on a grid of 2^a x 2^b cells.

    Args:
        threshold: noise level above which a pixel is anomalous; higher gives smaller blobs.
        max_octave: the finest grid has 2^max_octave cells along a side (smaller, more numerous blobs).
    """
    for _ in range(16):  # an empty draw is rare; retry rather than return a defect with no pixels
        a, b = (int(v) for v in torch.randint(0, max_octave + 1, (2,), generator=generator))
        mask = perlin_noise(height, width, (2**a, 2**b), generator) > threshold
        if mask.any():
            return mask
    mask[height // 2, width // 2] = True
    return mask


def _texture(images: Tensor, index: int, generator: torch.Generator) -> Tensor:
    """What fills one mask (C, H, W): another image of the batch, rolled and flipped, noise, or a shifted copy."""
    _, channels, height, width = images.shape
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    if kind == 0:  # foreign texture: a different place of a (possibly different) image
        source = images[int(torch.randint(0, len(images), (1,), generator=generator))]
        shift = [int(torch.randint(0, s, (1,), generator=generator)) for s in (height, width)]
        source = source.roll(shift, dims=(-2, -1))
        return source.flip(-1) if bool(torch.rand(1, generator=generator) < 0.5) else source.flip(-2)
    if kind == 1:  # a procedural texture of Perlin noise around the image's own mean level
        cells = (2 ** int(torch.randint(2, 6, (1,), generator=generator)),) * 2
        noise = perlin_noise(height, width, cells, generator).to(images)
        return (images[index].mean() + 0.5 * noise).clamp(0, 1).expand(channels, height, width)
    # intensity perturbation: the same surface brighter or darker, with changed contrast
    gain = 0.5 + torch.rand(1, generator=generator).item()
    offset = (torch.rand(1, generator=generator).item() - 0.5) * 0.6
    return (images[index] * gain + offset).clamp(0, 1)


def _threshold_range(threshold: float | Sequence[float]) -> tuple[float, float]:
    """A Perlin threshold or a (low, high) range of them -> (low, high); the noise spans about [-1, 1]."""
    bounds = [float(threshold)] * 2 if isinstance(threshold, int | float) else [float(t) for t in threshold]
    if len(bounds) != 2 or not -1.0 < bounds[0] <= bounds[1] < 1.0:
        raise ValueError(
            f"model.anomaly_threshold must be a number or a [low, high] range within (-1, 1), got {threshold}"
        )
    return bounds[0], bounds[1]


def paste_anomalies(
    images: Tensor,
    generator: torch.Generator,
    probability: float = 0.5,
    threshold: float | Sequence[float] = 0.5,
) -> tuple[Tensor, Tensor]:
    """Paste a Perlin-shaped anomaly on each image with the given probability.

    Inside the mask the image becomes (1 - beta) * image + beta * texture with a random opacity
    beta in [0.2, 1] (faint anomalies, as the 'uneven' defects of real parts, are included).

    Args:
        images: (B, C, H, W) in [0, 1], good images.
        generator: a CPU generator, so the anomalies are reproducible.
        probability: chance that an image gets an anomaly; the others stay good (empty mask).
        threshold: Perlin threshold of `perlin_mask`, or a (low, high) range from which each anomaly draws its
            own: low thresholds give regions covering much of the image (a band of another surface finish),
            high ones small spots, so one range teaches both.

    Returns:
        ((B, C, H, W) images with anomalies in [0, 1], (B, 1, H, W) float masks in {0, 1}).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"model.anomaly_probability must be in [0, 1], got {probability}")
    low, high = _threshold_range(threshold)
    batch, _, height, width = images.shape
    masks = torch.zeros(batch, 1, height, width, dtype=images.dtype, device=images.device)
    out = images.clone()
    for index in range(batch):
        if bool(torch.rand(1, generator=generator) >= probability):
            continue
        level = low + (high - low) * torch.rand(1, generator=generator).item() if high > low else low
        mask = perlin_mask(height, width, generator, level).to(images)[None]  # (1, H, W)
        beta = 0.2 + 0.8 * torch.rand(1, generator=generator).item()
        texture = _texture(images, index, generator).to(images)
        out[index] = images[index] * (1 - beta * mask) + beta * mask * texture
        masks[index] = mask
    return out, masks
