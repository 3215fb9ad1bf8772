"""Real tiny runs on one stage cache: an unchanged rerun reuses every stage and names the run that built it, a
training image replaced under the same `data.root` retrains, and `python -m polydefect.cache` lists and clears."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cache import replace_image
from helpers.tiny import compose_tiny, store_uri
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from polydefect.pipeline.run import run
from polydefect.stage_cache import BUILT_BY_TAG

RUNS = ("first", "unchanged", "replaced")


Runs = dict[str, dict[str, Run]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reuse")


@pytest.fixture(scope="module")
def runs(root: Path) -> Runs:
    """The stage runs of each run by stage name: a first run, an unchanged rerun, and a rerun after one training
    image was replaced (same path, other pixels, later modification time)."""
    found = {}
    for name in RUNS:
        if name == "replaced":
            replace_image(root / "data" / "real" / "batch_03" / "images" / "p01_c0.png")  # batches 1-2 test
        cfg = compose_tiny(root, f"name={name}")
        parent = run(cfg)["run_id"]
        client = MlflowClient(store_uri(root))
        experiment = client.get_experiment_by_name(cfg.mlflow.experiment_name).experiment_id
        stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
        found[name] = {stage.info.run_name: stage for stage in stages}
    return found


def tag(runs: Runs, name: str, stage: str, key: str) -> str:
    return runs[name][stage].data.tags[key]


def test_an_unchanged_rerun_reuses_every_stage(runs: Runs) -> None:
    hits = [
        (tag(runs, "first", stage, "stage_cache_hit"), tag(runs, "unchanged", stage, "stage_cache_hit"))
        for stage in ("segment", "detect")
    ]
    assert hits == [("False", "True")] * 2


def test_a_reused_stage_names_the_run_that_built_it(runs: Runs) -> None:
    for stage in ("segment", "detect"):
        builder = runs["first"][stage].info.run_id
        assert tag(runs, "first", stage, BUILT_BY_TAG) == builder
        assert tag(runs, "unchanged", stage, BUILT_BY_TAG) == builder


def test_a_training_image_replaced_under_the_same_root_retrains_the_segmenter_and_the_detector(runs: Runs) -> None:
    for stage in ("segment", "detect"):
        assert tag(runs, "replaced", stage, "stage_cache_hit") == "False"
        assert tag(runs, "replaced", stage, BUILT_BY_TAG) == runs["replaced"][stage].info.run_id


def test_the_cache_command_lists_each_stage_with_its_builder_and_clears_a_stage(root: Path, runs: Runs) -> None:
    def cache(*args: str) -> str:
        command = [sys.executable, "-m", "polydefect.cache", *args, "--root", str(root / "cache")]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    listed = cache("list")
    for name in ("first", "replaced"):
        for stage in ("segment", "detect"):
            assert runs[name][stage].info.run_id in listed
    assert listed.count("complete") == 4
    assert cache("clear", "--stage", "detect").count("removing ") == 2
    assert "detect" not in cache("list")
