"""A run SIGKILLed or stopped by Ctrl-C mid-training: the rerun resumes the detector from its last checkpoint,
and the stopped MLflow runs end FAILED (marked by the rerun) or KILLED (by the run itself), never left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import mlflow
from helpers.tiny import run_app, store_uri, tiny_overrides
from mlflow.entities import Run
from mlflow.tracking import MlflowClient


def wait_for_checkpoint(cache: Path, process: subprocess.Popen, timeout: float = 400) -> Path:
    """The detect stage's `last.ckpt` in its unfinished (.partial) folder, as soon as it appears.

    Lightning saves checkpoints atomically (a temporary file moved into place), so a visible file is complete;
    polling fast keeps the kill inside training on machines where an epoch takes milliseconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it wrote a checkpoint: make its training longer"
        found = list((cache / "fit").glob(".*.partial/checkpoints/last.ckpt"))  # the detect stage's training
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no last.ckpt under {cache / 'fit'} after {timeout} s")


def long_training(root: Path) -> list[str]:
    """A tiny run whose detector trains long enough to be stopped: otsu (no U-Net to train) and 30 epochs of
    2 steps, so a signal sent at the first checkpoint lands in training."""
    overrides = [o for o in tiny_overrides(root) if not o.startswith("segmenter.")]
    args = ["+experiment=tiny", *overrides, "segmenter=otsu", "detect.max_epochs=30"]
    return [*args, "model.patience=10", f"hydra.run.dir={root / 'out'}"]


def start_app(args: list[str], root: Path, console: IO[str] | int = subprocess.DEVNULL) -> subprocess.Popen:
    """`python -m polydefect ARGS` started in a process group of its own, as a terminal starts a command, Ctrl-C
    answered as a terminal's command answers it (an xdist worker ignores SIGINT, which a child would inherit);
    its stdout and stderr go to `console`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "polydefect", *args]
    return subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def runs_of(root: Path) -> tuple[MlflowClient, str, list[Run]]:
    mlflow.set_tracking_uri(store_uri(root))
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("polydefect").experiment_id
    return client, experiment_id, client.search_runs([experiment_id])


def test_a_killed_run_resumes_from_its_last_checkpoint_and_is_marked_failed(tmp_path: Path) -> None:
    args = long_training(tmp_path)
    process = start_app(args, tmp_path)
    try:
        checkpoint = wait_for_checkpoint(tmp_path / "cache", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    client, experiment_id, before = runs_of(tmp_path)
    killed = {r.info.run_id for r in before if r.info.status == "RUNNING"}
    # SIGKILL gives the process no chance to end its runs: the parent and the training stage stay RUNNING
    assert sorted(r.info.run_name for r in before if r.info.run_id in killed) == ["detect", "tiny"]

    rerun = run_app(args, cwd=tmp_path)
    log = rerun.stdout + rerun.stderr
    assert "Stage fit: resuming partial result" in log  # the detect stage's training
    assert f"Restoring states from the checkpoint path at {checkpoint}" in log
    assert not checkpoint.exists(), "the finished stage moved out of its .partial folder"
    runs = {r.info.run_id: r for r in client.search_runs([experiment_id])}
    assert {runs[i].info.status for i in killed} == {"FAILED"}
    assert {r.info.status for i, r in runs.items() if i not in killed} == {"FINISHED"}
    assert len(runs) == len(before) + 5  # the rerun's parent and its four stages


def test_ctrl_c_in_training_ends_the_runs_killed_keeps_the_checkpoint_and_the_rerun_resumes(tmp_path: Path) -> None:
    args, log = long_training(tmp_path), tmp_path / "console.txt"
    with log.open("w") as output:
        process = start_app(args, tmp_path, output)
        try:
            checkpoint = wait_for_checkpoint(tmp_path / "cache", process)
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    console = log.read_text()
    assert process.returncode != 0, console[-3000:]
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in console  # Lightning caught it in fit
    client, experiment_id, before = runs_of(tmp_path)
    assert {r.info.run_name: r.info.status for r in before} == {
        "tiny": "KILLED",
        "data": "FINISHED",
        "segment": "FINISHED",
        "detect": "KILLED",
    }
    assert checkpoint.is_file(), "the stopped stage keeps its .partial folder and last.ckpt"
    finished = [p for stage in ("fit", "detect") for p in (tmp_path / "cache").glob(f"{stage}/[!.]*")]
    assert finished == [], "neither the fit nor the scores of the stopped stage are cached"
    assert not (tmp_path / "out" / "evaluation").exists(), "nothing after the stopped stage is written"
    assert "## polydefect run" not in console, "a stopped run has no summary"

    rerun = run_app(args, cwd=tmp_path)
    assert f"Restoring states from the checkpoint path at {checkpoint}" in rerun.stdout + rerun.stderr
    stopped = {r.info.run_id: r.info.status for r in before}
    after = {r.info.run_id: r.info.status for r in client.search_runs([experiment_id])}
    assert {i: after[i] for i in stopped} == stopped, "the rerun leaves the stopped runs as they ended"
    assert [s for i, s in after.items() if i not in stopped] == ["FINISHED"] * 5
