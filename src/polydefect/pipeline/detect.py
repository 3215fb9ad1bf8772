"""Detect stage: train a detector on good images, then score every image with an anomaly map (thesis 3.8, 4.3).

Any `model=` works here: every one implements `polydefect.tasks.base.Detector`, so autoencoders, memory banks,
pasted-anomaly detectors and their ensembles are trained by one `fit_task` and scored by one scoring stream.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import pandas as pd
import torch
from omegaconf import DictConfig

from polydefect.allocator import return_free_memory
from polydefect.data.datamodules import ImageDataModule, ReconstructionDataModule
from polydefect.data.sample import LazySamples, Sample, load_samples
from polydefect.data.splits import DataSplits
from polydefect.evaluation.pasted_validation import ValidationSignal, synthetic_validation
from polydefect.pipeline.artifacts import score_test
from polydefect.pipeline.data import data_identity
from polydefect.pipeline.training import epoch_budget, trainer_kwargs
from polydefect.scoring.location import (
    LOCATION_FILE,
    LOCATION_MAPS_FILE,
    MIN_IMAGES,
    LocationNormaliser,
    calibration_of,
    check_normalise,
)
from polydefect.scoring.spc import has_batches_of_views
from polydefect.scoring.stream import check_finite_scores, run_scores, score_only
from polydefect.stage_cache import StageCache
from polydefect.stage_keys import StageKey, data_fingerprint, stage_key
from polydefect.tasks.base import DetectorTask, build_detector, load_detector
from polydefect.tasks.fitting import fit_task

log = logging.getLogger(__name__)
# the sample-table columns of the files read here: a predicted mask (the segment stage's) replaces the object mask
READS = ("image_path", "object_mask_path", "predicted_mask_path", "defect_mask_path")
WEIGHTS_FILE = "model.safetensors"
VALIDATION_FILE = "validation.json"
TIMINGS_FILE = "timings.json"


@dataclass
class DetectResult:
    """Per-image scores (one row per image: the sample table's columns plus role, score, map_sum), the stage
    folder with the test maps and masks (by row id), and the validation signal of the detector that scored."""

    key: str
    scores: pd.DataFrame
    folder: Path
    validation: dict[str, float] = field(default_factory=dict)  # the fitted detector's validation signal


def detect_key(cfg: DictConfig, splits: DataSplits, segment_key: str) -> StageKey:
    """What determines the scores: the segment stage's key, the images and the masks they are read with (the
    predicted ones, so a segment stage rebuilt under the same key retrains), preprocessing, augmentation, the
    model and its training, how maps become scores, and the code (thresholds and SPC limits are the evaluate
    stage's: changing them retrains nothing)."""
    settings = {
        "segment": segment_key,
        "preprocess": cfg.preprocess,
        "augment": cfg.augment,
        "model": cfg.model,
        "detect": cfg.detect,
        "scoring": {name: cfg.scoring.get(name) for name in ("error", "reduction", "k", "peak_baseline", "normalise")},
        "trainer": cfg.trainer,
        "data": data_identity(cfg),
        "seed": cfg.seed,
    }
    return stage_key(__name__, settings, data_fingerprint(splits, READS, cfg.data.fingerprint))


def reconstruction_datamodule(
    cfg: DictConfig, train: Sequence[Sample], val: Sequence[Sample]
) -> ReconstructionDataModule:
    """The detector's training data as the run's config describes it: windows, batches, augmentation."""
    return ReconstructionDataModule(
        train,
        val,
        core=cfg.preprocess.tile.core,
        window=cfg.preprocess.tile.window,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        augment=cfg.augment,
        min_foreground=cfg.detect.min_foreground,
        seed=cfg.seed,
    )


def training_datamodule(
    cfg: DictConfig, detector: DetectorTask, train: Sequence[Sample], val: Sequence[Sample]
) -> L.LightningDataModule:
    """Windows for most detectors; whole images with their view keys for one that compares views."""
    if detector.needs_views:
        return ImageDataModule(train, cfg.data.batch_size, cfg.data.num_workers, cfg.seed)
    return reconstruction_datamodule(cfg, train, val)


def train_detector(cfg: DictConfig, detector: DetectorTask, data: L.LightningDataModule, folder: Path) -> None:
    """Fit, then finish the detector (`Detector.fit`: a bank's coreset) on the device it trained on: Lightning
    hands the module back on the CPU, and a GPU run should score on the GPU.

    The trainer and the training data it holds (all training windows: 310 MB for 630 magnetic tiles at 256 x
    296 px) are let go before the coreset and the validation: the detector and its trainer refer to each other,
    so they would wait for Python's cyclic collector."""
    epochs = epoch_budget(int(cfg.model.get("max_epochs", 1)), cfg.detect.max_epochs)
    trainer = fit_task(
        detector, trainer_kwargs(cfg, epochs, folder), folder, detector.checkpoint_monitor, datamodule=data
    )
    detector.to(trainer.strategy.root_device)
    detector.trainer = None
    del trainer, data
    return_free_memory()
    detector.fit()


def calibrate(detector: DetectorTask, val: Sequence[Sample], cfg: DictConfig) -> tuple[LocationNormaliser | None, dict]:
    """The per-location calibration the detector scores with, and its validation signal (`val/...`).

    `scoring.normalise`: `none` scores the maps as they come, `location` always calibrates, `auto` calibrates only
    where that raises the validation image AUROC (a place high on every good image, such as a frame's edge, is
    calibrated away; on a part seen in many poses the good images share no places, and calibrating hurts). The
    signal is logged under both (`val/none/...`, `val/location/...`) and, unprefixed, under the one chosen."""
    mode = str(cfg.scoring.normalise)
    check_normalise(mode, cfg.detect.validation.enabled)
    if not cfg.detect.validation.enabled:
        # no signal to score both ways: the calibration alone, on the good validation images' raw maps
        normaliser = calibration_of(run_scores(detector, val, cfg)) if mode == "location" else None
        signal = ValidationSignal(normaliser=normaliser)
    else:
        signal = synthetic_validation(detector, val, cfg, calibrate=mode != "none")
    if mode != "none" and signal.normaliser is None:
        log.warning(
            "scoring.normalise=%s: %d good validation images, at least %d needed; the maps are scored uncalibrated "
            "(raise data.val_fraction)",
            mode,
            len(val),
            MIN_IMAGES,
        )
    figures = signal.figures
    metric = "synthetic_image_auroc"
    calibrated = figures.get("location", {}).get(metric, math.nan) > figures.get("none", {}).get(metric, math.nan)
    chosen = "location" if signal.normaliser is not None and (mode == "location" or calibrated) else "none"
    log.info("scoring.normalise=%s: the maps are scored with calibration %s", mode, chosen)
    validation = dict(figures.get(chosen, {}))
    validation |= {f"{name}/{key}": value for name, values in figures.items() for key, value in values.items()}
    return (signal.normaliser if chosen == "location" else None), validation


def read_validation(folder: Path) -> dict[str, float]:
    """A fit folder's validation signal (`synthetic_image_auroc`, `synthetic_pixel_auroc`); NaN ones left out."""
    path = folder / VALIDATION_FILE
    values = json.loads(path.read_text()) if path.is_file() else {}
    return {name: value for name, value in values.items() if value == value}


def fitting_tables(splits: DataSplits) -> dict[str, pd.DataFrame]:
    """The images a detector is fitted and calibrated on, by role: its training images and the good validation
    images."""
    return {"train": splits.train, "val": splits.val}


def scored_roles(cfg: DictConfig, splits: DataSplits) -> tuple[str, ...]:
    """The fitting roles whose images the detect stage scores besides the test images. The validation images
    always: they are the detector's held-out good images. The training images only where the evaluation reads
    their scores: thresholds and view statistics fitted on them (`scoring.threshold.fit_on=train`), or SPC
    limits over batches of views. A feature memory holds its training images' own patches, so with
    `fit_on=val` (data=mvtec) their scores are read by nothing, and scoring them took most of an object-centric
    run's time."""
    wanted = cfg.scoring.threshold.fit_on == "train" or has_batches_of_views(splits.all())
    return ("train", "val") if wanted else ("val",)


def fitting_samples(splits: DataSplits, preprocess: Any) -> dict[str, Sequence[Sample]]:
    """`fitting_tables` as samples: the training images read as they are used (training cuts its windows a chunk
    of images at a time, and scoring reads a batch at a time), the good validation images held, for the validation
    signal scores them and their pasted copies. Holding the training images took 250 MB for 630 magnetic tiles
    while training held its own copy of them."""
    tables = fitting_tables(splits)
    return {"train": LazySamples(tables["train"], preprocess), "val": load_samples(tables["val"], preprocess)}


def scoring_device(cfg: DictConfig) -> torch.device:
    """Where a detector reloaded from its weights scores: the GPU where the trainer would train on one."""
    wants_gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


@dataclass
class Fitted:
    """A trained detector's stage folder (weights, the per-location calibration where used, the validation signal,
    the training time), the key it is cached under, and, where this process trained it, the detector and the
    samples it was trained on."""

    folder: Path
    key: StageKey
    detector: DetectorTask | None = None
    samples: dict[str, list[Sample]] | None = None

    @property
    def validation(self) -> dict[str, float]:
        return read_validation(self.folder)

    def normaliser(self) -> LocationNormaliser | None:
        """The calibration with the validation maps, so the validation images are scored leave-one-out as the
        validation signal scored them (their threshold must not see their own maps)."""
        path = self.folder / LOCATION_FILE
        return LocationNormaliser.load(path, self.folder / LOCATION_MAPS_FILE) if path.is_file() else None

    def load(self, cfg: DictConfig) -> DetectorTask:
        """The trained detector: the one in memory, or rebuilt from the folder's weights."""
        if self.detector is not None:
            return self.detector
        return load_detector(cfg.model, self.folder / WEIGHTS_FILE).to(scoring_device(cfg))


def fit_detector(cfg: DictConfig, splits: DataSplits, cache: StageCache, segment_key: str) -> Fitted:
    """Train (or reuse) the detector, its per-location calibration and its validation signal: everything but the
    scores, so that `model=auto` compares detectors without scoring the test images of the ones it passes over."""
    key = detect_key(cfg, splits, segment_key)
    trained: dict[str, Any] = {}

    def make(folder: Path) -> None:
        # from the run's seed, whatever ran before in this process (other candidates, a segmenter trained or
        # reused): the fit cached under this key is the one a run of this detector alone makes
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        samples = fitting_samples(splits, cfg.preprocess)
        detector = build_detector(cfg.model)
        started = time.perf_counter()
        train_detector(cfg, detector, training_datamodule(cfg, detector, samples["train"], samples["val"]), folder)
        train_s = time.perf_counter() - started
        detector.save_weights(folder / WEIGHTS_FILE)
        normaliser, validation = calibrate(detector, samples["val"], cfg)
        if normaliser is not None:  # the detect stage and `inspect` score with it
            normaliser.save(folder / LOCATION_FILE)
            normaliser.save_maps(folder / LOCATION_MAPS_FILE)  # the validation images are scored again, leave-one-out
        (folder / VALIDATION_FILE).write_text(json.dumps(validation))
        (folder / TIMINGS_FILE).write_text(json.dumps({"train_s": train_s}))
        trained.update(detector=detector, samples=samples)

    folder, _ = cache.build("fit", key, make)
    return Fitted(folder, key, **trained)


def detect(cfg: DictConfig, splits: DataSplits, cache: StageCache, segment_key: str) -> DetectResult:
    """Run (or reuse) the detect stage: the fitted detector scores the test images and the fitting images the
    evaluation reads (`scored_roles`); logs the weights and the score table to the active MLflow run."""
    roles = scored_roles(cfg, splits)
    fitted = fit_detector(cfg, splits, cache, segment_key)
    key = StageKey({**fitted.key.parts, "scored": list(roles)})
    tables = {role: table for role, table in fitting_tables(splits).items() if role in roles}

    def make(folder: Path) -> None:
        detector = fitted.load(cfg)
        samples = fitted.samples or fitting_samples(splits, cfg.preprocess)
        normaliser = fitted.normaliser()
        rows = []
        counts = ", ".join(f"{len(table)} {role}" for role, table in [*tables.items(), ("test", splits.test)])
        log.info("detect: scoring %s images", counts)
        started = time.perf_counter()
        for role, table in tables.items():
            scores, sums = score_only(detector, samples[role], cfg, normaliser)
            rows.append(table.assign(role=role, score=scores, map_sum=sums))
        # test images are read as they are scored: any number of them fits in memory
        test = LazySamples(splits.test, cfg.preprocess)
        scores, sums = score_test(detector, test, cfg, splits.test, folder, normaliser)
        rows.append(splits.test.assign(role="test", score=scores, map_sum=sums))
        timings = json.loads((fitted.folder / TIMINGS_FILE).read_text())
        timings["infer_img_per_s"] = sum(map(len, rows)) / (time.perf_counter() - started)
        table = pd.concat(rows, ignore_index=True)
        check_finite_scores(table, cfg.model._target_)
        (folder / TIMINGS_FILE).write_text(json.dumps(timings))
        table.to_csv(folder / "scores.csv", index=False)

    folder, hit = cache.build("detect", key, make)
    scores = pd.read_csv(folder / "scores.csv")
    if mlflow.active_run():
        mlflow.set_tag("stage_cache_hit", str(hit))
        mlflow.set_tag("scoring.normalise.chosen", "location" if (fitted.folder / LOCATION_FILE).is_file() else "none")
        timings = folder / TIMINGS_FILE  # of the run that trained, also logged on a hit
        mlflow.log_metrics({f"detect/{k}": v for k, v in json.loads(timings.read_text()).items()})
        mlflow.log_artifact(str(folder / "scores.csv"))
        if cfg.mlflow.log_models:
            mlflow.log_artifact(str(fitted.folder / WEIGHTS_FILE), "model")
            if (fitted.folder / LOCATION_FILE).is_file():
                mlflow.log_artifact(str(fitted.folder / LOCATION_FILE), "model")
    return DetectResult(key.digest, scores, folder, fitted.validation)
