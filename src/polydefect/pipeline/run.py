"""One pipeline run: the stages in `cfg.stages`, one parent MLflow run with a nested run per stage."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from polydefect import tracking
from polydefect.allocator import return_free_memory, reuse_freed_memory
from polydefect.pipeline.candidates import is_auto
from polydefect.pipeline.data import log_data, prepare_data
from polydefect.pipeline.detect import detect
from polydefect.pipeline.evaluate import BATCH_VERDICT, evaluate
from polydefect.pipeline.segment import SegmentResult, segment
from polydefect.pipeline.selection import choose_detector
from polydefect.reporting.summary import run_summary
from polydefect.stage_cache import StageCache

log = logging.getLogger(__name__)
STAGES = ("data", "segment", "detect", "evaluate")
RUN_FILE = "mlflow_run.json"  # in the run's output folder: its MLflow run id and store
EVALUATION = "evaluation"  # the evaluate stage's folder in the run's output folder


def hydra_choices() -> dict[str, str]:
    """The config-group choices of this run (model=cae, data=mixed, ...), or {} outside a Hydra app."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = {"experiment": cfg.name, "variant": cfg.data.variant, "seed": str(cfg.seed)}
    tags["dataset"] = Path(str(cfg.data.root)).name  # the data folder's name: the tables' rows per data set
    tags.update({f"choice.{k}": v for k, v in hydra_choices().items()})
    return tags


def objective(metrics: dict[str, float]) -> float | None:
    """The value a sweep optimises: test image AUROC with per-view normalisation where there is one."""
    for key in ("test/per_view/image_auroc", "test/global/image_auroc", "segment/test_f1"):
        if key in metrics and math.isfinite(metrics[key]):
            return metrics[key]
    return None


def batch_verdicts(metrics: dict[str, Any], output_dir: Path) -> pd.DataFrame | None:
    """The batch SPC verdicts this run's evaluate stage wrote, or None where it ran no SPC."""
    if "spc/good_batches_flagged" not in metrics:
        return None
    return pd.read_csv(output_dir / EVALUATION / BATCH_VERDICT)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stages; returns their metrics plus `run_id`, `objective` and `summary` (the text the
    console output ends with, also the MLflow run's description)."""
    unknown = sorted(set(cfg.stages) - set(STAGES))
    if unknown:
        raise ValueError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    reuse_freed_memory(cfg.reuse_freed_memory)
    splits, roots = prepare_data(cfg)  # bad input stops the run here, before anything is written
    cache = StageCache(cfg.paths.cache_dir)
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {}
    with tracking.pipeline_run(cfg, run_name=cfg.name, tags=run_tags(cfg)) as parent:
        log.info("MLflow run %s (%s)", parent.info.run_id, cfg.mlflow.tracking_uri)
        output_dir.mkdir(parents=True, exist_ok=True)  # lets `polydefect.inspect run=<this folder>` find the run
        run_file = {"run_id": parent.info.run_id, "tracking_uri": tracking.absolute_uri(cfg.mlflow.tracking_uri)}
        (output_dir / RUN_FILE).write_text(json.dumps(run_file, indent=2))
        with tracking.stage_run("data"):
            log_data(splits, roots)
        masks = SegmentResult(key="none")
        if "segment" in cfg.stages:
            with tracking.stage_run("segment"):
                masks = segment(cfg, splits, cache)
            metrics.update({f"segment/test_{k}": v for k, v in masks.metrics.items()})
            splits = masks.attach(splits)
        if "detect" in cfg.stages:
            if is_auto(cfg.model):
                with tracking.stage_run("select"):
                    chosen, cfg, figures = choose_detector(cfg, splits, cache, masks.key)
                tracking.log_choice(cfg, chosen, figures)
            with tracking.stage_run("detect"):
                detection = detect(cfg, splits, cache, masks.key)
            return_free_memory()  # the detector and its samples are gone; evaluation reads the archives
            metrics.update({f"val/{k}": v for k, v in detection.validation.items()})
            if "evaluate" in cfg.stages:
                with tracking.stage_run("evaluate"):
                    metrics.update(evaluate(cfg, detection, output_dir / EVALUATION))
        tracking.log_final_metrics(metrics)
        summary = run_summary(
            cfg.name,
            metrics,
            batch_verdicts(metrics, output_dir),
            output_dir.resolve(),
            run_file["tracking_uri"],
            parent.info.experiment_id,
            parent.info.run_id,
        )
        tracking.set_description(summary)
        metrics["run_id"] = parent.info.run_id
    metrics["objective"] = objective(metrics)
    metrics["summary"] = summary
    return metrics
