"""The summary a run ends with: its headline figures, batch verdicts, output folder and how to open it in MLflow.

It is Markdown that reads as plain text, so the same text ends the console output and is the MLflow run's
description (padded pipe tables, a code block for the command).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

SEGMENT_METRICS = {"precision": "precision", "recall": "recall", "f1": "F1", "auc": "AUC", "iou": "IoU"}
MAX_BATCH_ROWS = 20  # keeps the summary short (and within MLflow's 8000-character tag) for any number of batches
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
VERDICTS = {True: "out of control", False: "in control"}


def figure(value: Any) -> str:
    """A metric to three decimals; `n/a` where it is missing or undefined (one class only: NaN)."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.3f}"


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A pipe table with its columns padded to one width, so it lines up on the console too."""
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(row) for row in rows), ""]


def threshold_kinds(metrics: Mapping[str, Any]) -> list[str]:
    """The thresholds evaluated (`global`, `per_view`, `val_f1`), in the order the evaluate stage fitted them."""
    parts = [key.split("/") for key in metrics]
    return [p[1] for p in parts if len(p) == 3 and p[0] == "test" and p[2] == "image_auroc"]


def image_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Image AUROC and F1 per threshold (per-view rows rank view-normalised scores), then the pixel figures."""
    kinds = threshold_kinds(metrics)
    if not kinds:
        return []
    rows = [[k, figure(metrics[f"test/{k}/image_auroc"]), figure(metrics.get(f"test/{k}/f1"))] for k in kinds]
    lines = table(["threshold", "image AUROC", "F1"], rows)
    if "test/pixel_auroc" in metrics:
        aupro = f", AUPRO {figure(metrics['test/aupro'])}" if "test/aupro" in metrics else ""
        lines += [f"Pixel AUROC {figure(metrics['test/pixel_auroc'])}{aupro}: test maps against the defect masks.", ""]
    return lines + validation_lines(metrics)


def validation_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The validation signal: held-out good images against their pasted-anomaly copies (no test label read)."""
    if "val/synthetic_image_auroc" not in metrics:
        return []
    pixel = metrics.get("val/synthetic_pixel_auroc")
    pixel_text = f", pixel AUROC {figure(pixel)}" if pixel is not None else ""
    return [
        f"Validation (good held-out images and pasted anomalies): image AUROC "
        f"{figure(metrics['val/synthetic_image_auroc'])}{pixel_text}.",
        "",
    ]


def segment_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The predicted object masks against the true ones on the test images."""
    keys = {name: f"segment/test_{key}" for key, name in SEGMENT_METRICS.items()}
    found = {name: metrics[key] for name, key in keys.items() if key in metrics}
    if not found:
        return []
    return table(["object masks", *found], [["test images", *(figure(v) for v in found.values())]])


def verdict_lines(verdicts: pd.DataFrame | None) -> list[str]:
    """The batch SPC verdicts (`evaluation/batch_verdict.csv`), out-of-control batches first where cut short."""
    if verdicts is None or verdicts.empty:
        return []
    shown = verdicts
    if len(verdicts) > MAX_BATCH_ROWS:
        shown = verdicts.sort_values(["out_of_control", "batch"], ascending=[False, True]).head(MAX_BATCH_ROWS)
    rows = [
        [str(r.batch), f"{r.views_out} of {r.views}", f"{r.mean_nqi:.2f}", VERDICTS[bool(r.out_of_control)]]
        for r in shown.itertuples()
    ]
    lines = table(["batch", "views out of control", "mean nQI", "SPC verdict"], rows)
    if len(shown) < len(verdicts):
        note = f"The first {len(shown)} of {len(verdicts)} batches, out-of-control ones first"
        lines += [f"{note}; all of them in `evaluation/batch_verdict.csv`.", ""]
    return lines


def mlflow_lines(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """How to open the run: its page on a tracking server, or the `mlflow ui` command serving this store."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow run `{run_id}`: {tracking_uri.rstrip('/')}/{page}"]
    command = f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
    return [f"MLflow run `{run_id}`, to open it:", "", f"    {command}", "", f"then {UI_ADDRESS}/{page}"]


def run_summary(
    name: str,
    metrics: Mapping[str, Any],
    verdicts: pd.DataFrame | None,
    output_dir: Path,
    tracking_uri: str,
    experiment_id: str,
    run_id: str,
) -> str:
    """The whole summary of one pipeline run.

    Args:
        name: the run's name (`cfg.name`).
        metrics: the stages' flat metrics (`test/<threshold>/<metric>`, `test/pixel_auroc`, `segment/test_<metric>`).
        verdicts: the evaluate stage's batch verdicts (columns batch, views, views_out, mean_nqi, out_of_control).
        output_dir: the run's output folder.
        tracking_uri: the MLflow store, as absolute as it can be made (`tracking.absolute_uri`).
        experiment_id: the run's MLflow experiment.
        run_id: the parent MLflow run.
    """
    lines = [f"## polydefect run `{name}`", ""]
    lines += image_lines(metrics) + segment_lines(metrics) + verdict_lines(verdicts)
    lines += [f"Outputs: `{output_dir}`", ""]
    return "\n".join(lines + mlflow_lines(tracking_uri, experiment_id, run_id))
