"""MLflow tracking: flattened params, nested stage runs, FAILED on errors, KILLED on Ctrl-C, stale RUNNING runs
cleaned up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from polydefect import tracking


@pytest.fixture
def cfg(tmp_path: Path):
    return OmegaConf.create(
        {
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment_name": "t", "log_models": False},
            "data": {"variant": "real", "train_domains": ["real"]},
            "seed": 1,
        }
    )


def test_flatten_gives_dotted_keys() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 3}]}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d.0.e": "3",
    }


def test_pipeline_run_logs_params_config_and_nested_stages(cfg) -> None:
    with tracking.pipeline_run(cfg, "demo", {"variant": "real"}) as run, tracking.stage_run("data"):
        mlflow.log_metric("data/train_images", 3)
    client = MlflowClient()
    parent = client.get_run(run.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["data.variant"] == "real"
    assert parent.data.tags["variant"] == "real"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert [c.data.tags["mlflow.runName"] for c in children] == ["data"]
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_an_error_marks_the_run_and_its_stage_failed(cfg) -> None:
    with pytest.raises(ValueError), tracking.pipeline_run(cfg, "crash", {}) as run, tracking.stage_run("segment"):
        raise ValueError("bad input")
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    stages = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert [s.info.status for s in stages] == ["FAILED"]


def test_ctrl_c_marks_the_run_and_its_stage_killed(cfg) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.pipeline_run(cfg, "stopped", {}) as run,
        tracking.stage_run("detect"),
    ):
        raise KeyboardInterrupt
    client = MlflowClient()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    stages = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert [s.info.status for s in stages] == ["KILLED"]


def test_runs_of_dead_processes_are_marked_failed_on_the_next_start(cfg) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    experiment_id = tracking.configure(cfg)
    client = MlflowClient()
    stale = client.create_run(
        experiment_id, tags={tracking.PID_TAG: str(dead_pid), tracking.HOST_TAG: socket.gethostname()}
    )
    alive = client.create_run(
        experiment_id, tags={tracking.PID_TAG: str(os.getpid()), tracking.HOST_TAG: socket.gethostname()}
    )
    assert tracking.fail_stale_runs(client, experiment_id) == [stale.info.run_id]
    assert client.get_run(stale.info.run_id).info.status == "FAILED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    client.set_terminated(alive.info.run_id)
