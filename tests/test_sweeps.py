"""A tiny Hydra multirun with the joblib launcher: two experiments in parallel into one SQLite store, then the
same sweep again, which reuses every trained stage from the stage cache."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from helpers.tiny import run_app, store_uri, tiny_overrides
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

EXPERIMENTS = ("real", "synthetic")


def sweep(root: Path, folder: str) -> None:
    """Run the sweep into `root / folder`, keeping its console output there as `stdout.txt`."""
    args = ["-m", "hydra/launcher=joblib", f"+experiment={','.join(EXPERIMENTS)}", *tiny_overrides(root)]
    result = run_app([*args, f"hydra.sweep.dir={root / folder}"], cwd=root, timeout=400)
    (root / folder / "stdout.txt").write_text(result.stdout)


def runs_by_parent(root: Path) -> tuple[list[Run], dict[str, dict[str, Run]]]:
    """Parent runs (oldest first) and, per parent run id, its stage runs by stage name."""
    mlflow.set_tracking_uri(store_uri(root))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("polydefect")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stages: dict[str, dict[str, Run]] = {p.info.run_id: {} for p in parents}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            stages[r.data.tags["mlflow.parentRunId"]][r.info.run_name] = r
    return parents, stages


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweeps")
    sweep(root, "first")
    sweep(root, "second")
    return root


def test_both_sweeps_log_every_run_finished_into_one_store(two_sweeps: Path) -> None:
    parents, stages = runs_by_parent(two_sweeps)
    assert sorted(p.info.run_name for p in parents) == sorted(EXPERIMENTS * 2)
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert set(stages[parent.info.run_id]) == {"data", "segment", "detect", "evaluate"}
        assert {s.info.status for s in stages[parent.info.run_id].values()} == {"FINISHED"}


def test_each_run_has_its_experiments_params_metrics_and_artifacts(two_sweeps: Path) -> None:
    parents, _ = runs_by_parent(two_sweeps)
    client = MlflowClient()
    for parent in parents:
        name = parent.info.run_name
        assert parent.data.params["data.variant"] == name
        assert parent.data.tags["choice.experiment"] == name
        assert 0 <= parent.data.metrics["test/global/image_auroc"] <= 1
        assert 0 <= parent.data.metrics["segment/test_f1"] <= 1
        assert "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert len({p.data.metrics["segment/test_f1"] for p in parents if p.info.run_name == "real"}) == 1


def test_each_job_prints_its_own_summary_which_is_its_runs_description(two_sweeps: Path) -> None:
    parents, _ = runs_by_parent(two_sweeps)
    console = (two_sweeps / "first" / "stdout.txt").read_text()
    assert console.count("## polydefect run") == len(EXPERIMENTS)
    for parent in parents[: len(EXPERIMENTS)]:
        assert parent.data.tags[MLFLOW_RUN_NOTE] in console


def test_the_second_sweep_reuses_the_trained_stages(two_sweeps: Path) -> None:
    parents, stages = runs_by_parent(two_sweeps)
    first, second = parents[:2], parents[2:]
    for parent, hit in [(p, "False") for p in first] + [(p, "True") for p in second]:
        for stage in ("segment", "detect"):
            assert stages[parent.info.run_id][stage].data.tags["stage_cache_hit"] == hit, (parent.info.run_name, stage)


def test_parallel_jobs_opening_a_new_sqlite_store_lose_no_run(tmp_path: Path) -> None:
    job = textwrap.dedent(
        f"""
        import mlflow
        from omegaconf import OmegaConf
        from polydefect import tracking
        cfg = OmegaConf.create({{"mlflow": {{"tracking_uri": "{store_uri(tmp_path)}", "experiment_name": "e"}},
                                 "seed": 0}})
        with tracking.pipeline_run(cfg, "job", {{}}):
            for step in range(10):
                with tracking.stage_run("stage"):
                    mlflow.log_metric("m", step)
        """
    )
    jobs = [subprocess.Popen([sys.executable, "-c", job], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [j.communicate(timeout=300)[1] for j in jobs]
    assert all(j.returncode == 0 for j in jobs), "\n".join(errors)
    mlflow.set_tracking_uri(store_uri(tmp_path))
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id], max_results=1000)
    assert len(runs) == 4 * 11
    assert {r.info.status for r in runs} == {"FINISHED"}
