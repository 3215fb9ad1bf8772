"""`python -m polydefect.export`: a trained run of every detector family becomes an inspection bundle whose ONNX
Runtime scoring matches the run's PyTorch path on the run's own test images: maps, scores and verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.planted import planted_run_config, write_planted_mvtec
from helpers.tiny import compose_tiny, store_uri, trained_tiny_runs
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from polydefect.data.datasets import ImageDataset
from polydefect.data.sample import LazySamples
from polydefect.export.bundle import export_bundle, logged_test_scores
from polydefect.export.runtime import InspectionBundle
from polydefect.inspect import download_pipeline
from polydefect.models.feature_memory import PatchFeatureMemory
from polydefect.pipeline.run import run
from polydefect.tasks.base import Detector, load_detector

# Each MVTec-layout family with settings that train it in seconds on the planted parts.
PLANTED_FAMILIES = {
    "patchcore": ["model=patchcore", "model.input_size=64"],
    "ensemble": ["model=ensemble", "model.max_epochs=1"],
    "feature_segmenter": ["model=feature_segmenter", "model.max_epochs=1"],
    "retrieval_memory": ["model=retrieval_memory", "model.input_size=64"],
    "draem": ["model=draem", "model.input_size=64", "model.max_epochs=1"],
}
THESIS_FAMILIES = {
    "dae": ["model=dae"],
    "view_memory": ["model=view_memory", "data.train_domains=[real]", "trainer.limit_train_batches=1.0"],
}
# ONNX Runtime's and PyTorch's float32 convolutions round differently. Every family's maps agree within 1e-4 here
# (up to 9.2e-5 on the ensemble's and the view memory's maps; 7.6e-6 on the feature memory's, in its map unit);
# the 1e-6 of the value leaves a few steps more for another CPU's kernels.
MAP_TOLERANCE = {"atol": 1e-4, "rtol": 1e-6}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planted_mvtec(tmp_path_factory.mktemp("planted") / "parts", train=16, good=4, per_kind=2)


def trained_run(cfg: DictConfig) -> str:
    return run(cfg)["run_id"]


def planted_run(root: Path, data: Path, family: str) -> str:
    cfg = planted_run_config(root, data, root / "cache", root / "out" / family, *PLANTED_FAMILIES[family])
    return trained_run(cfg)


def thesis_run(root: Path, family: str) -> str:
    cfg = compose_tiny(root, *THESIS_FAMILIES[family], f"name=tiny_{family}")
    return trained_run(cfg)


def searching_exactly(detector: Detector) -> Detector:
    """The detector with its memory banks searched exactly, as its exported graph searches them."""
    for module in detector.modules():
        if isinstance(module, PatchFeatureMemory):
            module.search = "exact"
    return detector


def assert_bundle_scores_as_the_run(run_id: str, tracking_uri: str, tmp_path: Path) -> None:
    """The bundle's maps equal the PyTorch detector's on the run's test images, and its scores and verdicts
    the scores the run logged and the verdicts its thresholds give them."""
    bundle = InspectionBundle.load(export_bundle(run_id, tracking_uri, tmp_path / "bundle"))
    logged = logged_test_scores(run_id, tracking_uri, tmp_path / "logged")
    verified = bundle.manifest["verified"]
    assert verified["images"] == min(16, len(logged))
    assert verified["max_score_difference"] <= 1e-4 + 1e-5 * logged["score"].abs().max()

    pipeline = download_pipeline(run_id, tracking_uri, tmp_path / "pipeline")
    detector = searching_exactly(load_detector(pipeline.cfg.model, pipeline.folder / "model.safetensors"))
    batch = next(iter(DataLoader(ImageDataset(LazySamples(logged, pipeline.cfg.preprocess)), batch_size=len(logged))))
    expected = detector.anomaly_map(batch["image"], batch["view"]).numpy()
    exported = bundle.detector.anomaly_map(batch["image"], batch["view"]).numpy()
    np.testing.assert_allclose(exported, expected, **MAP_TOLERANCE)

    scored = bundle.score_table(logged)
    np.testing.assert_allclose(scored["score"], logged["score"], **MAP_TOLERANCE)
    threshold = pipeline.thresholds["per_view"]
    run_verdicts = threshold.predict(logged["score"].tolist(), [str(v) for v in logged["view"]]).numpy()
    assert (scored["anomalous"].to_numpy() == run_verdicts).all()


@pytest.mark.parametrize("family", sorted(PLANTED_FAMILIES))
def test_a_bundle_scores_the_run_test_images_as_its_pytorch_path(planted: Path, family: str, tmp_path: Path) -> None:
    run_id = planted_run(tmp_path, planted, family)
    assert_bundle_scores_as_the_run(run_id, store_uri(tmp_path), tmp_path)


@pytest.mark.parametrize("family", sorted(THESIS_FAMILIES))
def test_a_thesis_layout_bundle_scores_as_its_run(family: str, tmp_path: Path) -> None:
    run_id = thesis_run(tmp_path, family)
    assert_bundle_scores_as_the_run(run_id, store_uri(tmp_path), tmp_path)


@pytest.fixture(scope="module")
def tiny_cae(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.getbasetemp() / "trained_tiny"
    return trained_tiny_runs(root)["tiny_cae"], store_uri(root)


def test_the_cae_and_its_unet_export_and_score_as_the_run(tiny_cae: tuple[str, str], tmp_path: Path) -> None:
    run_id, store = tiny_cae
    assert_bundle_scores_as_the_run(run_id, store, tmp_path)
    files = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["files"]
    assert {"detector.onnx", "segmenter.onnx", "thresholds.json", "spc_limits.json", "config.yaml"} <= set(files)


def test_the_command_writes_a_bundle_and_refuses_to_overwrite_one(tiny_cae: tuple[str, str], tmp_path: Path) -> None:
    run_id, store = tiny_cae
    command = [sys.executable, "-m", "polydefect.export", f"run={run_id}", f"mlflow.tracking_uri={store}", "verify=0"]
    done = subprocess.run([*command, f"out={tmp_path / 'b'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["run_id"] == run_id and manifest["format_version"] == 1 and "verified" not in manifest
    again = subprocess.run([*command, f"out={tmp_path / 'b'}"], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "not empty" in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no half-written bundle beside it


def test_a_folder_that_is_no_bundle_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"bundle={tmp_path}: no manifest.json"):
        InspectionBundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(ValueError, match="is not a polydefect-inspection-bundle of version 1"):
        InspectionBundle.load(tmp_path)


def test_a_bundle_missing_a_file_is_named(tiny_cae: tuple[str, str], tmp_path: Path) -> None:
    run_id, store = tiny_cae
    bundle = export_bundle(run_id, store, tmp_path / "bundle", verify=0)
    (bundle / "segmenter.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['segmenter.onnx'\]"):
        InspectionBundle.load(bundle)


def test_the_runtime_scores_without_the_training_stack() -> None:
    """Loading the runtime imports neither Lightning nor MLflow: a line-side machine needs neither."""
    probe = "import sys, polydefect.export.runtime; print(sorted({'lightning', 'mlflow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
