"""Image and pixel metrics of a detector (thesis 2.5.3): one table of (name, torchmetrics class, fields).

`evaluate` takes the record fields as stacked tensors (score, label, prediction, anomaly_map,
defect_mask, optionally object_mask) and computes every metric whose fields are all present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryFBetaScore,
    BinaryPrecision,
    BinaryRecall,
)

PIXEL_FIELDS = ("anomaly_map", "defect_mask")
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def _joined(state: Tensor | list[Tensor]) -> Tensor:
    """A list state of a metric as one tensor (torchmetrics hands it over joined already after a sync)."""
    return torch.cat(state) if isinstance(state, list) else state


def pro_curve_area(hits: Tensor, hit_weight: Tensor, misses: Tensor, regions: int, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by `fpr_limit`.

    Every distinct score is a threshold (pixel anomalous when its score is >= it). At each one the
    FPR is the share of negative pixels above it, and the PRO the mean over defect regions of the
    share of each region's pixels above it. Sorting once gives both curves as cumulative sums. Only the
    thresholds down to the first one past `fpr_limit` shape the area, so only the pixels scored at or above
    it (a third of the negatives at the default limit) are sorted; the curve is the same.

    Args:
        hits: (P,) scores of the pixels inside defect regions.
        hit_weight: (P,) 1 / size of each one's defect region.
        misses: (Q,) scores of the negative pixels.
        regions: number of defect regions.
    """
    negatives = len(misses)
    if regions == 0 or negatives == 0:
        return math.nan
    kth = min(negatives, math.floor(fpr_limit * negatives) + 1)  # the k-th highest negative score: that threshold
    lowest = float(np.partition(misses.numpy(), negatives - kth)[negatives - kth])
    kept_hits, kept_misses = hits >= lowest, misses >= lowest
    scores = torch.cat([hits[kept_hits], misses[kept_misses]])  # in the maps' own type (float16 archives: half)
    weight = torch.cat([hit_weight[kept_hits], torch.zeros(int(kept_misses.sum()), dtype=torch.float64)])
    negative = torch.arange(len(scores)) >= int(kept_hits.sum())
    order = torch.argsort(scores, descending=True)
    ranked = scores[order].numpy()
    # keep the last pixel of each run of equal scores: one curve point per threshold
    last = np.append(ranked[1:] != ranked[:-1], True)
    fpr = torch.cumsum(negative[order], 0).numpy()[last] / negatives
    pro = torch.cumsum(weight[order], 0).numpy()[last] / regions
    fpr, pro = np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:inside], pro[:inside]
    if inside < len(fpr):
        x0, y0, x1, y1 = fpr[inside - 1], pro[inside - 1], fpr[inside], pro[inside]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (fpr_limit - x0) * (y1 - y0) / (x1 - x0))
    return _trapezoid(x, y) / fpr_limit


class AUPRO(Metric):
    """Normalised area under the per-region-overlap curve up to a false-positive rate (MVTec AD).

    Regions are the 8-connected components of each defect mask. Pixels outside `valid` (e.g. the
    background outside the object mask) are left out of both the regions and the negatives.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, fpr_limit: float = 0.3, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        self.fpr_limit = fpr_limit
        # scores in the maps' own type; a region weight only for the pixels in a region (a few % of them)
        self.add_state("hits", default=[], dist_reduce_fx="cat")
        self.add_state("hit_weights", default=[], dist_reduce_fx="cat")
        self.add_state("misses", default=[], dist_reduce_fx="cat")
        self.add_state("regions", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, maps: Tensor, masks: Tensor, valid: Tensor | None = None) -> None:
        """Add images: maps and masks (N, 1, H, W) or (N, H, W); valid the same shape, bool."""
        maps = maps.detach().cpu().reshape(-1, *maps.shape[-2:])
        masks = masks.detach().cpu().reshape(maps.shape).bool()
        valid = torch.ones_like(masks) if valid is None else valid.detach().cpu().reshape(maps.shape).bool()
        for amap, mask, keep in zip(maps, masks, valid, strict=True):
            inside = mask & keep
            labels, count = ndimage.label(inside.numpy(), structure=_EIGHT_NEIGHBOURS)
            labels = torch.from_numpy(labels).long()[inside]
            sizes = torch.bincount(labels, minlength=count + 1).double()
            self.hits.append(amap[inside])
            self.hit_weights.append(1.0 / sizes[labels])
            self.misses.append(amap[~mask & keep])
            self.regions += count

    def compute(self) -> Tensor:
        area = pro_curve_area(
            _joined(self.hits), _joined(self.hit_weights), _joined(self.misses), int(self.regions), self.fpr_limit
        )
        return torch.tensor(area, dtype=torch.float64)


def rank_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Exact AUROC as the Mann-Whitney statistic: the share of (positive, negative) pairs the scores order
    correctly, ties counted half; the area under the full ROC curve, which a threshold at every distinct score
    traces. Sorting the negatives once (a copy in the scores' own type) keeps its memory near one copy of them,
    where a threshold-by-threshold curve holds several sorted float64 copies of all pixels."""
    negatives = scores[~positive]  # a copy, sorted in place
    negatives.sort()
    hits = scores[positive]
    if not len(hits) or not len(negatives):
        return math.nan
    below = np.searchsorted(negatives, hits, side="left").sum(dtype=np.int64)
    tied = np.searchsorted(negatives, hits, side="right").sum(dtype=np.int64) - below
    return float((below + 0.5 * tied) / (len(hits) * len(negatives)))


class PixelAUROC(Metric):
    """AUROC over pixels (`rank_auroc`): exact, in the maps' own precision, for the tens of millions of pixels of a
    test set (42 M on the magnetic tiles, where torchmetrics' exact `BinaryAUROC` peaked 3.5 GB above its input)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        """Add pixels: scores and labels of one shape, labels 0/1 or bool."""
        self.scores.append(scores.detach().cpu().flatten())
        self.labels.append(labels.detach().cpu().flatten().bool())

    def compute(self) -> Tensor:
        return torch.tensor(rank_auroc(_joined(self.scores).numpy(), _joined(self.labels).numpy()), dtype=torch.float64)


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its result name, how to build it, and the record fields it is updated with, in order."""

    name: str
    factory: Callable[[], Metric]
    fields: tuple[str, ...]


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("image_auroc", BinaryAUROC, ("score", "label")),
    MetricSpec("image_auprc", BinaryAveragePrecision, ("score", "label")),
    MetricSpec("f1", BinaryF1Score, ("prediction", "label")),
    MetricSpec("f2", partial(BinaryFBetaScore, beta=2.0), ("prediction", "label")),
    MetricSpec("precision", BinaryPrecision, ("prediction", "label")),
    MetricSpec("recall", BinaryRecall, ("prediction", "label")),
    MetricSpec("pixel_auroc", PixelAUROC, PIXEL_FIELDS),
    MetricSpec("aupro", AUPRO, PIXEL_FIELDS),
)
_RANKING = {"image_auroc", "image_auprc", "pixel_auroc"}


def _unit_range(values: Tensor) -> Tensor:
    """Min-max rescale to [0, 1] in float64: keeps the ranking, and stops torchmetrics from reading
    scores outside [0, 1] as logits (it would apply a sigmoid, which saturates into ties)."""
    values = values.double()
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def _masked(values: Tensor, keep: Tensor) -> Tensor:
    """values[keep], flat. Selected by numpy, which walks the mask: torch's mask indexing first lists the kept
    positions as int64 coordinates, 32 bytes a pixel of a (N, 1, H, W) stack (1.3 GB for 42 M pixels)."""
    return torch.from_numpy(values.numpy().reshape(-1)[keep.bool().numpy().reshape(-1)])


def _inputs(spec: MetricSpec, records: Mapping[str, Tensor]) -> list[Tensor]:
    """The tensors a metric is updated with, flattened, rescaled and restricted to the object."""
    if spec.name == "aupro":
        return [records["anomaly_map"], records["defect_mask"].bool()] + (
            [records["object_mask"].bool()] if "object_mask" in records else []
        )
    preds, target = (records[field] for field in spec.fields)
    if spec.fields == PIXEL_FIELDS and "object_mask" in records:
        preds, target = (_masked(values, records["object_mask"]) for values in (preds, target))
    if spec.name == "pixel_auroc":  # ranks only: the maps as they are, no float64 copy
        return [preds.flatten(), target.flatten().bool()]
    preds, target = preds.flatten(), target.flatten().long()
    preds = preds.long() if spec.fields[0] == "prediction" else _unit_range(preds)
    return [preds, target]


def evaluate(records: Mapping[str, Tensor], names: Iterable[str] | None = None) -> dict[str, float]:
    """Compute each metric of `METRICS` (or of `names`) whose fields are all in `records`.

    Args:
        records: field -> stacked tensor: score (N,), label (N,) in {0, 1}, prediction (N,) bool
            (from a fitted threshold), anomaly_map (N, 1, H, W), defect_mask and object_mask (N, 1, H, W) bool.
        names: metric names to compute; unknown names are an error.

    Returns:
        name -> value; ranking metrics are NaN when the labels hold only one class.
    """
    known = {spec.name: spec for spec in METRICS}
    wanted = list(known) if names is None else list(names)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(known)}")
    results: dict[str, float] = {}
    for name in wanted:
        spec = known[name]
        if not all(field in records for field in spec.fields):
            continue
        inputs = _inputs(spec, records)
        if name in _RANKING and inputs[1].unique().numel() < 2:
            results[name] = math.nan
            continue
        metric = spec.factory()
        metric.update(*inputs)
        results[name] = float(metric.compute())
    return results
