"""Image scores: one number per anomaly map, reduced over the object mask (thesis 4.3, 5.6.3)."""

from __future__ import annotations

import torch
from torch import Tensor

from polydefect.scoring.maps import smooth

REDUCTIONS = ("mean", "max", "topk_mean", "peak_topk_mean", "sum")
PEAK_BASELINE = 0.03  # `scoring.peak_baseline`'s default (config.py), and its value where a scoring node has none


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


def local_peaks(amap: Tensor, mask: Tensor | None, baseline: float) -> Tensor:
    """(B, 1, H, W) maps above their local level: each map minus its Gaussian average over the object's pixels
    nearby (std `baseline` of the map's long side). A defect is a small peak; a part in a pose the memory has not
    seen raises a whole face, which this takes away."""
    if not 0 < baseline < 0.3:
        raise ValueError(f"scoring.peak_baseline is a share of the map's long side in (0, 0.3), got {baseline}")
    weight = torch.ones_like(amap) if mask is None else mask.to(amap.dtype)
    sigma = baseline * max(amap.shape[-2:])
    return amap - smooth(amap * weight, sigma) / smooth(weight, sigma).clamp_min(1e-6)


def image_score(
    amap: Tensor, mask: Tensor | None = None, reduction: str = "mean", k: float = 0.01, baseline: float = PEAK_BASELINE
) -> Tensor:
    """Reduce each anomaly map to one score over the pixels inside its object mask.

    Args:
        amap: (B, 1, H, W) anomaly maps, higher = more anomalous.
        mask: (B, 1, H, W) bool object masks, or None for the whole frame.
        reduction: `scoring.reduction`: "mean", "max", "topk_mean" (mean of the highest `k`
            fraction of the masked pixels, at least one), "peak_topk_mean" (the same of the map above its local
            level, `local_peaks`) or "sum" (the thesis' total error).
        k: fraction in (0, 1] for "topk_mean" and "peak_topk_mean".
        baseline: `scoring.peak_baseline`, the local level's width for "peak_topk_mean".

    Returns:
        (B,) scores.
    """
    if reduction == "peak_topk_mean":
        return image_score(local_peaks(amap, mask, baseline), mask, "topk_mean", k)
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
