"""`model=auto`: train each candidate detector, read its validation signal, keep the best; no test label is read.

The signal is the one every run reports (`polydefect.evaluation.pasted_validation`): held-out good images and
the same images with pasted anomalies. An object-centric candidate is tried only where the images have object
masks (`candidates.is_object_centric`). Each candidate is fitted in a nested MLflow run of its own (`select/<name>`)
and cached as the fit stage of a run with that model would be, so a later `model=<candidate>` run reuses it; only
the chosen one goes on to score the test images.
"""

from __future__ import annotations

import logging
import math

import mlflow
from omegaconf import DictConfig

from polydefect import tracking
from polydefect.allocator import return_free_memory
from polydefect.data.splits import DataSplits
from polydefect.pipeline.candidates import (
    SIGNALS,
    candidate_config,
    candidate_names,
    check_auto,
    has_object_masks,
    is_object_centric,
)
from polydefect.pipeline.detect import fit_detector
from polydefect.stage_cache import StageCache

log = logging.getLogger(__name__)


def choose_detector(
    cfg: DictConfig, splits: DataSplits, cache: StageCache, segment_key: str
) -> tuple[str, DictConfig, dict[str, float]]:
    """(chosen name, the run's config with its model and inputs, every candidate's signal). Ties go to the
    candidate listed first in `model.choose_from`."""
    check_auto(cfg)
    metric = str(cfg.model.get("metric", SIGNALS[0]))
    figures: dict[str, float] = {}
    masked = has_object_masks(splits.train)
    for name in candidate_names(cfg.model):
        if is_object_centric(cfg.model, name) and not masked:
            log.info("model=auto: %s skipped: it crops to the part, and the images have no object masks", name)
            continue
        with tracking.stage_run(f"select/{name}"):
            validation = fit_detector(candidate_config(cfg, name), splits, cache, segment_key).validation
            mlflow.log_metrics({f"val/{key}": value for key, value in validation.items()})
        figures[name] = validation.get(metric, math.nan)
        return_free_memory()  # the candidate, its samples and its training are gone
        log.info("model=auto: %s has validation %s %.4f", name, metric, figures[name])
    scored = {name: value for name, value in figures.items() if math.isfinite(value)}
    if not scored:
        raise RuntimeError(
            f"model=auto: no candidate has a validation {metric} (too few good validation images? raise "
            "data.val_fraction)"
        )
    chosen = max(scored, key=scored.__getitem__)
    log.info("model=auto: chose %s on validation %s", chosen, metric)
    return chosen, candidate_config(cfg, chosen), figures
