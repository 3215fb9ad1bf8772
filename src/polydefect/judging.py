"""Judging new images with a trained pipeline's parts: its segmenter's masks, its scoring, its thresholds and its
fixed SPC control limits. `polydefect.inspect` (PyTorch weights from MLflow) and inspection bundles (ONNX graphs,
`polydefect.export.runtime`) both judge here; nothing in it trains or imports Lightning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from polydefect.data.io import read_image, write_image_atomic
from polydefect.data.preprocess import to_grey_uint8
from polydefect.data.sample import LazySamples
from polydefect.scoring import spc
from polydefect.scoring.location import LOCATION_FILE, LocationNormaliser
from polydefect.scoring.spc import SPC_LIMITS
from polydefect.scoring.stream import score_stream
from polydefect.scoring.thresholds import Threshold
from polydefect.segmentation.base import Segmenter, build_segmenter
from polydefect.segmentation.part_finder import part_finder_skip

if TYPE_CHECKING:  # judging runs any `Detector`: a task's weights or an exported graph
    from polydefect.tasks.base import Detector

log = logging.getLogger(__name__)


@dataclass
class TrainedPipeline:
    """A finished run's parts, downloaded into `folder`."""

    run_id: str
    cfg: DictConfig
    folder: Path  # config.yaml, model.safetensors, thresholds.json, maybe spc_limits.json and unet.safetensors
    thresholds: dict[str, Threshold]
    limits: spc.ControlLimits | None  # None where the run had no batches of views to fit them on


def read_pipeline(run_id: str, folder: Path) -> TrainedPipeline:
    """The run's parts from a folder that holds them (downloaded, or an inspection bundle)."""
    thresholds = json.loads((folder / "thresholds.json").read_text())
    limits = folder / SPC_LIMITS
    return TrainedPipeline(
        run_id=run_id,
        cfg=OmegaConf.load(folder / "config.yaml"),
        folder=folder,
        thresholds={kind: Threshold.from_dict(t) for kind, t in thresholds.items()},
        limits=spc.ControlLimits.from_dict(json.loads(limits.read_text())) if limits.is_file() else None,
    )


def run_segmenter(pipeline: TrainedPipeline) -> Segmenter | None:
    """The run's segmenter with its trained weights (a U-Net's), or None where the run used the data's masks."""
    if not pipeline.cfg.segmenter:
        return None
    segmenter = build_segmenter(pipeline.cfg.segmenter)
    if hasattr(segmenter, "load"):
        segmenter.load(pipeline.folder / "unet.safetensors")
    return segmenter


def object_masks(segmenter: Segmenter | None, table: pd.DataFrame, folder: Path) -> list[str | None]:
    """The segmenter applied to every image (mask PNGs in `folder`), or None: the data's own masks."""
    if segmenter is None:
        return [None] * len(table)
    skip = part_finder_skip(segmenter, table)  # decided on the new folder as the run decided on its own
    if skip is not None:
        log.info("segmenter: %s", skip)
        return [None] * len(table)
    paths = []
    for index, image_path in enumerate(table["image_path"]):
        mask = segmenter.predict_batch([to_grey_uint8(read_image(image_path))])[0]
        path = folder / f"{index:06d}.png"
        write_image_atomic(path, mask.astype(np.uint8) * 255)
        paths.append(str(path))
    return paths


def verdict_threshold(pipeline: TrainedPipeline, wanted: str, views: list[str]) -> Threshold:
    """The wanted threshold if the run fitted one covering these views, else the global one."""
    threshold = pipeline.thresholds.get(wanted)
    if threshold is not None and ("*" in threshold.values or set(views) <= set(threshold.values)):
        return threshold
    log.info("threshold=%s not usable for these views: verdicts use the global threshold", wanted)
    return pipeline.thresholds["global"]


def batch_nqi(pipeline: TrainedPipeline, scored: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """nQI per new image with the control limits the run saved (they stay fixed from training)."""
    limits = pipeline.limits
    if limits is None:
        return None, "nQI not computed: the run fitted no control limits (it had no batches of views)"
    try:
        table = spc.nqi(spc.totals_table(scored["batch"], list(scored["view"]), scored["map_sum"]), limits)
    except (KeyError, ValueError) as error:
        return None, f"nQI not computed: {error}"
    return table, f"nQI limits from the run's good training batches {limits.reference_batches}, sigma {limits.sigma}"


def run_normaliser(pipeline: TrainedPipeline) -> LocationNormaliser | None:
    """The run's per-location calibration where it scored with one (`scoring.normalise=location`, or `auto` where
    the validation signal chose it: then the run logged it)."""
    mode = pipeline.cfg.scoring.get("normalise", "none")
    if mode == "none":
        return None
    path = pipeline.folder / LOCATION_FILE
    if not path.is_file():
        if mode == "auto":
            return None
        raise FileNotFoundError(
            f"run={pipeline.run_id}: scored with scoring.normalise=location, but has no model/{LOCATION_FILE}"
        )
    return LocationNormaliser.load(path)


@dataclass
class Judgement:
    """A table of new images scored and judged by a trained pipeline."""

    scored: pd.DataFrame  # per image: image_path, batch, view, label, score, threshold, anomalous, map_sum (+ nQI)
    batches: pd.DataFrame | None  # per batch: the SPC verdict (`spc.batch_verdict`), None without control limits
    notes: list[str]
    threshold: Threshold
    samples: LazySamples  # the images as the detector saw them (for overlays)
    top: dict[int, tuple[np.ndarray, np.ndarray]]  # the `keep` highest-scored images' (map, object mask)
    vmax: float  # the maps' shared colour scale


def judge(
    pipeline: TrainedPipeline,
    detector: Detector,
    segmenter: Segmenter | None,
    table: pd.DataFrame,
    threshold_kind: str,
    keep: int,
    masks: Path,
) -> Judgement:
    """Score every image of `table` (object masks from `segmenter` written into `masks`) with the run's
    preprocessing, scoring and calibration, and judge it with its threshold and fixed control limits."""
    table = table.assign(predicted_mask_path=object_masks(segmenter, table, masks))
    samples = LazySamples(table, pipeline.cfg.preprocess)
    scores, sums, top, vmax = score_stream(detector, samples, pipeline.cfg, keep, run_normaliser(pipeline))
    views = [str(v) for v in table["view"]]
    threshold = verdict_threshold(pipeline, threshold_kind, views)
    scored = table[["image_path", "batch", "view", "label"]].assign(
        score=scores,
        threshold=threshold.for_views(views, len(views)).numpy(),
        anomalous=threshold.predict(scores, views).numpy(),
        map_sum=sums,
    )
    nqi_table, nqi_note = batch_nqi(pipeline, scored)
    batches = None
    if nqi_table is not None:
        scored = scored.merge(nqi_table[["batch", "view", "nqi", "ucl", "out_of_control"]], on=["batch", "view"])
        batches = spc.batch_verdict(nqi_table, pipeline.cfg.scoring.spc.min_views)
    return Judgement(scored, batches, [nqi_note], threshold, samples, top, vmax)
