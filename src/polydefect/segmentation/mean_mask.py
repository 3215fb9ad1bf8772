"""Per-view mean mask (thesis 5.1.1): one mask per view, averaged over every image of that view.

The thesis ran out of memory stacking all masks; here each view keeps one running sum and a count, so
memory is constant in the number of batches.
"""

from __future__ import annotations

import numpy as np


class MeanMask:
    """Streaming per-view average of masks (or probability maps)."""

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray] = {}  # view -> (H, W) float64 running sum
        self._counts: dict[str, int] = {}

    @property
    def views(self) -> list[str]:
        return sorted(self._sums)

    def update(self, view: str, mask: np.ndarray) -> None:
        """Add one mask (H, W) or a stack (N, H, W) of bool or [0, 1] float maps to a view's average."""
        stack = mask[None] if mask.ndim == 2 else mask
        if stack.ndim != 3:
            raise ValueError(f"view {view!r}: expected a (H, W) mask or (N, H, W) stack, got shape {mask.shape}")
        total = stack.sum(axis=0, dtype=np.float64)
        if view not in self._sums:
            self._sums[view], self._counts[view] = total, len(stack)
            return
        if total.shape != self._sums[view].shape:
            raise ValueError(f"view {view!r}: mask of shape {total.shape}, earlier masks {self._sums[view].shape}")
        self._sums[view] += total
        self._counts[view] += len(stack)

    def mean(self, view: str) -> np.ndarray:
        """(H, W) float32: the fraction of the view's masks that mark each pixel as object."""
        if view not in self._sums:
            raise KeyError(f"view {view!r}: no masks added; known views {self.views}")
        return (self._sums[view] / self._counts[view]).astype(np.float32)

    def mask(self, view: str, threshold: float = 0.5) -> np.ndarray:
        """(H, W) bool: object where at least `threshold` of the view's masks say so."""
        return self.mean(view) >= threshold
