"""A tiny pipeline run: generated thesis-layout data, overrides that shrink every stage, a temp MLflow store.

Every runner test composes (or launches) the real app with these overrides, so nothing renders and a whole
run trains for a few steps on 96x64 images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from helpers.paths import REPO
from helpers.thesis import write_thesis_fixture
from polydefect.config import register_configs
from polydefect.data.sample import LazySamples
from polydefect.data.splits import make_splits
from polydefect.tasks.base import DetectorTask, build_detector

CONF = REPO / "conf"


def write_tiny_data(root: Path) -> tuple[Path, Path]:
    """Real (batch 1 defective) and synthetic (all good) thesis-layout folders under `root`, made once. Each
    domain has its own seed: with one seed the synthetic batches would repeat the real test batches' pixels,
    and a mixed run would train on its test images."""
    real, synthetic = root / "real", root / "synthetic"
    if not real.exists():
        write_thesis_fixture(real, batches=4, positions=2, size=(96, 64), seed=0)
        write_thesis_fixture(synthetic, batches=2, positions=2, size=(96, 64), defective=(), seed=1)
    return real, synthetic


def store_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def tiny_overrides(root: Path, store: Path | None = None) -> list[str]:
    """Overrides for a seconds-long run on the data under `root`; the MLflow store and cache in `store`."""
    store = store or root
    real, synthetic = write_tiny_data(root / "data")
    return [
        "trainer=fast",
        f"data.root={real}",
        f"data.synthetic_root={synthetic}",
        "data.size=tiny",
        "data.batch_size=4",
        "preprocess.tile.core=32",
        "preprocess.tile.window=48",
        "segmenter.image_size=32",
        "segmenter.batch_size=4",
        "detect.samples=2",
        f"paths.cache_dir={store / 'cache'}",
        f"mlflow.tracking_uri={store_uri(store)}",
    ]


def compose_app(*overrides: str) -> DictConfig:
    """The app's root config composed with `overrides`, as `python -m polydefect OVERRIDES` would."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", list(overrides))


def compose_tiny(root: Path, *overrides: str, experiment: str = "tiny") -> DictConfig:
    """The composed config of a tiny run, for calling `polydefect.pipeline.run.run(cfg)` in-process."""
    cfg = compose_app(f"+experiment={experiment}", *tiny_overrides(root), *overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out")
    return cfg


def untrained_tiny_cae(root: Path) -> tuple[DictConfig, DetectorTask, LazySamples, pd.DataFrame]:
    """A tiny run's config, a small CAE as initialised with seed 0 (eval mode), the run's test images read as
    scored, and their table: for scoring tests that need a real detector and real samples, not training."""
    cfg = compose_tiny(root, "model.net.widths=[4,8]", "model.net.bottleneck=[8,4,8]")
    test = make_splits(cfg.data, {"real": Path(cfg.data.root), "synthetic": Path(cfg.data.synthetic_root)}, 0).test
    torch.manual_seed(0)
    task = build_detector(cfg.model).eval()
    return cfg, task, LazySamples(test, cfg.preprocess), test


def run_app(args: list[str], cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m polydefect ARGS` in a subprocess (one thread per process: the CI machine has 2 cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "polydefect", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"polydefect {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def trained_tiny_runs(root: Path) -> dict[str, str]:
    """Two finished tiny runs (CAE and DAE, sharing one trained U-Net) in the store under `root`, made once
    per test session: {run name: run id}. Tests that only read runs (inspect, notebook, UI) share them."""
    from polydefect.pipeline.run import run

    done = root / "runs.json"
    if not done.is_file():
        runs = {}
        for model in ("cae", "dae"):
            cfg = compose_tiny(root, f"model={model}", f"name=tiny_{model}")
            with open_dict(cfg):
                cfg.paths.output_dir = str(root / "out" / model)
            runs[f"tiny_{model}"] = run(cfg)["run_id"]
        done.write_text(json.dumps(runs))
    return json.loads(done.read_text())
