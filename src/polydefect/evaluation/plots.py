"""Figures of a detector's results (thesis figures 4.3-4.8) and SPC control charts, each a matplotlib Figure.

Figures are built without pyplot (no global state, no display needed); `save_figure` writes a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve
from torch import Tensor

from polydefect.scoring.spc import ControlLimits
from polydefect.scoring.thresholds import Threshold

ArrayLike = Tensor | np.ndarray | Sequence[float]
Curves = Mapping[str, tuple[ArrayLike, ArrayLike]]  # name -> (scores, labels)


def _np(values: ArrayLike) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)


def _picture(image: Tensor) -> np.ndarray:
    """(1, H, W) -> (H, W) grey; (3, H, W) -> (H, W, 3) RGB, as imshow draws them."""
    return _np(image[0]) if image.shape[0] == 1 else _np(image.permute(1, 2, 0))


def _channel_mean(picture: np.ndarray) -> np.ndarray:
    return picture.mean(axis=2) if picture.ndim == 3 else picture


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def roc_figure(curves: Curves) -> Figure:
    """ROC curves of one or more score sets, AUROC in the legend (thesis figure 4.6)."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(_np(labels), _np(scores))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc(fpr, tpr):.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return fig


def pr_figure(curves: Curves) -> Figure:
    """Precision-recall curves, average precision (AUPRC) in the legend; the dotted line is chance."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for name, (scores, labels) in curves.items():
        labels, scores = _np(labels), _np(scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", label=f"{name} (AUPRC {average_precision_score(labels, scores):.2f})")
        ax.axhline(labels.mean(), color="0.6", linestyle=":", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return fig


def f1_threshold_figure(scores: ArrayLike, labels: ArrayLike, marks: Mapping[str, float] | None = None) -> Figure:
    """F1, precision and recall against the threshold (thesis figure 4.7), with optional named thresholds."""
    precision, recall, thresholds = precision_recall_curve(_np(labels), _np(scores))
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(thresholds, f1, label="F1")
    ax.plot(thresholds, precision, label="precision", linestyle="--")
    ax.plot(thresholds, recall, label="recall", linestyle="--")
    for name, value in (marks or {}).items():
        ax.axvline(value, color="0.3", linestyle=":", linewidth=0.8)
        ax.annotate(name, (value, 1.0), rotation=90, va="top", ha="right", fontsize=8)
    ax.set(xlabel="threshold on the image score", ylabel="value", ylim=(0, 1.05))
    ax.legend(loc="best")
    return fig


def score_distribution_figure(
    scores: ArrayLike, labels: ArrayLike, views: Sequence[str], threshold: Threshold | None = None
) -> Figure:
    """Image scores by view, good and defective apart, with each view's threshold (figures 4.8, 5.3)."""
    scores, labels = _np(scores), _np(labels).astype(bool)
    names = sorted({str(v) for v in views})
    position = {name: i for i, name in enumerate(names)}
    x = np.array([position[str(v)] for v in views], dtype=float)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(x))
    fig = Figure(figsize=(max(6, 0.45 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(x[~labels] + jitter[~labels] - 0.12, scores[~labels], s=12, color="tab:blue", label="good")
    ax.scatter(x[labels] + jitter[labels] + 0.12, scores[labels], s=12, color="tab:red", marker="^", label="defect")
    if threshold is not None:
        limits = threshold.for_views(names, len(names)).numpy()
        ax.hlines(limits, np.arange(len(names)) - 0.4, np.arange(len(names)) + 0.4, color="0.2", label="threshold")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set(xlabel="view", ylabel="image score")
    ax.legend(loc="best")
    return fig


def reconstruction_panels(
    images: Tensor, reconstructions: Tensor, anomaly_maps: Tensor, threshold: float | None = None
) -> Figure:
    """Per image: input, reconstruction, difference, anomaly map over the input (figures 4.3-4.5).

    Args:
        images, reconstructions: (B, C, H, W) in [0, 1], grey or RGB (a grey model's reconstruction of a colour
            input has one channel; the difference is taken on the channel means).
        anomaly_maps: (B, 1, H, W).
        threshold: pixel level above which the map is drawn in red on the input; None draws the map
            itself as a heat map over the input.
    """
    rows = len(images)
    fig = Figure(figsize=(12, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, 4, squeeze=False)
    for row in range(rows):
        image, recon = _picture(images[row]), _picture(reconstructions[row])
        amap = _np(anomaly_maps[row, 0])
        axes[row, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].imshow(recon, cmap="gray", vmin=0, vmax=1)
        axes[row, 2].imshow(np.abs(_channel_mean(image) - _channel_mean(recon)), cmap="magma")
        axes[row, 3].imshow(image, cmap="gray", vmin=0, vmax=1)
        if threshold is None:
            axes[row, 3].imshow(amap, cmap="jet", alpha=0.45)
        else:
            overlay = np.zeros((*amap.shape, 4))
            overlay[amap > threshold] = (1.0, 0.0, 0.0, 0.8)
            axes[row, 3].imshow(overlay)
    for ax, title in zip(axes[0], ("input", "reconstruction", "difference", "anomaly map"), strict=True):
        ax.set_title(title)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def defect_gallery(
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    defects: Sequence[np.ndarray],
    titles: Sequence[str],
    per_row: int = 2,
) -> Figure:
    """Examples side by side, `per_row` to a row: the image with its true defect outlined, then the anomaly
    map over it with the same outline. All maps share one colour scale (1st-99.9th percentile of their
    values), so a hot region means the same anomaly level in every panel.

    Args:
        images, maps, defects: (H, W) grey or (H, W, 3) RGB image in [0, 1], anomaly map and boolean defect
            mask per example.
        titles: one per example (e.g. the defect type).
        per_row: examples per row of the figure.
    """
    rows = -(-len(images) // per_row)
    fig = Figure(figsize=(6 * per_row, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    low, high = np.percentile(np.concatenate([np.ravel(m) for m in maps]), [1.0, 99.9])
    for ax in axes.flat:
        ax.set_axis_off()
    for index, (image, amap, defect, title) in enumerate(zip(images, maps, defects, titles, strict=True)):
        pair = axes[index // per_row, 2 * (index % per_row) : 2 * (index % per_row) + 2]
        for column, ax in enumerate(pair):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if column == 1:
                ax.imshow(amap, cmap="jet", alpha=0.5, vmin=low, vmax=high)
            if defect.any():
                ax.contour(defect, levels=[0.5], colors="white" if column else "red", linewidths=1)
        pair[0].set_title(f"{title}: input, true defect")
        pair[1].set_title("anomaly map")
    return fig


def control_charts_figure(nqi_table: pd.DataFrame, limits: ControlLimits, columns: int = 6) -> Figure:
    """One control chart per view (nQI by batch, centre line, UCL, points out of control in red)."""
    views = sorted(nqi_table["view"].unique())
    columns = min(columns, len(views))
    rows = math.ceil(len(views) / columns)
    fig = Figure(figsize=(3.2 * columns, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True)
    for ax, view in zip(axes.flat, views, strict=False):
        points = nqi_table[nqi_table["view"] == view].sort_values("batch")
        ax.plot(points["batch"], points["nqi"], color="0.6", linewidth=0.8)
        inside = points[~points["out_of_control"]]
        outside = points[points["out_of_control"]]
        ax.scatter(inside["batch"], inside["nqi"], s=14, color="tab:blue")
        ax.scatter(outside["batch"], outside["nqi"], s=18, color="tab:red")
        ax.axhline(limits.centre(view), color="0.3", linewidth=0.8)
        ax.axhline(limits.ucl(view), color="tab:red", linestyle="--", linewidth=0.8)
        ax.set_title(view, fontsize=9)
    for ax in list(axes.flat)[len(views) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("batch")
    for ax in axes[:, 0]:
        ax.set_ylabel("nQI")
    fig.suptitle(f"nQI control charts (UCL = centre + {limits.sigma:g} sd of reference batches)")
    return fig
