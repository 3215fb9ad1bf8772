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


def pro_curve_area(
    scores: Tensor, region_weight: Tensor, negative: Tensor, regions: int, fpr_limit: float = 0.3
) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by `fpr_limit`.

    Every distinct score is a threshold (pixel anomalous when its score is >= it). At each one the
    FPR is the share of negative pixels above it, and the PRO the mean over defect regions of the
    share of each region's pixels above it. Sorting once gives both curves as cumulative sums.

    Args:
        scores: (P,) pixel scores.
        region_weight: (P,) 1 / size of the pixel's defect region, 0 for negative pixels.
        negative: (P,) bool, pixel outside every defect region.
        regions: number of defect regions.
    """
    if regions == 0 or not negative.any():
        return math.nan
    order = torch.argsort(scores, descending=True)
    ranked = scores[order].double().numpy()
    fpr = torch.cumsum(negative[order].double(), 0).numpy() / negative.sum().item()
    pro = torch.cumsum(region_weight[order].double(), 0).numpy() / regions
    # keep the last pixel of each run of equal scores: one curve point per threshold
    last = np.append(ranked[1:] != ranked[:-1], True)
    fpr, pro = np.concatenate(([0.0], fpr[last])), np.concatenate(([0.0], pro[last]))
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
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("weights", default=[], dist_reduce_fx="cat")
        self.add_state("negatives", default=[], dist_reduce_fx="cat")
        self.add_state("regions", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, maps: Tensor, masks: Tensor, valid: Tensor | None = None) -> None:
        """Add images: maps and masks (N, 1, H, W) or (N, H, W); valid the same shape, bool."""
        maps = maps.detach().cpu().reshape(-1, *maps.shape[-2:])
        masks = masks.detach().cpu().reshape(maps.shape).bool()
        valid = torch.ones_like(masks) if valid is None else valid.detach().cpu().reshape(maps.shape).bool()
        for amap, mask, keep in zip(maps, masks, valid, strict=True):
            labels, count = ndimage.label((mask & keep).numpy(), structure=_EIGHT_NEIGHBOURS)
            labels = torch.from_numpy(labels).long()
            sizes = torch.bincount(labels.flatten(), minlength=count + 1).double()
            weight = torch.where(labels > 0, 1.0 / sizes[labels], torch.zeros((), dtype=torch.float64))
            self.scores.append(amap[keep].double())
            self.weights.append(weight[keep])
            self.negatives.append((~mask)[keep])
            self.regions += count

    def compute(self) -> Tensor:
        def joined(state: Tensor | list[Tensor]) -> Tensor:
            return torch.cat(state) if isinstance(state, list) else state

        area = pro_curve_area(
            joined(self.scores), joined(self.weights), joined(self.negatives), int(self.regions), self.fpr_limit
        )
        return torch.tensor(area, dtype=torch.float64)


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
    MetricSpec("pixel_auroc", BinaryAUROC, PIXEL_FIELDS),
    MetricSpec("aupro", AUPRO, PIXEL_FIELDS),
)
_RANKING = {"image_auroc", "image_auprc", "pixel_auroc"}


def _unit_range(values: Tensor) -> Tensor:
    """Min-max rescale to [0, 1] in float64: keeps the ranking, and stops torchmetrics from reading
    scores outside [0, 1] as logits (it would apply a sigmoid, which saturates into ties)."""
    values = values.double()
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def _inputs(spec: MetricSpec, records: Mapping[str, Tensor]) -> list[Tensor]:
    """The tensors a metric is updated with, flattened, rescaled and restricted to the object."""
    if spec.name == "aupro":
        return [records["anomaly_map"], records["defect_mask"].bool()] + (
            [records["object_mask"].bool()] if "object_mask" in records else []
        )
    preds, target = (records[field] for field in spec.fields)
    if spec.fields == PIXEL_FIELDS and "object_mask" in records:
        inside = records["object_mask"].bool()
        preds, target = preds[inside], target[inside]
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
