"""MLflow set-up, the one place that knows the store: parent run per pipeline run, nested run per stage.

A run that raises (or is stopped by SIGTERM) ends FAILED, one stopped by Ctrl-C (SIGINT) KILLED; a run whose
process was SIGKILLed is marked FAILED by the next start on the same host, so no run is ever left RUNNING.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
CHOSEN_TAG = "select.chosen"  # on a model=auto run: the candidate it chose
PID_TAG, HOST_TAG = "polydefect.pid", "polydefect.host"
SLURM_TAG = "slurm.job_id"


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} for MLflow params (values cut to MLflow's 6000-character limit)."""
    items: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            items.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(config, list) and any(isinstance(v, dict | list) for v in config):
        for index, value in enumerate(config):
            items.update(flatten(value, f"{prefix}{index}."))
    else:
        items[prefix.rstrip(".")] = str(config)[:6000]
    return items


def log_params(params: dict[str, str]) -> None:
    """Log params on the active run, 100 to a call (MLflow's batch limit)."""
    keys = sorted(params)
    for start in range(0, len(keys), 100):
        mlflow.log_params({k: params[k] for k in keys[start : start + 100]})


def git_commit() -> str:
    """The commit of the checkout polydefect runs from, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process is gone (killed with no chance to clean up)."""
    host, stale = socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if tags.get(HOST_TAG) == host and PID_TAG in tags and not _pid_alive(int(tags[PID_TAG])):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            stale.append(run.info.run_id)
    if stale:
        log.warning("Marked %d stale RUNNING run(s) FAILED: %s", len(stale), ", ".join(stale))
    return stale


class _Stopped(Exception):
    """Raised inside a run when the process receives SIGTERM, so the run ends FAILED."""


@contextmanager
def _terminate_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise _Stopped(f"stopped by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def absolute_uri(tracking_uri: str) -> str:
    """The store's URI with a relative SQLite path made absolute, so it still names the store from elsewhere."""
    if not tracking_uri.startswith("sqlite:///"):
        return tracking_uri
    return "sqlite:///" + str(Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve())


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database file, not into `./mlruns` of whatever directory the
    run started in (MLflow's default); other stores keep their own default (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(absolute_uri(tracking_uri).removeprefix("sqlite:///"))
    return (database.parent / "mlruns").as_uri()


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock while parallel jobs open one SQLite store: the first one creates its tables, and
    two creating them at once fail ("table ... already exists"); other stores need no lock."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    digest = hashlib.sha256(absolute_uri(tracking_uri).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"polydefect-mlflow-{digest}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configure(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and experiment, creating both if needed; returns the experiment id."""
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        client = MlflowClient()
        if client.get_experiment_by_name(name) is None:
            try:
                client.create_experiment(name, artifact_location=artifact_location(uri))
            except MlflowException:  # created meanwhile by a job on another host
                log.debug("experiment %s already created by another job", name)
    return mlflow.set_experiment(name).experiment_id


def end_status(error: BaseException) -> str:
    """KILLED for a run the user stopped (Ctrl-C), FAILED for one that raised or was terminated."""
    return RunStatus.to_string(RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED)


@contextmanager
def pipeline_run(cfg: DictConfig, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """The parent MLflow run of one pipeline run, with the resolved config as params and artifact."""
    experiment_id = configure(cfg)
    fail_stale_runs(MlflowClient(), experiment_id)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    all_tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), "git_commit": git_commit(), **tags}
    if "SLURM_JOB_ID" in os.environ:  # find the job's logs (sacct, .submitit/) from its run, and back
        all_tags[SLURM_TAG] = os.environ["SLURM_JOB_ID"]
    with _terminate_raises(), mlflow.start_run(run_name=run_name, tags=all_tags) as run:
        try:
            log_params(flatten(resolved))
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            yield run
        except BaseException as error:
            mlflow.end_run(end_status(error))
            if isinstance(error, KeyboardInterrupt):
                log.warning(
                    "Run %s stopped by Ctrl-C and marked KILLED: rerun the same command to resume (finished "
                    "stages are reused, a stopped training continues from its last checkpoint)",
                    run.info.run_id,
                )
            raise


def log_choice(cfg: DictConfig, chosen: str, figures: dict[str, float]) -> None:
    """On the pipeline run, what `model=auto` chose: the tag `select.chosen`, each candidate's validation signal
    (`select/<name>/val_signal`), the chosen model, inputs and scoring as `select.chosen.*` params,
    and `config.yaml` rewritten as the chosen detector's, so `polydefect.inspect` rebuilds the detector that scored."""
    mlflow.set_tag(CHOSEN_TAG, chosen)
    mlflow.log_metrics({f"select/{name}/val_signal": value for name, value in figures.items() if math.isfinite(value)})
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log_params(flatten({name: resolved[name] for name in ("model", "preprocess", "scoring")}, "select.chosen."))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


@contextmanager
def stage_run(name: str) -> Iterator[mlflow.ActiveRun]:
    """A nested run for one stage inside the active pipeline run; FAILED if the stage raises, KILLED on Ctrl-C."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), "stage": name}
    with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
        try:
            yield run
        except BaseException as error:
            mlflow.end_run(end_status(error))
            raise


def set_description(text: str) -> None:
    """The active run's description: the note the MLflow UI shows (Markdown) on the run's page."""
    mlflow.set_tag(MLFLOW_RUN_NOTE, text)


def log_final_metrics(metrics: dict[str, float]) -> None:
    """Copy the stages' headline metrics onto the parent run, where tables and the UI compare runs."""
    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
    if finite:
        mlflow.log_metrics(finite)
