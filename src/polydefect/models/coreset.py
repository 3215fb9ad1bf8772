"""Greedy k-center coreset selection: a small memory bank that still covers every training patch feature."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _greedy_k_center(points: Tensor, count: int, first: int) -> Tensor:
    """Indices of `count` rows of points (N, D), each the farthest from those chosen before it."""
    squared_norms = points.pow(2).sum(1)  # (N,)
    chosen = torch.empty(count, dtype=torch.long)
    nearest = torch.full_like(squared_norms, float("inf"))  # squared distance to the closest chosen point
    index = first
    for step in range(count):
        chosen[step] = index
        centre = points[index]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step.
        distance = squared_norms - 2.0 * (points @ centre) + squared_norms[index]
        torch.minimum(nearest, distance, out=nearest)
        index = int(torch.argmax(nearest))
    return chosen


def greedy_coreset(
    features: Tensor, ratio: float, projection_dim: int = 128, chunk_size: int = 10_000, seed: int = 0
) -> Tensor:
    """Select about `ratio * N` rows of features (N, D) that cover all of them (PatchCore's coreset).

    Distances are measured after a random Gaussian projection to `projection_dim` dimensions
    (Johnson-Lindenstrauss; PatchCore does the same), which keeps each greedy step cheap. The
    greedy selection costs N * chunk rows per selected point, so the features are split into random
    chunks of at most `chunk_size` rows, each reduced on its own: with 280 000 patches and a 10%
    bank this is the difference between minutes and seconds, and the union still covers every
    point within its chunk's radius.

    Args:
        features: (N, D) float patch features.
        ratio: fraction of rows to keep, in (0, 1]; at least one row is kept per chunk.
        projection_dim: dimensions after projection; no projection when D is not larger.
        chunk_size: most rows reduced together.
        seed: fixes the projection, the chunking and each chunk's first point.

    Returns:
        (M,) sorted unique long indices into features, M <= sum over chunks of ceil(ratio * chunk rows).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"model.bank_ratio must be in (0, 1], got {ratio}")
    count = features.shape[0]
    if ratio == 1.0 or count == 0:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    points = features.detach().float().cpu()
    if points.shape[1] > projection_dim:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        points = points @ projection  # (N, projection_dim)
    order = torch.randperm(count, generator=generator)
    chunks = math.ceil(count / chunk_size)
    selected = []
    for chunk in order.tensor_split(chunks):
        first = int(torch.randint(len(chunk), (1,), generator=generator))
        picked = _greedy_k_center(points[chunk], math.ceil(ratio * len(chunk)), first)
        selected.append(chunk[picked])
    return torch.cat(selected).unique()  # sorted; duplicates only where features repeat
