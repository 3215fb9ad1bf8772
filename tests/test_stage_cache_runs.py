"""Real tiny runs on one stage cache: an unchanged rerun reuses every stage and names the run that built it, a
training image replaced under the same `data.root` retrains, and `python -m polydefect.cache` lists and clears.

The first run is the session's trained tiny CAE run (`trained_tiny_runs`), so only the rerun (cached) and the run
on the replaced image (trained) are added; the image is put back afterwards for the other tests sharing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cache import image_replaced
from helpers.tiny import compose_tiny, store_uri, trained_tiny_runs
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from polydefect.pipeline.run import run
from polydefect.stage_cache import BUILT_BY_TAG

Runs = dict[str, dict[str, Run]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "trained_tiny"


def stage_runs(root: Path, parent: str) -> dict[str, Run]:
    client = MlflowClient(store_uri(root))
    experiment = client.get_experiment_by_name("polydefect").experiment_id
    return {
        stage.info.run_name: stage
        for stage in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    }


def rerun(root: Path, name: str) -> str:
    """The session's tiny CAE run again, as `name` and into its own output folder; returns its run id."""
    cfg = compose_tiny(root, "model=cae", f"name={name}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out" / name)
    return run(cfg)["run_id"]


@pytest.fixture(scope="module")
def runs(root: Path) -> Runs:
    """The stage runs of each run by stage name: the first run, an unchanged rerun, and a rerun after one training
    image was replaced (same path, other pixels, later modification time)."""
    parents = {"first": trained_tiny_runs(root)["tiny_cae"], "unchanged": rerun(root, "unchanged")}
    with image_replaced(root / "data" / "real" / "batch_03" / "images" / "p01_c0.png"):  # batches 1-2 test
        parents["replaced"] = rerun(root, "replaced")
    return {name: stage_runs(root, parent) for name, parent in parents.items()}


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


def test_the_cache_command_lists_each_stage_with_its_builder_and_clears_one(root: Path, runs: Runs) -> None:
    def cache(*args: str) -> str:
        command = [sys.executable, "-m", "polydefect.cache", *args, "--root", str(root / "cache")]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    listed = cache("list")
    built = {  # (run, cache stage): the detect stage's run builds the fit and the scores
        (runs[name][stage].info.run_id, entry)
        for name in ("first", "replaced")
        for stage, entries in (("segment", ["segment"]), ("detect", ["fit", "detect"]))
        for entry in entries
    }
    builders = {run_id for run_id, _ in built}
    rows = [line.split() for line in listed.splitlines() if line.split()[-2] in builders]
    assert {(row[-2], row[0]) for row in rows} == built and len(rows) == len(built)
    assert {row[-1] for row in rows} == {"complete"}
    replaced_run = runs["replaced"]["detect"].info.run_id
    (replaced,) = [row[1] for row in rows if row[-2] == replaced_run and row[0] == "detect"]  # no other test reads it
    (fitted,) = [row[1] for row in rows if row[-2] == replaced_run and row[0] == "fit"]
    assert cache("clear", "--stage", "detect", "--key", replaced).count("removing ") == 1
    after = [line.split()[:2] for line in cache("list").splitlines()]
    assert ["detect", replaced] not in after and ["fit", fitted] in after  # the fit of the same run stays
    assert runs["first"]["detect"].info.run_id in cache("list")
