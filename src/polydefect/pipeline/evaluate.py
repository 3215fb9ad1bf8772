"""Evaluate stage: thresholds from training (or validation) scores only, image and pixel metrics on the test
set, batch SPC, and the thesis' plots (4.3-4.8, 5.3), all logged to MLflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from polydefect.data.sample import load_sample
from polydefect.evaluation import plots
from polydefect.evaluation.metrics import evaluate as compute_metrics
from polydefect.pipeline.artifacts import stacked_arrays
from polydefect.pipeline.detect import DetectResult
from polydefect.scoring import spc
from polydefect.scoring.thresholds import (
    REFERENCE_SPLITS,
    Threshold,
    fit_f1_threshold,
    fit_threshold,
    fit_view_stats,
)

log = logging.getLogger(__name__)
IMAGE_METRICS = ("image_auroc", "image_auprc", "f1", "f2", "precision", "recall")
BATCH_VERDICT = "batch_verdict.csv"  # one row per batch: views, views_out, mean_nqi, out_of_control


def good_scores(scores: pd.DataFrame, role: str) -> pd.DataFrame:
    """The score rows of the good images of `role` (`scoring.threshold.fit_on`): what the thresholds and the
    per-view statistics are fitted on."""
    return scores[(scores["role"] == role) & (scores["label"] == 0)]


def fit_thresholds(cfg: DictConfig, scores: pd.DataFrame) -> dict[str, Threshold]:
    """Global and per-view thresholds from good training (or, with `scoring.threshold.fit_on=val`, validation)
    images; best-F1 where validation holds defects."""
    rule = cfg.scoring.threshold
    if rule.fit_on not in REFERENCE_SPLITS:
        raise ValueError(f"scoring.threshold.fit_on must be one of {list(REFERENCE_SPLITS)}, got {rule.fit_on!r}")
    reference = good_scores(scores, rule.fit_on)
    if reference.empty:
        raise ValueError(f"scoring.threshold.fit_on={rule.fit_on}: the {rule.fit_on} split has no good images")
    val = scores[scores["role"] == "val"]
    test = scores[scores["role"] == "test"]
    reference_scores = reference["score"].to_numpy()
    fitted = {"global": fit_threshold(reference_scores, by="global", method=rule.method, quantile=rule.quantile)}
    if set(test["view"]) <= set(reference["view"]):
        fitted["per_view"] = fit_threshold(
            reference_scores, list(reference["view"]), by="view", method=rule.method, quantile=rule.quantile
        )
    else:
        log.info("per-view thresholds skipped: some test views have no %s images", rule.fit_on)
    if val["label"].nunique() == 2:
        fitted["val_f1"] = fit_f1_threshold(val["score"].to_numpy(), val["label"].to_numpy())
    return fitted


def _normalised_test_scores(scores: pd.DataFrame, reference_role: str) -> np.ndarray | None:
    """Test scores as z-scores of their view's good reference scores (thesis 5.6.3: the training images; the
    validation images with `scoring.threshold.fit_on=val`), or None if not possible."""
    reference = good_scores(scores, reference_role)
    test = scores[scores["role"] == "test"]
    try:
        stats = fit_view_stats(reference["score"].to_numpy(), list(reference["view"]))
        return stats.normalise(test["score"].to_numpy(), list(test["view"])).numpy()
    except (KeyError, ValueError) as error:
        log.info("per-view normalisation skipped: %s", error)
        return None


def image_metrics(
    scores: pd.DataFrame, thresholds: dict[str, Threshold], normalised: np.ndarray | None
) -> pd.DataFrame:
    """One row per threshold kind: image AUROC/AUPRC (per-view rows rank view-normalised scores) and the
    F1, F2, precision and recall of the threshold's verdicts."""
    test = scores[scores["role"] == "test"]
    labels = torch.tensor(test["label"].to_numpy())
    rows = []
    for kind, threshold in thresholds.items():
        ranking = normalised if kind == "per_view" and normalised is not None else test["score"].to_numpy()
        predictions = threshold.predict(test["score"].to_numpy(), list(test["view"]))
        records = {"score": torch.tensor(ranking), "label": labels, "prediction": predictions}
        rows.append({"threshold": kind, **compute_metrics(records, IMAGE_METRICS)})
    return pd.DataFrame(rows)


def _pixel_records(detection: DetectResult) -> dict[str, torch.Tensor] | None:
    """Test maps (in their archived float16: the ranks every pixel metric reads are those of the archive), defect
    masks and object masks as (N, 1, H, W) tensors; None without pixel annotations or with maps of different sizes.
    A defective image without a defect mask file has no pixel truth: its object mask is emptied, which leaves its
    pixels out of every pixel metric instead of counting them as good."""
    test = detection.scores[detection.scores["role"] == "test"].reset_index(drop=True)
    rows = list(test["row_id"])
    if not rows:
        return None
    # each defect mask has its map's size: the masks tell first, and cheaply, whether there is anything to stack
    defects = stacked_arrays(detection.folder / "test_defect_masks.npz", rows, bool)
    if defects is None:
        log.info("pixel metrics skipped: the test maps have different sizes")
        return None
    if not defects.any():
        return None
    maps = stacked_arrays(detection.folder / "test_maps.npz", rows, np.float16)
    objects = stacked_arrays(detection.folder / "test_object_masks.npz", rows, bool)
    unmarked = np.flatnonzero(((test["label"] == 1) & test["defect_mask_path"].isna()).to_numpy())
    if len(unmarked):
        log.warning(
            "%d defective test image(s) have no defect mask (first: %s): left out of the pixel metrics",
            len(unmarked),
            test.loc[unmarked[0], "image_path"],
        )
        objects[unmarked] = False
    return {
        name: torch.from_numpy(array)
        for name, array in (("anomaly_map", maps), ("defect_mask", defects), ("object_mask", objects))
    }


def pixel_metrics(records: dict[str, torch.Tensor] | None) -> dict[str, float]:
    """Pixel AUROC and AUPRO of the test maps against the defect masks, inside the object."""
    return {} if records is None else compute_metrics(records, ("pixel_auroc", "aupro"))


def defect_type_metrics(scores: pd.DataFrame, records: dict[str, torch.Tensor] | None) -> pd.DataFrame:
    """Per defect type: image AUROC of its images against the good test images, and pixel AUROC over the
    maps of both (the good images' pixels are the negatives every type shares). Empty with one type."""
    test = scores[scores["role"] == "test"].reset_index(drop=True)
    types = sorted(set(test.loc[test["label"] == 1, "defect_type"].astype(str)))
    good = test["label"] == 0
    if len(types) < 2 or not good.any():
        return pd.DataFrame()
    rows = []
    for name in types:
        chosen = good | (test["defect_type"].astype(str) == name)
        records_of_type = {"score": torch.tensor(test.loc[chosen, "score"].to_numpy())}
        records_of_type["label"] = torch.tensor(test.loc[chosen, "label"].to_numpy())
        row = {
            "defect_type": name,
            "images": int((chosen & ~good).sum()),
            **compute_metrics(records_of_type, ("image_auroc",)),
        }
        if records is not None:
            index = torch.from_numpy(np.flatnonzero(chosen.to_numpy()))
            row.update(compute_metrics({k: v[index] for k, v in records.items()}, ("pixel_auroc",)))
        rows.append(row)
    return pd.DataFrame(rows)


def batch_spc(cfg: DictConfig, scores: pd.DataFrame, folder: Path) -> pd.DataFrame | None:
    """nQI per batch and view (eq. 1.1) with limits from the good real training batches, saved as
    `spc_limits.json` for inspecting new batches; None for data without batches of views (MVTec)."""
    if not spc.has_batches_of_views(scores):
        return None
    real = scores[scores["domain"] == "real"]
    totals = spc.totals_table(real["batch"].to_numpy(), list(real["view"]), real["map_sum"].to_numpy())
    reference = spc.reference_batches(scores)
    if len(reference) < 2:
        return None
    limits = spc.fit_control_limits(totals, reference, sigma=cfg.scoring.spc.sigma)
    (folder / spc.SPC_LIMITS).write_text(json.dumps(limits.to_dict(), indent=2))
    table = spc.nqi(totals, limits)
    table.to_csv(folder / "nqi.csv", index=False)
    spc.batch_verdict(table, cfg.scoring.spc.min_views).to_csv(folder / BATCH_VERDICT, index=False)
    plots.save_figure(plots.control_charts_figure(table, limits), folder / "control_charts.png")
    return table


def draw_plots(
    scores: pd.DataFrame,
    thresholds: dict[str, Threshold],
    normalised: np.ndarray | None,
    detection: DetectResult,
    folder: Path,
) -> None:
    test = scores[scores["role"] == "test"]
    if test["label"].nunique() == 2:
        curves = {"raw score": (test["score"].to_numpy(), test["label"].to_numpy())}
        if normalised is not None:
            curves["view-normalised"] = (normalised, test["label"].to_numpy())
        plots.save_figure(plots.roc_figure(curves), folder / "roc.png")
        plots.save_figure(plots.pr_figure(curves), folder / "pr.png")
        marks = {k: t.values["*"] for k, t in thresholds.items() if "*" in t.values}
        plots.save_figure(
            plots.f1_threshold_figure(test["score"].to_numpy(), test["label"].to_numpy(), marks),
            folder / "f1_threshold.png",
        )
    figure = plots.score_distribution_figure(
        test["score"].to_numpy(), test["label"].to_numpy(), list(test["view"]), thresholds.get("per_view")
    )
    plots.save_figure(figure, folder / "score_by_view.png")
    panels = detection.folder / "panels.npz"
    if panels.is_file():
        with np.load(panels) as data:
            figure = plots.reconstruction_panels(
                torch.from_numpy(data["images"]),
                torch.from_numpy(data["reconstructions"]),
                torch.from_numpy(data["maps"]),
            )
        plots.save_figure(figure, folder / "panels.png")


def draw_defect_gallery(
    cfg: DictConfig, scores: pd.DataFrame, records: dict[str, torch.Tensor] | None, folder: Path, per_type: int = 2
) -> None:
    """`defect_maps.png`: the first `per_type` test images of each defect type with their maps and true
    outlines (the first ones, not the best-scored, so the figure is not a selection of successes)."""
    if records is None:
        return
    test = scores[scores["role"] == "test"].reset_index(drop=True)
    defective = test[test["label"] == 1]
    chosen = [i for _, group in defective.groupby("defect_type", sort=True) for i in group.index[:per_type]]
    if not chosen:
        return
    images = [load_sample(test.loc[i], cfg.preprocess).image.astype(np.float32) / 255.0 for i in chosen]
    maps = [records["anomaly_map"][i, 0].numpy().astype(np.float32) for i in chosen]
    defects = [records["defect_mask"][i, 0].numpy() for i in chosen]
    titles = [str(test.loc[i, "defect_type"]) for i in chosen]
    plots.save_figure(plots.defect_gallery(images, maps, defects, titles, per_type), folder / "defect_maps.png")


def evaluate(cfg: DictConfig, detection: DetectResult, folder: Path) -> dict[str, float]:
    """Run the evaluation into `folder` (the run's output folder) and log everything to MLflow.

    Returns:
        flat metrics `test/<threshold>/<metric>`, `test/pixel_auroc`, `test/aupro`, `spc/...`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scores = detection.scores
    thresholds = fit_thresholds(cfg, scores)
    (folder / "thresholds.json").write_text(json.dumps({k: t.to_dict() for k, t in thresholds.items()}, indent=2))
    normalised = _normalised_test_scores(scores, cfg.scoring.threshold.fit_on)
    table = image_metrics(scores, thresholds, normalised)
    table.to_csv(folder / "image_metrics.csv", index=False)
    metrics = {
        f"test/{row['threshold']}/{name}": float(row[name])
        for row in table.to_dict("records")
        for name in IMAGE_METRICS
        if name in row
    }
    records = _pixel_records(detection)
    metrics.update({f"test/{k}": v for k, v in pixel_metrics(records).items()})
    by_type = defect_type_metrics(scores, records)
    if not by_type.empty:
        by_type.to_csv(folder / "defect_types.csv", index=False)
        for row in by_type.to_dict("records"):
            metrics.update({f"test/type/{row['defect_type']}/{k}": v for k, v in row.items() if k != "defect_type"})
    nqi_table = batch_spc(cfg, scores, folder)
    if nqi_table is not None:
        verdict = pd.read_csv(folder / BATCH_VERDICT)
        defective = set(scores[(scores["label"] == 1) & (scores["domain"] == "real")]["batch"])
        flagged = set(verdict[verdict["out_of_control"]]["batch"])
        metrics["spc/defective_batches_flagged"] = float(len(defective & flagged))
        metrics["spc/good_batches_flagged"] = float(len(flagged - defective))
    draw_plots(scores, thresholds, normalised, detection, folder)
    draw_defect_gallery(cfg, scores, records, folder)
    if mlflow.active_run():
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for path in sorted(folder.glob("*.png")) + sorted(folder.glob("*.csv")) + sorted(folder.glob("*.json")):
            mlflow.log_artifact(str(path), "evaluation")
    return metrics
