"""The team set-up for real: PostgreSQL + `mlflow server` on loopback; a SLURM sweep logs to it over HTTP, and
concurrent jobs logging to it lose nothing."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import mlflow
import pytest
from helpers.tiny import run_app
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from services.mlflow_server import server
from services.slurm import cluster
from services.sweeps import pipeline_runs, slurm_sweep, stage_runs

from polydefect import tracking

pytestmark = pytest.mark.services
JOBS, STEPS = 4, 50


@pytest.fixture(scope="module")
def tracking_server() -> str:
    return server()


def test_a_slurm_sweep_logs_both_runs_to_the_server_over_http(tracking_server, tmp_path: Path) -> None:
    cluster()
    args = slurm_sweep(tmp_path, tracking_server, "mlflow.experiment_name=sweep", "segmenter=none", "model=cae,dae")
    run_app([*args, f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=tmp_path)
    client = MlflowClient(tracking_server)
    runs = pipeline_runs(client, "sweep")
    assert sorted(r.data.tags["choice.model"] for r in runs) == ["cae", "dae"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
        assert run.data.params["model._target_"].endswith("ReconstructionTask")
        assert 0.0 <= run.data.metrics["test/global/image_auroc"] <= 1.0
        assert {s.info.status for s in stage_runs(client, run).values()} == {"FINISHED"}
        config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
        assert OmegaConf.load(config).mlflow.tracking_uri == tracking_server


def log_a_job(tracking_uri: str, index: int) -> str:
    """One job's logging through polydefect.tracking: params, a nested stage with a metric per step, an artifact."""
    cfg = OmegaConf.create(
        {"mlflow": {"tracking_uri": tracking_uri, "experiment_name": "concurrent"}, "job": index, "seed": 0}
    )
    with tracking.pipeline_run(cfg, f"job{index}", {"job": str(index)}) as run:
        with tracking.stage_run("detect"):
            for step in range(STEPS):
                mlflow.log_metric("train/loss", 1.0 / (step + 1), step=step)
            mlflow.log_text(f"job {index}", "note.txt")
        tracking.log_final_metrics({"test/score": float(index)})
        return run.info.run_id


def test_four_concurrent_jobs_logging_to_the_server_lose_nothing(tracking_server, tmp_path: Path) -> None:
    with ProcessPoolExecutor(JOBS, mp_context=get_context("spawn")) as pool:
        run_ids = list(pool.map(log_a_job, [tracking_server] * JOBS, range(JOBS)))
    client = MlflowClient(tracking_server)
    parents = {r.info.run_id: r for r in pipeline_runs(client, "concurrent")}
    assert set(run_ids) <= set(parents)
    for index, run_id in enumerate(run_ids):
        parent = parents[run_id]
        assert parent.info.status == "FINISHED"
        assert parent.data.params["job"] == str(index)
        assert parent.data.metrics["test/score"] == index
        stage = stage_runs(client, parent)["detect"]
        history = client.get_metric_history(stage.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(STEPS))
        note = client.download_artifacts(stage.info.run_id, "note.txt", str(tmp_path / str(index)))
        assert Path(note).read_text() == f"job {index}"
