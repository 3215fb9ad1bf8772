"""Pixel-level segmentation metrics (thesis Table 4.1, figure 4.1): per view and overall, plus ROC curves and overlays.

Metrics are torchmetrics objects updated image by image. ROC and AUC come from `BinnedROC`, a torchmetrics
`Metric` that keeps two score histograms: memory stays constant in the number of pixels and an update is one
`bincount`, where torchmetrics' own binned ROC compares every pixel with every threshold (seconds per image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex, BinaryPrecision, BinaryRecall
from torchmetrics.utilities.compute import auc as trapezoid_auc

from polydefect.data.io import write_image_atomic


class BinnedROC(Metric):
    """Pixel ROC curve at `thresholds` evenly spaced score thresholds in [0, 1], from running histograms.

    A pixel counts as positive at threshold t when its score >= t, as in torchmetrics' binned curves.
    `compute` returns (fpr, tpr, thresholds) with thresholds descending, so fpr and tpr rise.
    """

    full_state_update = False

    def __init__(self, thresholds: int = 200) -> None:
        super().__init__()
        if thresholds < 2:
            raise ValueError(f"roc_thresholds must be at least 2, got {thresholds}")
        self.thresholds = int(thresholds)
        self.cuts = torch.linspace(0, 1, self.thresholds)  # ascending t_0 = 0 ... t_T-1 = 1
        self.add_state("positives", torch.zeros(self.thresholds, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("negatives", torch.zeros(self.thresholds, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, target: Tensor) -> None:
        """scores: (N,) float in [0, 1]; target: (N,) {0, 1}."""
        # bin k holds the scores in [t_k, t_k+1): the highest threshold each score still reaches
        bins = torch.bucketize(scores.float().clamp(0, 1), self.cuts.to(scores.device), right=True) - 1
        positive = target.bool()
        self.positives += torch.bincount(bins[positive], minlength=self.thresholds).double()
        self.negatives += torch.bincount(bins[~positive], minlength=self.thresholds).double()

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        # pixels at or above threshold k = sum of the bins >= k; walk from the highest threshold down
        tp = self.positives.flip(0).cumsum(0)
        fp = self.negatives.flip(0).cumsum(0)
        tpr = tp / tp[-1].clamp(min=1)
        fpr = fp / fp[-1].clamp(min=1)
        cuts = self.cuts.flip(0)
        zero = torch.zeros(1, dtype=torch.float64)  # the curve starts at (0, 0), above every score
        return torch.cat([zero, fpr]).float(), torch.cat([zero, tpr]).float(), torch.cat([cuts[:1] + 1, cuts])

    def auc(self) -> float:
        fpr, tpr, _ = self.compute()
        return float(trapezoid_auc(fpr, tpr))


class _PixelMetrics:
    """Running precision, recall, F1, IoU and (with scores) ROC AUC over the pixels of many images."""

    def __init__(self, roc_thresholds: int) -> None:
        self.hard = MetricCollection(
            {
                # validate_args=False: the checks run torch.unique over every pixel, 100x the metric's cost
                "precision": BinaryPrecision(validate_args=False),
                "recall": BinaryRecall(validate_args=False),
                "f1": BinaryF1Score(validate_args=False),
                "iou": BinaryJaccardIndex(validate_args=False),
            }
        )
        self.roc = BinnedROC(roc_thresholds)
        self.scored = False

    def update(self, pred: torch.Tensor, target: torch.Tensor, score: torch.Tensor | None) -> None:
        self.hard.update(pred, target)
        if score is not None:
            self.roc.update(score, target)
            self.scored = True

    def compute(self) -> dict[str, float]:
        values = {name: float(value) for name, value in self.hard.compute().items()}
        if self.scored:
            values["auc"] = self.roc.auc()
        return values


def _flat(array: np.ndarray, name: str, index: int, shape: tuple[int, ...]) -> torch.Tensor:
    if array.shape != shape:
        raise ValueError(f"image {index}: {name} has shape {array.shape}, its true mask {shape}")
    return torch.from_numpy(np.ascontiguousarray(array).ravel())


def segmentation_metrics(
    pred_masks: Sequence[np.ndarray],
    true_masks: Sequence[np.ndarray],
    scores: Sequence[np.ndarray] | None = None,
    views: Sequence[str] | None = None,
    roc_thresholds: int = 200,
) -> dict[str, Any]:
    """Pixel precision, recall, F1, IoU and ROC AUC of predicted object masks.

    Args:
        pred_masks: (H, W) bool per image.
        true_masks: (H, W) bool per image, same sizes.
        scores: (H, W) float object scores in [0, 1] per image, for the AUC; None leaves "auc" out.
        views: the view of each image; None gives no per-view figures.
        roc_thresholds: number of evenly spaced score thresholds for the AUC; 0/1 masks as scores give
            the exact AUC for any number.

    Returns:
        {"overall": {"precision", "recall", "f1", "iou"[, "auc"]: float}, "per_view": {view: {same keys}}}.
    """
    count = len(true_masks)
    if len(pred_masks) != count or (scores is not None and len(scores) != count):
        raise ValueError(f"{len(pred_masks)} predicted masks and {count} true masks (and scores) must match")
    if views is not None and len(views) != count:
        raise ValueError(f"{len(views)} views for {count} masks")
    overall = _PixelMetrics(roc_thresholds)
    per_view: dict[str, _PixelMetrics] = {}
    for i in range(count):
        shape = true_masks[i].shape
        target = _flat(true_masks[i].astype(np.uint8), "true mask", i, shape)
        pred = _flat(pred_masks[i].astype(np.uint8), "predicted mask", i, shape)
        score = None if scores is None else _flat(scores[i].astype(np.float32), "score map", i, shape)
        overall.update(pred, target, score)
        if views is not None:
            per_view.setdefault(str(views[i]), _PixelMetrics(roc_thresholds)).update(pred, target, score)
    return {"overall": overall.compute(), "per_view": {view: m.compute() for view, m in sorted(per_view.items())}}


def roc_curve(
    scores: Sequence[np.ndarray], true_masks: Sequence[np.ndarray], thresholds: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel ROC curve over many images (figure 4.1).

    Args:
        scores: (H, W) float object scores in [0, 1] per image.
        true_masks: (H, W) bool per image.
        thresholds: number of evenly spaced thresholds in [0, 1].

    Returns:
        fpr, tpr, thresholds: 1-D float arrays of one length.
    """
    roc = BinnedROC(thresholds)
    for i, (score, mask) in enumerate(zip(scores, true_masks, strict=True)):
        target = _flat(mask.astype(np.uint8), "true mask", i, mask.shape)
        roc.update(_flat(score.astype(np.float32), "score map", i, mask.shape), target)
    fpr, tpr, cuts = roc.compute()
    return fpr.numpy(), tpr.numpy(), cuts.numpy()


def save_roc_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> None:
    """Draw ROC curves, one per label (e.g. "U-Net mixed"), into a PNG with the AUC in the legend.

    Args:
        curves: label -> (fpr, tpr) from `roc_curve`.
        path: the PNG to write.
        title: figure title.
    """
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    for label, (fpr, tpr) in curves.items():
        order = np.argsort(fpr, kind="stable")
        auc = float(trapezoid_auc(torch.from_numpy(fpr[order]), torch.from_numpy(tpr[order])))
        axes.plot(fpr[order], tpr[order], label=f"{label} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    axes.legend(loc="lower right")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(path), bbox_inches="tight")


def overlay(image: np.ndarray, true_mask: np.ndarray, pred_mask: np.ndarray) -> np.ndarray:
    """Three panels side by side: the image, the true mask, the predicted mask coloured by its errors.

    The third panel tints true positives green, false positives red and false negatives blue.

    Args:
        image: (H, W) grey or (H, W, 3) BGR, uint8.
        true_mask: (H, W) bool.
        pred_mask: (H, W) bool.

    Returns:
        (H, 3W, 3) uint8 BGR.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    truth = np.where(true_mask[..., None], np.array([255, 255, 255], np.uint8), np.array([0, 0, 0], np.uint8))
    errors = base.copy()
    for region, colour in (
        (pred_mask & true_mask, (0, 200, 0)),  # BGR green
        (pred_mask & ~true_mask, (0, 0, 255)),  # red
        (~pred_mask & true_mask, (255, 0, 0)),  # blue
    ):
        errors[region] = (0.5 * errors[region] + 0.5 * np.array(colour)).astype(np.uint8)
    return np.hstack([base, truth.astype(np.uint8), errors])


def save_overlay(path: str | Path, image: np.ndarray, true_mask: np.ndarray, pred_mask: np.ndarray) -> None:
    """Write `overlay(image, true_mask, pred_mask)` as a PNG."""
    write_image_atomic(path, overlay(image, true_mask, pred_mask))
