"""Peak memory (RSS) of the scoring path and of the per-view mean masks, each measured in a fresh child process
so that runs over 60 and 240 images are independent: `python benchmarks/memory.py JOB ROOT COUNT [OVERRIDES]`;
and of a whole default run on an MVTec-layout folder (`run_peak_rss`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak), MB.

    VmHWM belongs to this process image alone; `getrusage`'s ru_maxrss would carry the parent's peak over
    the fork and exec that started this child.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} (peak memory is measured on Linux only)")


def _score(root: Path, count: int, overrides: list[str]) -> Callable[[], object]:
    """The detect stage's scoring of `count` test images (read, preprocess, reconstruct, score, archive maps)."""
    from app_config import compose_config
    from inference import score_table
    from thesis_data import thesis_table

    from polydefect.tasks.base import build_detector

    cfg = compose_config("preprocess=thesis", *overrides)
    table = thesis_table(root, count)
    task = build_detector(cfg.model).eval()
    return lambda: score_table(cfg, task, table)


def _score_eager(root: Path, count: int, overrides: list[str]) -> Callable[[], object]:
    """Scoring as the detect stage did before streaming: every sample loaded first, every map kept (for the
    before/after figure in benchmarks/README.md)."""
    from app_config import compose_config
    from thesis_data import thesis_table

    from polydefect.data.sample import load_samples
    from polydefect.scoring.stream import iter_scores
    from polydefect.tasks.base import build_detector

    cfg = compose_config("preprocess=thesis", *overrides)
    table = thesis_table(root, count)
    task = build_detector(cfg.model).eval()

    def work() -> object:
        samples = load_samples(table, cfg.preprocess)
        return list(iter_scores(task, samples, cfg.scoring, cfg.detect.map_sigma, cfg.data.batch_size))

    return work


def _inspect(root: Path, count: int, overrides: list[str]) -> Callable[[], object]:
    """`polydefect.inspect`'s scoring of `count` images: read as scored, the 48 highest-scored maps kept."""
    from app_config import compose_config
    from thesis_data import thesis_table

    from polydefect.data.sample import LazySamples
    from polydefect.scoring.stream import score_stream
    from polydefect.tasks.base import build_detector

    cfg = compose_config("preprocess=thesis", *overrides)
    table = thesis_table(root, count)
    task = build_detector(cfg.model).eval()
    return lambda: score_stream(task, LazySamples(table, cfg.preprocess), cfg, 48)


def _mean_mask(root: Path, count: int, overrides: list[str]) -> Callable[[], object]:
    """The segment stage's mask prediction with `segment.mean_mask=true` (a classical segmenter: no training)."""
    from app_config import compose_config
    from thesis_data import thesis_table

    from polydefect.pipeline.segment import _predict_all
    from polydefect.segmentation.base import build_segmenter

    cfg = compose_config("segmenter=otsu", *overrides)
    table = thesis_table(root, count)
    segmenter = build_segmenter(cfg.segmenter)
    folder = Path(tempfile.mkdtemp(prefix="mean_mask_", dir=root))
    return lambda: _predict_all(segmenter, table, folder, mean_mask=True)


JOBS = {"score": _score, "score_eager": _score_eager, "inspect": _inspect, "mean_mask": _mean_mask}


def child(job: str, root: Path, count: int, overrides: list[str]) -> dict[str, Any]:
    """Run one job in this process; its peak RSS and the RSS before the work began (imports, model), MB."""
    import torch
    from app_config import compose_config

    from polydefect.allocator import reuse_freed_memory

    torch.set_num_threads(2)
    reuse_freed_memory(compose_config(*overrides).reuse_freed_memory)  # as `polydefect.pipeline.run` does
    work = JOBS[job](root, count, overrides)
    baseline = _status_mb("VmRSS")
    started = time.perf_counter()
    work()
    return {"peak_rss_mb": _status_mb("VmHWM"), "baseline_rss_mb": baseline, "seconds": time.perf_counter() - started}


def measure(jobs: Sequence[tuple[str, int, Sequence[str]]], root: Path) -> list[dict[str, Any]]:
    """Run each (job, image count, config overrides) over the images of `root` in its own child process, all
    at once (each child's peak is its own); their peak RSS, RSS before the work (MB) and seconds, in order."""
    children = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), job, str(root), str(count), *overrides],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job, count, overrides in jobs
    ]
    results = []
    for (job, count, _), process in zip(jobs, children, strict=True):
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"memory job {job} over {count} images failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def run_peak_rss(data_root: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Peak RSS (MB) and seconds of a whole `python -m polydefect data=mvtec data.root=<data_root>` run, in a
    fresh stage cache and MLflow store: the default detector choice (`model=auto`: every candidate trained and
    validated), scoring and evaluation, as a user runs it. The peak is the run's process tree's (wait4)."""
    from app_config import fresh_store

    with tempfile.TemporaryDirectory(prefix="run_rss_") as scratch:
        folder = Path(scratch)
        command = [
            sys.executable,
            "-m",
            "polydefect",
            "data=mvtec",
            f"data.root={data_root}",
            *fresh_store(folder),
            f"hydra.run.dir={folder / 'out'}",
            *overrides,
        ]
        started = time.perf_counter()
        with open(folder / "run.log", "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if process.returncode != 0:
            tail = (folder / "run.log").read_text()[-4000:]
            raise RuntimeError(f"polydefect data=mvtec data.root={data_root} failed:\n{tail}")
        return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    job_name, folder_arg, count_arg, *rest = sys.argv[1:]
    if job_name not in JOBS:
        raise SystemExit(f"unknown job {job_name!r}; choose one of {list(JOBS)}")
    print(json.dumps(child(job_name, Path(folder_arg), int(count_arg), rest)))
