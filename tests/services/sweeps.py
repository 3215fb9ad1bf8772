"""The tiny sweep the scale-out tests send through SLURM, and reading its runs back from an MLflow store."""

from __future__ import annotations

from pathlib import Path

from helpers.tiny import tiny_overrides
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

# One CPU and 1 GB per job: both jobs of a two-job sweep fit at once on a 2-core test node.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def slurm_sweep(root: Path, tracking_uri: str, *overrides: str) -> list[str]:
    """`python -m polydefect` arguments of a tiny `-m` sweep through SLURM into `tracking_uri`.

    Args:
        root: holds the generated data, the stage cache and the sweep folder.
        tracking_uri: the MLflow store every job logs to.
        overrides: the swept and changed keys, e.g. `model=cae,dae`.
    """
    base = [o for o in tiny_overrides(root) if not o.startswith(("segmenter.", "mlflow.tracking_uri="))]
    return ["-m", *SLURM, "+experiment=tiny", *base, f"mlflow.tracking_uri={tracking_uri}", *overrides]


def pipeline_runs(client: MlflowClient, experiment: str = "polydefect") -> list[Run]:
    """The parent runs (one per pipeline run) of the experiment, newest first."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def stage_runs(client: MlflowClient, parent: Run) -> dict[str, Run]:
    """The nested stage runs of a pipeline run, by stage name."""
    found = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in found}
