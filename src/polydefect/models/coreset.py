"""Greedy k-center coreset selection: a small memory bank that still covers every training patch feature."""

from __future__ import annotations

import math
import tempfile

import numpy as np
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


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"model.bank_ratio must be in (0, 1], got {ratio}")


def _projection(dims: int, projection_dim: int, generator: torch.Generator) -> Tensor | None:
    """The random Gaussian projection to `projection_dim` dimensions; None when the rows are not longer."""
    if dims <= projection_dim:
        return None
    return torch.randn(dims, projection_dim, generator=generator) / math.sqrt(projection_dim)


def _chunked_selection(points: Tensor, ratio: float, chunk_size: int, generator: torch.Generator) -> Tensor:
    """Sorted indices of the rows of points (N, P) chosen by the greedy selection of each random chunk."""
    order = torch.randperm(len(points), generator=generator)
    selected = []
    for chunk in order.tensor_split(math.ceil(len(points) / chunk_size)):
        first = int(torch.randint(len(chunk), (1,), generator=generator))
        picked = _greedy_k_center(points[chunk], math.ceil(ratio * len(chunk)), first)
        selected.append(chunk[picked])
    return torch.cat(selected).unique()  # sorted; duplicates only where features repeat


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
    _check_ratio(ratio)
    count = features.shape[0]
    if ratio == 1.0 or count == 0:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    points = features.detach().float().cpu()
    projection = _projection(points.shape[1], projection_dim, generator)
    if projection is not None:
        points = points @ projection  # (N, projection_dim)
    return _chunked_selection(points, ratio, chunk_size, generator)


class CoresetBuilder:
    """`greedy_coreset` over features that arrive batch by batch, holding only their projection in memory.

    Each batch is projected as it comes (the selection reads nothing else) and its full rows go to a temporary
    file, from which `finish()` reads back only the chosen ones: collecting a 10% bank of 640 images at 256 px
    holds 330 MB of projected rows instead of 900 MB of features, and no second copy to join them. The bank is
    `features[greedy_coreset(features, ...)]` of all the rows in the order they were added.
    """

    def __init__(self, ratio: float, projection_dim: int = 128, chunk_size: int = 10_000, seed: int = 0) -> None:
        _check_ratio(ratio)
        self.ratio, self.projection_dim, self.chunk_size = ratio, projection_dim, chunk_size
        self.generator = torch.Generator().manual_seed(seed)
        self.projection: Tensor | None = None
        self.projected: list[Tensor] = []
        # open for the builder's life (closed by finish() or close()); the file is removed when closed
        self.spill = tempfile.TemporaryFile(prefix="polydefect_features_")  # noqa: SIM115
        self.dims = 0
        self.seen = 0

    def add(self, features: Tensor) -> int:
        """Take (N, D) float rows; returns how many rows were taken so far."""
        rows = features.detach().to("cpu", torch.float32).contiguous()
        if not self.seen:
            self.dims = rows.shape[1]
            self.projection = _projection(self.dims, self.projection_dim, self.generator)
        if self.ratio < 1.0:  # a full bank needs no selection
            with torch.autocast("cpu", enabled=False):  # collected under bf16 autocast, projected in float32
                self.projected.append(rows if self.projection is None else rows @ self.projection)
        rows.numpy().tofile(self.spill)
        self.seen += len(rows)
        return self.seen

    def finish(self) -> Tensor:
        """(M, D) float32 the chosen rows, in the order they were added; the builder cannot take more."""
        if not self.seen:
            raise RuntimeError("CoresetBuilder.finish(): no features were added")
        if self.ratio == 1.0:
            chosen = torch.arange(self.seen)
        else:
            points, self.projected = torch.cat(self.projected), []
            chosen = _chunked_selection(points, self.ratio, self.chunk_size, self.generator)
            del points
        self.spill.flush()
        stored = np.memmap(self.spill, np.float32, mode="r", shape=(self.seen, self.dims))
        rows = torch.from_numpy(np.ascontiguousarray(stored[chosen.numpy()]))
        del stored
        self.close()
        return rows

    def close(self) -> None:
        """Drop the collected rows and their file."""
        self.projected = []
        self.spill.close()
