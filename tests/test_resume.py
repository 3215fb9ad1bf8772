"""A run SIGKILLed mid-training: the rerun resumes the detector from its last checkpoint, and the killed
MLflow runs end FAILED (marked by the rerun), never left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from helpers.tiny import run_app, store_uri, tiny_overrides
from mlflow.tracking import MlflowClient


def wait_for_checkpoint(cache: Path, process: subprocess.Popen, timeout: float = 400) -> Path:
    """The detect stage's `last.ckpt` in its unfinished (.partial) folder, as soon as it appears.

    Lightning saves checkpoints atomically (a temporary file moved into place), so a visible file is complete;
    polling fast keeps the kill inside training on machines where an epoch takes milliseconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it wrote a checkpoint: make its training longer"
        found = list((cache / "detect").glob(".*.partial/checkpoints/last.ckpt"))
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no last.ckpt under {cache / 'detect'} after {timeout} s")


def test_a_killed_run_resumes_from_its_last_checkpoint_and_is_marked_failed(tmp_path: Path) -> None:
    # otsu: no U-Net to train; 30 epochs of 2 steps: the kill lands soon after the first checkpoint
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("segmenter.")]
    args = ["+experiment=tiny", *overrides, "segmenter=otsu", "detect.max_epochs=30"]
    args += ["model.patience=10", f"hydra.run.dir={tmp_path / 'out'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "polydefect", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        checkpoint = wait_for_checkpoint(tmp_path / "cache", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    mlflow.set_tracking_uri(store_uri(tmp_path))
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("polydefect").experiment_id
    before = client.search_runs([experiment_id])
    killed = {r.info.run_id for r in before if r.info.status == "RUNNING"}
    # SIGKILL gives the process no chance to end its runs: the parent and the training stage stay RUNNING
    assert sorted(r.info.run_name for r in before if r.info.run_id in killed) == ["detect", "tiny"]

    rerun = run_app(args, cwd=tmp_path)
    log = rerun.stdout + rerun.stderr
    assert "Stage detect: resuming partial result" in log
    assert f"Restoring states from the checkpoint path at {checkpoint}" in log
    assert not checkpoint.exists(), "the finished stage moved out of its .partial folder"
    runs = {r.info.run_id: r for r in client.search_runs([experiment_id])}
    assert {runs[i].info.status for i in killed} == {"FAILED"}
    assert {r.info.status for i, r in runs.items() if i not in killed} == {"FINISHED"}
    assert len(runs) == len(before) + 5  # the rerun's parent and its four stages
