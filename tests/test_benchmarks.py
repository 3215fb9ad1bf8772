"""The speed and memory benchmarks (benchmarks/run.py, issue 8) run end to end at toy sizes and report every
figure the issue asks for; the figures' values are the README's business, not the tests'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.paths import REPO

REQUIRED = (
    "gemm_gflops",
    "cae_model_windows_per_s",
    "cae_model_gflops",
    "pipeline_images_per_s",
    "pipeline_to_model_ratio",
    "train_datamodule_to_tensor_ratio",
    "peak_rss_mb_60",
    "peak_rss_mb_240",
    "feature_memory_model_images_per_s",
    "feature_memory_pipeline_images_per_s",
    "feature_memory_decode_images_per_s",
    "feature_memory_network_images_per_s",
    "feature_memory_search_images_per_s",
    "feature_memory_pipeline_to_parts_ratio",
    "feature_memory_full_size_pipeline_to_parts_ratio",
    "mean_mask_peak_rss_mb_4",
    "ensemble_images_per_s",
    "ensemble_shared_speedup",
    "coreset_seconds_1",
    "coreset_seconds_10",
    "coreset_seconds_25",
    "coreset_growth_4x_10",
    "hnsw_recall_at_1",
    "hnsw_speedup",
    "ivf_recall_at_1",
    "ivf_speedup",
    "ensemble_ivf_shared_speedup",
    "ensemble_ivf_1_cells_ms",
    "ensemble_ivf_8_cells_recall_at_1",
    "ensemble_ivf_assign_ms",
)


def test_toy_benchmark_writes_every_required_figure_as_a_positive_number(tmp_path: Path) -> None:
    out, data = tmp_path / "figures.json", tmp_path / "data"
    command = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--profile", "toy", "--threads", "1"]
    result = subprocess.run(
        [*command, "--json", str(out), "--data", str(data)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    missing = [key for key in REQUIRED if key not in figures]
    assert not missing, f"figures missing from the JSON: {missing}"
    assert all(figures[key] > 0 for key in REQUIRED), {key: figures[key] for key in REQUIRED}
    assert figures["cae_windows_per_image"] == 6  # 192x128 px in 64 px cores: 3 x 2 windows
    assert figures["machine"]["torch"] == torch.__version__ and figures["machine"]["threads"] == 1
    assert len(list(data.glob("batch_*/images/*.png"))) == 4  # the larger memory run's images, kept in --data
    assert "pipeline_to_model_ratio" in result.stdout  # the printed table


# Slow: two more tiny multiruns (~70 s on 2 cores). The multirun and its reuse of cached stages are checked in
# every CI run by tests/test_sweeps.py; this checks the script that times them.
@pytest.mark.slow
def test_sweep_benchmark_times_a_cold_and_a_warm_multirun(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    command = [sys.executable, str(REPO / "benchmarks" / "sweep.py"), "--experiment", "tiny", "--keep", str(tmp_path)]
    result = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["sweep_change"] == "model.optimizer.lr=0.0005"
    assert figures["sweep_warm_s"] > 0 and figures["sweep_cold_s"] > 0
    # the warm run renders and segments nothing (its time is no test: on a shared machine it is noise)
    assert "Stage segment: reusing cached result" in (tmp_path / "warm.log").read_text()
    assert "Stage segment: reusing" not in (tmp_path / "cold.log").read_text()
    assert (tmp_path / "cache" / "polydefect" / "stages" / "detect").is_dir()
