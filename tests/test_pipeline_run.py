"""A real tiny end-to-end `run(cfg)` into a temp MLflow store: runs, params, metrics, artifacts; crashes end FAILED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from helpers.tiny import compose_tiny, store_uri
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from polydefect.data.io import read_image
from polydefect.pipeline.data import prepare_data
from polydefect.pipeline.run import STAGES, run
from polydefect.tasks.reconstruction import ReconstructionTask


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pipeline")
    metrics = run(compose_tiny(root))
    mlflow.set_tracking_uri(store_uri(root))
    return {"root": root, "metrics": metrics, "client": MlflowClient()}


def children(client: MlflowClient, parent: Run) -> dict[str, Run]:
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in found}


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_the_run_and_its_four_stage_runs_finish(tiny_run) -> None:
    client = tiny_run["client"]
    parent = client.get_run(tiny_run["metrics"]["run_id"])
    stages = children(client, parent)
    assert parent.info.status == "FINISHED"
    assert set(stages) == set(STAGES)
    assert {r.info.status for r in stages.values()} == {"FINISHED"}


def test_the_parent_run_holds_the_flattened_config_and_the_tags(tiny_run) -> None:
    parent = tiny_run["client"].get_run(tiny_run["metrics"]["run_id"])
    assert parent.data.params["data.variant"] == "mixed"
    assert parent.data.params["preprocess.tile.core"] == "32"
    assert parent.data.params["model._target_"].endswith("ReconstructionTask")
    assert parent.data.tags["experiment"] == "tiny"
    assert parent.data.tags["variant"] == "mixed"
    assert parent.data.tags["seed"] == "42"
    assert len(parent.data.tags["git_commit"]) in (40, len("unknown"))


def test_the_parent_run_holds_the_headline_metrics(tiny_run) -> None:
    metrics = tiny_run["client"].get_run(tiny_run["metrics"]["run_id"]).data.metrics
    headline = ("test/global/image_auroc", "test/global/f1", "test/pixel_auroc", "test/aupro", "segment/test_iou")
    for key in (*headline, "val/synthetic_image_auroc", "val/synthetic_pixel_auroc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/global/image_auroc"] == pytest.approx(tiny_run["metrics"]["test/global/image_auroc"])
    assert tiny_run["metrics"]["objective"] is not None


def test_the_stage_runs_hold_their_metrics_and_artifacts(tiny_run) -> None:
    client = tiny_run["client"]
    parent = client.get_run(tiny_run["metrics"]["run_id"])
    stages = children(client, parent)
    assert stages["data"].data.metrics["data/test_images"] == 8
    assert "val/loss" in stages["detect"].data.metrics  # per epoch, by the Lightning logger
    assert stages["detect"].data.metrics["detect/train_s"] > 0
    assert stages["detect"].data.metrics["detect/infer_img_per_s"] > 0
    assert stages["detect"].data.tags["stage_cache_hit"] == "False"
    segment_artifacts = artifact_paths(client, stages["segment"].info.run_id)
    assert {"unet.safetensors", "metrics.json", "roc.png", "overlays"} <= segment_artifacts
    assert "model/model.safetensors" in artifact_paths(client, stages["detect"].info.run_id, "model")
    evaluation = artifact_paths(client, stages["evaluate"].info.run_id, "evaluation")
    assert {"evaluation/roc.png", "evaluation/image_metrics.csv", "evaluation/thresholds.json"} <= evaluation
    assert "evaluation/spc_limits.json" in evaluation  # read back by `polydefect.inspect`
    assert "config.yaml" in artifact_paths(client, parent.info.run_id)


def test_artifacts_are_stored_beside_the_sqlite_store(tiny_run) -> None:
    parent = tiny_run["client"].get_run(tiny_run["metrics"]["run_id"])
    assert parent.info.artifact_uri.startswith((tiny_run["root"] / "mlruns").as_uri())


def test_the_tiny_mixed_run_trains_on_none_of_its_test_images(tmp_path: Path) -> None:
    splits, _ = prepare_data(compose_tiny(tmp_path))
    train, test = ({read_image(p).tobytes() for p in table["image_path"]} for table in (splits.train, splits.test))
    assert set(splits.train["domain"]) == {"real", "synthetic"}
    assert not train & test


def test_a_missing_data_folder_stops_the_run_before_any_mlflow_run(tmp_path: Path) -> None:
    cfg = compose_tiny(tmp_path, f"data.root={tmp_path / 'no_such_folder'}")
    with pytest.raises(Exception, match="no_such_folder"):
        run(cfg)
    client = MlflowClient(store_uri(tmp_path))
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_detector_with_nan_scores_stops_before_its_scores_are_cached(tmp_path: Path, monkeypatch) -> None:
    def diverged(task: Any, images: torch.Tensor, views: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(images[:, :1], float("nan")), images

    monkeypatch.setattr(ReconstructionTask, "map_and_reconstruction", diverged)
    cfg = compose_tiny(tmp_path)
    with pytest.raises(FloatingPointError, match=r"model \(polydefect\.tasks\.reconstruction\..*NaN or infinite"):
        run(cfg)
    assert not list(Path(cfg.paths.cache_dir).rglob("scores.csv"))
    mlflow.set_tracking_uri(store_uri(tmp_path))
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(cfg.mlflow.experiment_name).experiment_id])
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert statuses["detect"] == statuses["tiny"] == "FAILED"  # a crash marks the runs failed, not running
