"""Sweeps through a real single-node SLURM cluster: `python -m polydefect -m hydra/launcher=slurm ...` as typed on a
cluster; both runs in one MLflow store; a cancelled job leaves no run RUNNING; a rerun resumes from the stage cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.tiny import run_app, store_uri
from mlflow.tracking import MlflowClient
from services.slurm import SlurmCluster, cluster
from services.sweeps import pipeline_runs, slurm_sweep, stage_runs

from polydefect import tracking

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    return cluster()


def test_a_two_job_sweep_through_slurm_finishes_both_runs_in_one_store(slurm, tmp_path: Path) -> None:
    args = slurm_sweep(tmp_path, store_uri(tmp_path), "segmenter=none", "model=cae,dae")
    run_app([*args, f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=tmp_path)
    client = MlflowClient(store_uri(tmp_path))
    runs = pipeline_runs(client)
    assert sorted(r.data.tags["choice.model"] for r in runs) == ["cae", "dae"]
    assert len({r.data.tags[tracking.SLURM_TAG] for r in runs}) == 2, "each run is its own SLURM job"
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["data.size"] == "tiny"
        assert 0.0 <= run.data.metrics["test/global/image_auroc"] <= 1.0
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
        stages = stage_runs(client, run)
        assert {s.info.status for s in stages.values()} == {"FINISHED"}
        assert "model/model.safetensors" in {
            a.path for a in client.list_artifacts(stages["detect"].info.run_id, "model")
        }
    logs = list((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, "the jobs ran as SLURM array tasks under submitit"


def _wait(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_cancelled_job_leaves_no_run_running_and_a_rerun_resumes_from_the_stage_cache(slurm, tmp_path: Path) -> None:
    # The U-Net trains one epoch; the CAE trains long enough to be cancelled mid-training.
    budget = ["segmenter.max_epochs=1", "model.max_epochs=15", "detect.max_epochs=null"]
    budget += ["model.patience=15"]
    args = [*slurm_sweep(tmp_path, store_uri(tmp_path), *budget), f"hydra.sweep.dir={tmp_path / 'first'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "polydefect", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        checkpoints = tmp_path / "cache" / "fit"  # the detect stage's training
        _wait(lambda: any(checkpoints.glob(".*.partial/checkpoints/last.ckpt")), "a detect checkpoint", 240)
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
        assert len(jobs) == 1
        subprocess.run(["scancel", jobs[0]], check=True)
        _wait(lambda: launcher.poll() is not None, "the launcher to see the job fail", slurm.kill_wait_s + 180)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)
            launcher.wait(30)
    client = MlflowClient(store_uri(tmp_path))
    (cancelled,) = pipeline_runs(client)
    assert cancelled.info.status == "FAILED", "SIGTERM from scancel ends the run FAILED"
    assert "RUNNING" not in {s.info.status for s in stage_runs(client, cancelled).values()}

    run_app([*args[:-1], f"hydra.sweep.dir={tmp_path / 'again'}"], cwd=tmp_path)
    rerun = pipeline_runs(client)[0]
    stages = stage_runs(client, rerun)
    assert rerun.info.status == "FINISHED"
    assert stages["segment"].data.tags["stage_cache_hit"] == "True", "the finished segment stage is reused"
    assert stages["detect"].data.tags["stage_cache_hit"] == "False"
    epochs = [m.value for m in client.get_metric_history(stages["detect"].info.run_id, "epoch")]
    assert min(epochs) >= 1, "detect resumes after the epochs the cancelled job had checkpointed"
