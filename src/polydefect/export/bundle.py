"""`export_bundle`: a finished run as an inspection bundle, a folder with everything needed to score and judge new
images and nothing else.

    manifest.json     format version, run id, versions, the detector's family, the input it takes, known views
    config.yaml       the run's resolved config (preprocessing, scoring, segmenter settings are read from it)
    detector.onnx     the detector's map (`graphs.export_detector`), weights and memory bank inside
    segmenter.onnx    the U-Net's logits, where the run trained one
    thresholds.json   the fitted thresholds (global, per view, val_f1)
    spc_limits.json   the SPC control limits, where the run had batches to fit them on
    location.npz      the per-location calibration, where the run scored with one

The bundle is written beside `out` and moved into place whole, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from polydefect.data.io import read_image
from polydefect.export.files import COPIED, DETECTOR, FORMAT, FORMAT_VERSION, MANIFEST, SEGMENTER
from polydefect.export.graphs import export_detector, export_segmenter_net
from polydefect.export.runtime import InspectionBundle
from polydefect.inspect import download_pipeline, locate_run, stage_runs
from polydefect.judging import TrainedPipeline
from polydefect.models.feature_memory import PatchFeatureMemory
from polydefect.scoring.thresholds import ALL_VIEWS
from polydefect.segmentation.base import build_segmenter
from polydefect.tasks.base import load_detector

log = logging.getLogger(__name__)

SHAPE_SAMPLE = 16  # the run's test images read for the size new images must have


def input_shape(cfg: DictConfig, image_shapes: set[tuple[int, int]]) -> tuple[int, int]:
    """(H, W) of the run's images after preprocessing: `preprocess.size`, or the images' own size (one of
    `image_shapes`, the run's test images' sizes)."""
    if cfg.preprocess.size:
        width, height = (int(v) for v in cfg.preprocess.size)
        return height, width
    if cfg.preprocess.get("crop_margin") is not None:
        raise ValueError(
            "preprocess.size: the run crops each image to its part (preprocess.crop_margin) and keeps every crop's "
            "own size, so its detector sees images of every size; export needs runs with a fixed preprocess.size"
        )
    if len(image_shapes) != 1:
        raise ValueError(
            f"preprocess.size: null and the run's test images have {len(image_shapes)} sizes; export needs one"
        )
    return next(iter(image_shapes))


def input_channels(cfg: DictConfig) -> int:
    """Channels of the preprocessed images: RGB with `preprocess.colour`, else grey."""
    return 3 if cfg.preprocess.get("colour", False) else 1


def known_views(pipeline: TrainedPipeline) -> list[str] | None:
    """The views the run fitted per-view thresholds for; None where one threshold serves every view."""
    per_view = pipeline.thresholds.get("per_view")
    if per_view is None or ALL_VIEWS in per_view.values:
        return None
    return sorted(per_view.values)


def logged_test_scores(run_id: str, tracking_uri: str, folder: Path) -> pd.DataFrame:
    """The detect stage's scores of the run's test images (image_path, score, ...), as the PyTorch path made them."""
    client = MlflowClient(tracking_uri)
    detect = stage_runs(client, run_id)["detect"]
    table = pd.read_csv(client.download_artifacts(detect.info.run_id, "scores.csv", str(folder)))
    return table[table["role"] == "test"].reset_index(drop=True)


def manifest(pipeline: TrainedPipeline, shape: tuple[int, int], raw_shape: list[int] | None, files: list[str]) -> dict:
    """What the bundle is and takes: read first by the runtime (`runtime.read_manifest`) and by whoever deploys it."""
    cfg = pipeline.cfg
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run_id": pipeline.run_id,
        "experiment": str(cfg.name),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "detector": str(cfg.model._target_),
        "input": {"channels": input_channels(cfg), "height": shape[0], "width": shape[1]},
        "image_shape": raw_shape,
        "views": known_views(pipeline),
        "files": sorted(files),
        "versions": {name: version(name) for name in ("polydefect", "torch", "onnx", "onnxruntime")},
    }


def write_bundle(pipeline: TrainedPipeline, test_images: list[str], folder: Path) -> dict:
    """Export the run's networks and copy its fitted settings into `folder`; returns the manifest."""
    cfg = pipeline.cfg
    image_shapes = {read_image(path).shape[:2] for path in test_images}
    shape = input_shape(cfg, image_shapes)
    detector = load_detector(cfg.model, pipeline.folder / "model.safetensors")
    approximate = sorted({m.search for m in detector.modules() if isinstance(m, PatchFeatureMemory)} - {"exact"})
    if approximate:  # a faiss index has no ONNX form
        log.warning(
            "the run searched its memory banks by %s (model.net.search); the bundle searches them exactly, so its "
            "maps and scores can differ slightly from the run's where that search missed a nearest patch",
            " and ".join(approximate),
        )
    export_detector(detector, input_channels(cfg), shape, folder / DETECTOR)
    files = [DETECTOR]
    if (pipeline.folder / "unet.safetensors").is_file():
        segmenter = build_segmenter(cfg.segmenter).load(pipeline.folder / "unet.safetensors")
        export_segmenter_net(segmenter.net, segmenter.image_size, folder / SEGMENTER)
        files.append(SEGMENTER)
    for name in COPIED:
        if (pipeline.folder / name).is_file():
            shutil.copy2(pipeline.folder / name, folder / name)
            files.append(name)
    # every new image must have the size of the run's test images where they share one; else any size goes
    raw_shape = list(next(iter(image_shapes))) if len(image_shapes) == 1 else None
    content = manifest(pipeline, shape, raw_shape, [*files, MANIFEST])
    (folder / MANIFEST).write_text(json.dumps(content, indent=2))
    return content


def export_bundle(run: str, tracking_uri: str, out: Path, verify: int = 16) -> Path:
    """Write the inspection bundle of `run` (a run id, or a run's output folder) into the new folder `out`.

    `verify` of the run's test images (where they are still on disk) are scored with the bundle and compared
    with the scores the run's PyTorch path logged; the figures are kept in the manifest.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"out={out}: the folder exists and is not empty; a bundle goes into a new folder")
    run_id, store = locate_run(run, tracking_uri)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staging:
        work, bundle = Path(staging) / "run", Path(staging) / "bundle"
        bundle.mkdir()
        pipeline = download_pipeline(run_id, store, work)
        scores = logged_test_scores(run_id, store, work)
        present = scores[[Path(p).is_file() for p in scores["image_path"]]]
        content = write_bundle(pipeline, list(present["image_path"][:SHAPE_SAMPLE]), bundle)
        if verify and len(present):
            content["verified"] = verify_bundle(bundle, present.head(verify))
            (bundle / MANIFEST).write_text(json.dumps(content, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(bundle, out)
    log.info("bundle of run %s written to %s", run_id, out)
    return out


def verify_bundle(bundle: Path, logged: pd.DataFrame) -> dict:
    """Score the logged test images with the bundle: the largest difference from the PyTorch path's scores."""
    scored = InspectionBundle.load(bundle).score_table(logged)
    difference = np.abs(scored["score"].to_numpy() - logged["score"].to_numpy())
    log.info("bundle scores of %d test images differ from the run's by at most %.2e", len(logged), difference.max())
    return {"images": len(logged), "max_score_difference": float(difference.max())}
