"""Speed and memory benchmarks of polydefect (issue 8): `python benchmarks/run.py [--quick] [--json PATH]`.

Prints a table of figures and the machine they were measured on; see benchmarks/README.md for what each means.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anomalib_speed import DEFAULT_VENV, anomalib_figures
from app_config import compose_config
from feature_detectors import coreset_figures, ensemble_figures, search_figures
from gemm import gemm_gflops
from inference import cae_figures, feature_memory_figures
from machine import describe
from memory import measure, run_peak_rss
from thesis_data import THESIS_SIZE, write_thesis_images
from training import training_figures

from polydefect.allocator import reuse_freed_memory


@dataclass(frozen=True)
class Profile:
    """How much work each benchmark does: `full` for the README, `quick` for a look, `toy` for the tests."""

    size: tuple[int, int]  # image (width, height)
    tile: tuple[int, int] | None  # (core, window) overriding preprocess=thesis; None keeps 256 / 320
    gemm_size: int
    rounds: int  # best-of rounds for every rate
    inference_images: int
    train_steps: int
    memory_counts: tuple[int, int]  # images in the two scoring / mean-mask runs (peak_rss_mb_60 and _240)
    memory_model: str  # detector scored in the memory runs (see README: the figure is about the data held)
    ensemble: tuple[int, int]  # (training images, px) of the default ensemble's banks and inputs
    coreset_patches: int  # rows of the smaller coreset run (the larger has 4x)
    search: tuple[int, int]  # (bank rows, queries) of the exact-against-HNSW search
    model: tuple[str, ...] = ()  # overrides of the CAE (toy: a narrow one)


PROFILES = {
    "full": Profile(THESIS_SIZE, None, 4096, 3, 6, 12, (60, 240), "dae", (640, 256), 70_000, (25_000, 6_400)),
    "quick": Profile(THESIS_SIZE, None, 2048, 1, 1, 2, (12, 48), "dae", (160, 256), 20_000, (10_000, 3_200)),
    "toy": Profile(
        (192, 128), (64, 96), 256, 1, 2, 2, (2, 4), "dae", (8, 64), 2_000, (2_000, 200), ("model.net.widths=[4,8]",)
    ),
}
FEATURE_DIMS = 344  # EfficientNet-Lite0 stages 2, 4, 5 concatenated: the default feature memory's patch features


def _overrides(profile: Profile) -> list[str]:
    overrides = ["preprocess=thesis", f"preprocess.size=[{profile.size[0]},{profile.size[1]}]"]
    if profile.tile:
        overrides += [f"preprocess.tile.core={profile.tile[0]}", f"preprocess.tile.window={profile.tile[1]}"]
    return overrides


def memory_figures(profile: Profile, data_root: Path, overrides: list[str]) -> dict[str, Any]:
    """Peak RSS of scoring and of the per-view mean masks at the profile's two image counts, and the growth."""
    scoring = [*overrides, f"model={profile.memory_model}"]
    counts = profile.memory_counts
    jobs = [("score", count, scoring) for count in counts] + [("mean_mask", count, []) for count in counts]
    results = measure(jobs, data_root)
    figures: dict[str, Any] = {}
    for (job, count, _), result in zip(jobs, results, strict=True):
        figures[f"{job}_peak_rss_mb_{count}"] = result["peak_rss_mb"]
        figures[f"{job}_baseline_rss_mb_{count}"] = result["baseline_rss_mb"]
    small, large = counts
    figures["peak_rss_mb_60"] = figures[f"score_peak_rss_mb_{small}"]
    figures["peak_rss_mb_240"] = figures[f"score_peak_rss_mb_{large}"]
    growth = figures[f"score_peak_rss_mb_{large}"] - figures[f"score_peak_rss_mb_{small}"]
    figures["score_rss_growth_mb_per_100_images"] = 100 * growth / (large - small)
    return figures


def run(profile: Profile, data_root: Path, device: torch.device, reuse_freed: bool = True) -> dict[str, Any]:
    """Every benchmark in turn; returns the flat dictionary of figures (see README for the keys)."""
    overrides = _overrides(profile)
    overrides.append(f"reuse_freed_memory={str(reuse_freed).lower()}")
    trainer = "trainer=gpu" if device.type == "cuda" else "trainer=cpu"  # gpu: bf16 mixed-precision training
    cae = compose_config(*overrides, *profile.model, trainer)
    reuse_freed_memory(cae.reuse_freed_memory)  # as `polydefect.pipeline.run` does
    memory_bank = compose_config(*overrides, trainer, "model=patchcore")
    side = memory_bank.model.input_size  # preprocessed at the network's size: maps and pixel metrics at it too
    at_network_size = compose_config(*overrides, trainer, "model=patchcore", f"preprocess.size=[{side},{side}]")
    ensemble = compose_config(trainer, "model=ensemble")
    table = write_thesis_images(data_root, max(profile.memory_counts), profile.size)
    images = table.iloc[: profile.inference_images]
    sections = {
        "gemm": lambda: {"gemm_gflops": gemm_gflops(device, profile.gemm_size, profile.rounds)},
        "cae_inference": lambda: cae_figures(cae, images, profile.rounds, device),
        "feature_memory_inference": lambda: feature_memory_figures(
            at_network_size, memory_bank, images, profile.rounds, device
        ),
        "ensemble": lambda: ensemble_figures(ensemble, *profile.ensemble, profile.rounds),
        "coreset": lambda: coreset_figures(profile.coreset_patches, FEATURE_DIMS, profile.rounds),
        "search": lambda: search_figures(*profile.search, FEATURE_DIMS),
        "training": lambda: training_figures(cae, images, profile.train_steps),
        "memory": lambda: memory_figures(profile, data_root, overrides),
    }
    figures: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, section in sections.items():
        started = time.perf_counter()
        figures.update(section())
        seconds[name] = round(time.perf_counter() - started, 1)
    figures["cae_to_gemm_ratio"] = figures["cae_model_gflops"] / figures["gemm_gflops"]
    figures["section_seconds"] = seconds
    return figures


def _table(machine: dict[str, Any], figures: dict[str, Any]) -> str:
    lines = [f"{key:>40}  {value}" for key, value in machine.items()]
    lines.append("")
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:>40}  {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (about 2 minutes)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="full (default), quick or toy (tests)")
    parser.add_argument("--json", type=Path, help="write the figures and the machine here")
    parser.add_argument("--data", type=Path, help="folder for the generated images (kept; default: a temp dir)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the reference machine has 2 cores)")
    parser.add_argument("--glibc-defaults", action="store_true", help="reuse_freed_memory=false (for comparison)")
    parser.add_argument(
        "--anomalib", action="store_true", help="also polydefect's PatchCore against anomalib's (installs a venv)"
    )
    parser.add_argument(
        "--mvtec", type=Path, help="also the peak RSS of a default run on this MVTec-layout folder (minutes)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="polydefect_bench_") as scratch:
        figures = run(profile, args.data or Path(scratch), device, not args.glibc_defaults)
    if args.anomalib:  # anomalib_speed.py's default images and input size, generated in a temp dir of its own
        figures.update(anomalib_figures(DEFAULT_VENV, threads=args.threads))
    if args.mvtec:  # `python -m polydefect data=mvtec data.root=...` as a user runs it: model=auto's candidates
        default_run = run_peak_rss(args.mvtec)
        figures["feature_memory_peak_rss_mb"] = default_run["peak_rss_mb"]
        figures["default_run_seconds"] = default_run["seconds"]
    machine = describe(device)
    print(_table(machine, figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, **figures}, indent=2))


if __name__ == "__main__":
    main()
