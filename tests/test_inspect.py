"""`python -m polydefect.inspect`: a trained run scores a new batch into an HTML + CSV anomaly report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.thesis import write_thesis_fixture
from helpers.tiny import store_uri, trained_tiny_runs, untrained_tiny_cae
from omegaconf import DictConfig, OmegaConf, open_dict

from polydefect.inspect import inspect_folder
from polydefect.scoring.spc import ControlLimits
from polydefect.scoring.stream import iter_scores, score_stream


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.getbasetemp() / "trained_tiny"
    return root, trained_tiny_runs(root)


@pytest.fixture(scope="module")
def new_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three unseen batches of the same views; batch 2 has scratches."""
    return write_thesis_fixture(tmp_path_factory.mktemp("new_batch"), batches=3, positions=2, defective=(2,))


def inspect_cfg(run: str, tracking_uri: str, root: Path) -> DictConfig:
    return OmegaConf.create(
        {
            "run": run,
            "data": {"root": str(root), "layout": "auto"},
            "mlflow": {"tracking_uri": tracking_uri},
            "threshold": "per_view",
            "overlays": 4,
        }
    )


@pytest.fixture(scope="module")
def report(trained, new_batch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, runs = trained
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:  # nothing may be unpickled: torch.load must not even be called
        patch.setattr(torch, "load", lambda *a, **k: pytest.fail("inspect called torch.load"))
        return inspect_folder(inspect_cfg(runs["tiny_cae"], store_uri(root), new_batch), out)


def test_the_csv_has_a_score_and_verdict_per_image_and_the_nqi_of_its_view(report: Path) -> None:
    table = pd.read_csv(report / "report.csv")
    assert len(table) == 3 * 2 * 2
    for column in ("image_path", "batch", "view", "score", "threshold", "anomalous", "nqi", "ucl", "overlay"):
        assert column in table.columns
    assert table["score"].notna().all() and table["anomalous"].dtype == bool
    assert table["overlay"].notna().sum() == 4


def test_the_control_limits_are_the_ones_the_run_saved_not_refitted(report: Path) -> None:
    limits = ControlLimits.from_dict(json.loads((report / "pipeline" / "spc_limits.json").read_text()))
    table = pd.read_csv(report / "report.csv")
    assert np.allclose(table["ucl"], [limits.ucl(view) for view in table["view"]])
    assert limits.reference_batches  # fitted on the run's good training batches


def test_the_html_shows_the_run_the_batch_verdicts_and_the_overlays(report: Path, trained) -> None:
    page = (report / "report.html").read_text()
    assert trained[1]["tiny_cae"] in page
    assert "Batches (nQI" in page
    overlays = sorted((report / "overlays").glob("*.png"))
    assert len(overlays) == 4
    for overlay in overlays:
        assert f'src="overlays/{overlay.name}"' in page
    assert len(pd.read_csv(report / "batches.csv")) == 3


def test_the_command_line_takes_a_run_output_folder_and_prints_the_report(trained, new_batch, tmp_path: Path) -> None:
    root, _ = trained
    out = tmp_path / "inspection"
    args = [f"run={root / 'out' / 'dae'}", f"data.root={new_batch}", f"hydra.run.dir={out}", "overlays=2"]
    result = subprocess.run(
        [sys.executable, "-m", "polydefect.inspect", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Report: {out / 'report.html'}" in result.stdout
    assert len(pd.read_csv(out / "report.csv")) == 12


def test_a_folder_that_is_no_run_output_is_named_in_the_error(new_batch, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run=.*mlflow_run\.json"):
        inspect_folder(inspect_cfg(str(tmp_path), "sqlite:///unused.db", new_batch), tmp_path / "out")


def test_streamed_scoring_keeps_only_the_highest_scored_maps_and_matches_scoring_all(tmp_path: Path) -> None:
    cfg, task, samples, _ = untrained_tiny_cae(tmp_path)
    with open_dict(cfg):
        cfg.data.batch_size = 3
    scores, sums, top, vmax = score_stream(task, samples, cfg, keep=3)
    scored = list(iter_scores(task, samples, cfg.scoring, cfg.detect.map_sigma, 3))
    all_scores, all_sums = np.array([s.score for s in scored]), np.array([s.map_sum for s in scored])
    maps = [s.anomaly_map for s in scored]
    assert np.array_equal(scores, all_scores) and np.array_equal(sums, all_sums)
    assert list(top) == list(np.argsort(-all_scores, kind="stable")[:3])
    for index, (amap, _) in top.items():
        assert np.array_equal(amap, maps[index])
    exact = np.percentile(np.concatenate([m[m > 0] for m in maps]), 99.5)
    assert vmax == pytest.approx(exact, rel=0.1)
