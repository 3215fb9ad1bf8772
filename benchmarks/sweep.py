"""Sweep wall time, cold and with the stage cache warm: `python benchmarks/sweep.py [--json PATH] [OVERRIDE ...]`.

Runs the thesis matrix (`python -m polydefect -m +experiment=thesis`) twice in a fresh cache: first cold
(rendering the embedded data, training every segmenter and detector), then with only an autoencoder setting
changed (`--change`, by default the learning rate), which must reuse the cached data and segmentation and
retrain only the detectors. Prints both wall times and their ratio. Takes as long as the two sweeps
(budget=quick: about 20 minutes on 2 idle cores); not part of `run.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_multirun(overrides: list[str], scratch: Path, name: str) -> float:
    """Wall seconds of one `python -m polydefect -m ...` in `scratch`'s cache and MLflow store."""
    command = [
        sys.executable,
        "-m",
        "polydefect",
        "-m",
        *overrides,
        f"mlflow.tracking_uri=sqlite:///{scratch / 'mlflow.db'}",
        f"hydra.sweep.dir={scratch / name}",
    ]
    environment = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    started = time.perf_counter()
    with open(scratch / f"{name}.log", "w") as log:
        result = subprocess.run(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}); see {scratch / name}.log")
    return time.perf_counter() - started


def sweep_figures(experiment: str, overrides: list[str], change: str, scratch: Path) -> dict[str, float | str]:
    """Cold and warm wall times of `+experiment=<experiment>` with `overrides`; the warm run adds `change`."""
    base = [f"+experiment={experiment}", *overrides]
    cold = timed_multirun(base, scratch, "cold")
    warm = timed_multirun([*base, change], scratch, "warm")
    return {
        "sweep": " ".join(base),
        "sweep_change": change,
        "sweep_cold_s": cold,
        "sweep_warm_s": warm,
        "sweep_warm_to_cold_ratio": warm / cold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="added to both sweeps, e.g. budget=quick")
    parser.add_argument("--experiment", default="thesis", help="the multirun experiment (default: thesis)")
    parser.add_argument("--change", default="model.optimizer.lr=0.0005", help="the warm run's autoencoder change")
    parser.add_argument("--keep", type=Path, help="folder for the caches, logs and MLflow store (default: temp)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="polydefect_sweep_") as temporary:
        scratch = args.keep or Path(temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        figures = sweep_figures(args.experiment, args.overrides, args.change, scratch.resolve())
    print("\n".join(f"{key:>26}  {value}" for key, value in figures.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
