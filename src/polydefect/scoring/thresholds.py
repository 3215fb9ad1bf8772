"""Decision thresholds on image scores, fitted on training (good) or validation images only.

Global (thesis 4.3: the highest training score, or a quantile), per view (figure 5.3: a statistic of
that view's training scores), per-view normalisation (z-scores from that view's training scores), and
the best-F1 threshold on a validation set with defects, reported separately. Nothing here takes test
labels. Fitted thresholds become plain dicts (`to_dict`/`from_dict`) so they travel with a run as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

ALL_VIEWS = "*"
BY = ("global", "view")
METHODS = ("max", "median", "quantile")
REFERENCE_SPLITS = ("train", "val")  # the good images a threshold may be fitted on (`scoring.threshold.fit_on`)


def _float64(values: Tensor | Sequence[float]) -> Tensor:
    """(N,) float64 CPU tensor; arrays are copied, as pandas hands out read-only ones that torch will not wrap."""
    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64).flatten()
    return torch.from_numpy(np.array(values, dtype=np.float64)).flatten()


def _as_scores(scores: Tensor | Sequence[float], views: Sequence[str] | None = None) -> Tensor:
    scores = _float64(scores)
    if len(scores) == 0:
        raise ValueError("no scores given")
    if views is not None and len(views) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(views)} views")
    return scores


def _by_view(scores: Tensor, views: Sequence[str]) -> dict[str, Tensor]:
    groups: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(str(view), []).append(index)
    return {view: scores[indices] for view, indices in sorted(groups.items())}


def _statistic(scores: Tensor, method: str, quantile: float) -> float:
    if method == "max":
        return scores.max().item()
    if method == "median":
        return scores.quantile(0.5).item()
    if method == "quantile":
        if not 0 <= quantile <= 1:
            raise ValueError(f"scoring.threshold.quantile must be in [0, 1], got {quantile}")
        return scores.quantile(quantile).item()
    raise ValueError(f"scoring.threshold.method: unknown method {method!r}; choose one of {list(METHODS)}")


@dataclass(frozen=True)
class Threshold:
    """A fitted threshold: an image is anomalous when its score is strictly above its view's value.

    Attributes:
        kind: "global", "per_view" or "val_f1".
        method: how it was fitted, e.g. "max", "quantile:0.99", "median", "best_f1".
        values: view -> threshold; the single key "*" applies to every view.
    """

    kind: str
    method: str
    values: dict[str, float]

    def for_views(self, views: Sequence[str] | None, count: int) -> Tensor:
        """(count,) float64 thresholds for images of the given views (None: no views, a global threshold)."""
        if ALL_VIEWS in self.values:
            return torch.full((count,), self.values[ALL_VIEWS], dtype=torch.float64)
        if views is None:
            raise ValueError(f"a {self.kind} threshold needs the view of every image")
        missing = sorted({str(v) for v in views} - set(self.values))
        if missing:
            raise KeyError(f"no {self.kind} threshold fitted for view(s) {missing}: they had no training images")
        return torch.tensor([self.values[str(v)] for v in views], dtype=torch.float64)

    def predict(self, scores: Tensor | Sequence[float], views: Sequence[str] | None = None) -> Tensor:
        """(N,) bool: score > threshold of the image's view."""
        scores = _as_scores(scores, views)
        return scores > self.for_views(views, len(scores))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        return cls(
            kind=data["kind"], method=data["method"], values={str(k): float(v) for k, v in data["values"].items()}
        )


def fit_threshold(
    train_scores: Tensor | Sequence[float],
    views: Sequence[str] | None = None,
    by: str = "global",
    method: str = "max",
    quantile: float = 0.99,
) -> Threshold:
    """Fit a threshold on the scores of good images the detector was fitted to or held out from it
    (`scoring.threshold.fit_on`: train or val), never on test images.

    Args:
        train_scores: (N,) scores of the good reference images.
        views: (N,) view keys; needed for `by="view"`.
        by: "global" (one value for all views) or "view" (one per view); the evaluate stage fits both.
        method: "max" (thesis 4.3), "median" (figure 5.3) or "quantile".
        quantile: the quantile for `method="quantile"`.
    """
    scores = _as_scores(train_scores, views)
    label = f"quantile:{quantile}" if method == "quantile" else method
    if by == "global":
        return Threshold("global", label, {ALL_VIEWS: _statistic(scores, method, quantile)})
    if by == "view":
        if views is None:
            raise ValueError("a per-view threshold (by='view') needs the view of every reference image")
        values = {view: _statistic(group, method, quantile) for view, group in _by_view(scores, views).items()}
        return Threshold("per_view", label, values)
    raise ValueError(f"fit_threshold(by={by!r}): unknown choice; choose one of {list(BY)}")


def fit_f1_threshold(val_scores: Tensor | Sequence[float], val_labels: Tensor | Sequence[int]) -> Threshold:
    """The threshold with the best F1 on a validation set that holds defective images.

    The cut is placed halfway between two consecutive distinct scores, so it does not matter
    whether a score equal to it would count as anomalous. Use validation labels only: a threshold
    tuned on test labels overstates every test metric.
    """
    scores = _as_scores(val_scores)
    labels = _float64(val_labels)
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} validation scores but {len(labels)} labels")
    positives = labels.sum()
    if positives == 0:
        raise ValueError("the validation set has no defective images: a best-F1 threshold needs some")
    order = scores.argsort(descending=True)
    ranked, hits = scores[order], labels[order].cumsum(0)
    flagged = torch.arange(1, len(scores) + 1, dtype=torch.float64)  # images above the cut
    f1 = 2 * hits / (flagged + positives)
    # a cut can only fall between two different scores (or below the lowest)
    cut_allowed = torch.ones_like(ranked, dtype=torch.bool)
    cut_allowed[:-1] = ranked[:-1] > ranked[1:]
    best = int(f1.masked_fill(~cut_allowed, -1.0).argmax())
    if best + 1 < len(ranked):
        value = (ranked[best] + ranked[best + 1]).item() / 2
    else:
        value = torch.nextafter(ranked[best], ranked.new_tensor(-torch.inf)).item()
    return Threshold("val_f1", "best_f1", {ALL_VIEWS: value})


@dataclass(frozen=True)
class ViewStats:
    """Per-view mean and (population) std of training scores, for z-score normalisation (thesis 5.6.3)."""

    mean: dict[str, float]
    std: dict[str, float]

    def normalise(self, scores: Tensor | Sequence[float], views: Sequence[str]) -> Tensor:
        """(N,) float64 scores as (score - view mean) / view std, comparable across views."""
        scores = _as_scores(scores, views)
        missing = sorted({str(v) for v in views} - set(self.mean))
        if missing:
            raise KeyError(f"no training statistics for view(s) {missing}")
        mean = torch.tensor([self.mean[str(v)] for v in views], dtype=torch.float64)
        std = torch.tensor([self.std[str(v)] for v in views], dtype=torch.float64)
        return (scores - mean) / std


def fit_view_stats(train_scores: Tensor | Sequence[float], views: Sequence[str]) -> ViewStats:
    """Mean and population std of each view's training scores; each view needs two different scores."""
    scores = _as_scores(train_scores, views)
    mean, std = {}, {}
    for view, group in _by_view(scores, views).items():
        spread = group.std(correction=0).item()
        if not spread > 0:
            raise ValueError(
                f"view {view!r}: its training scores do not vary ({len(group)} image(s)), cannot normalise"
            )
        mean[view], std[view] = group.mean().item(), spread
    return ViewStats(mean, std)
