"""Batch statistical process control: the batch quality index nQI (thesis eq. 1.1), control limits, verdicts.

Our reading of eq. 1.1. For one view v (image angle) and batch b, C[b, v] is the total anomaly of
that one image (by default its anomaly map summed over the object mask, `image_score(..., "sum")`).
Over the reference batches of the same view, min_v is the smallest C, mu_v the mean and sd_v the
population standard deviation (the square root of sum (C - mu)^2 / n, n the number of reference
batches holding view v). Then

    nQI[b, v] = (C[b, v] - min_v) / sd_v.

The thesis writes min_C(X_C) and calls X_C the standard deviation; we read the numerator's term as the
minimum of C over batches, since the standard deviation is the denominator. With every batch as the
reference this is the thesis' descriptive index; for a verdict the reference is the good training
batches. As nQI is C shifted and scaled per view, the reference batches' nQI has mean
(mu_v - min_v) / sd_v and std 1, and the upper control limit is UCL_v = (mu_v - min_v) / sd_v + sigma
(a Shewhart limit: nQI > UCL_v exactly when C > mu_v + sigma * sd_v). A batch is out of control when
at least `min_views` of its views are above their limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

SPC_LIMITS = "spc_limits.json"  # the control limits, beside thresholds.json in a run's evaluation artifacts


def has_batches_of_views(table: pd.DataFrame) -> bool:
    """Whether a sample or score table's real images form batches of views (several views, at most one image per
    batch and view), which is what nQI needs; MVTec-layout data, one view of many images, does not."""
    real = table[table["domain"] == "real"]
    return real["view"].nunique() >= 2 and not real.duplicated(["batch", "view"]).any()


def totals_table(batches: Sequence[int], views: Sequence[str], totals: Sequence[float]) -> pd.DataFrame:
    """One row per image: columns batch, view, total (C); each (batch, view) may appear once."""
    table = pd.DataFrame({"batch": np.asarray(batches, dtype=int), "view": [str(v) for v in views], "total": totals})
    duplicated = table.duplicated(["batch", "view"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise ValueError(f"batch {row.batch}, view {row.view!r} has more than one image; nQI needs one per view")
    return table


def reference_batches(scores: pd.DataFrame) -> list[int]:
    """The batches control limits are fitted on: real batches outside the test set with no defective image.

    Args:
        scores: a score table with the columns domain, role, batch and label (the detect stage's).
    """
    real = scores[scores["domain"] == "real"]
    defective = set(real.loc[real["label"] == 1, "batch"])
    return sorted(int(b) for b in set(real.loc[real["role"] != "test", "batch"]) - defective)


@dataclass(frozen=True)
class ControlLimits:
    """Per-view reference statistics of C and the control-limit width, fitted on reference batches."""

    minimum: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    sigma: float
    reference_batches: list[int]

    def centre(self, view: str) -> float:
        """Mean nQI of the reference batches for this view."""
        return (self.mean[view] - self.minimum[view]) / self.std[view]

    def ucl(self, view: str) -> float:
        """Upper control limit on nQI for this view."""
        return self.centre(view) + self.sigma

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the evaluate stage saves the limits, and inspecting a new batch reads them back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlLimits:
        return cls(
            minimum={str(k): float(v) for k, v in data["minimum"].items()},
            mean={str(k): float(v) for k, v in data["mean"].items()},
            std={str(k): float(v) for k, v in data["std"].items()},
            sigma=float(data["sigma"]),
            reference_batches=[int(b) for b in data["reference_batches"]],
        )


def fit_control_limits(
    totals: pd.DataFrame, reference_batches: Sequence[int] | None = None, sigma: float = 3.0
) -> ControlLimits:
    """Per-view min, mean and population std of C over the reference batches (None: every batch).

    Args:
        totals: table from `totals_table` (columns batch, view, total).
        reference_batches: the good batches the limits come from (`reference_batches` of a score table).
        sigma: `scoring.spc.sigma`: width of the control limit in reference standard deviations.
    """
    batches = sorted(totals["batch"].unique()) if reference_batches is None else sorted(reference_batches)
    reference = totals[totals["batch"].isin(batches)]
    if reference.empty:
        raise ValueError(f"SPC reference batches {batches}: none of them is in the table")
    grouped = reference.groupby("view")["total"]
    minimum, mean, std = grouped.min(), grouped.mean(), grouped.std(ddof=0)
    flat = std[~(std > 0)]
    if len(flat):
        raise ValueError(
            f"view {flat.index[0]!r}: C does not vary over the reference batches {batches}; "
            "nQI needs at least two batches with different totals"
        )
    return ControlLimits(
        minimum=minimum.to_dict(),
        mean=mean.to_dict(),
        std=std.to_dict(),
        sigma=float(sigma),
        reference_batches=[int(b) for b in batches],
    )


def nqi(totals: pd.DataFrame, limits: ControlLimits) -> pd.DataFrame:
    """Add nQI, its view's UCL and whether it is above it: columns nqi, ucl, out_of_control."""
    missing = sorted(set(totals["view"]) - set(limits.std))
    if missing:
        raise KeyError(f"no control limits for view(s) {missing}: they are in no reference batch")
    table = totals.copy()
    views = table["view"]
    table["nqi"] = (table["total"] - views.map(limits.minimum)) / views.map(limits.std)
    table["ucl"] = views.map(limits.ucl)
    table["out_of_control"] = table["nqi"] > table["ucl"]
    return table


def batch_verdict(nqi_table: pd.DataFrame, min_views: int = 1) -> pd.DataFrame:
    """One row per batch: views, views_out, mean_nqi and out_of_control (views_out >= min_views)."""
    if min_views < 1:
        raise ValueError(f"scoring.spc.min_views must be >= 1, got {min_views}")
    verdict = nqi_table.groupby("batch").agg(
        views=("view", "size"), views_out=("out_of_control", "sum"), mean_nqi=("nqi", "mean")
    )
    verdict["views_out"] = verdict["views_out"].astype(int)
    verdict["out_of_control"] = verdict["views_out"] >= min_views
    return verdict.reset_index()
