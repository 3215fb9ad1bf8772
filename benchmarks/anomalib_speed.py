"""polydefect's `model=patchcore` against anomalib's PatchCore: images/s of training + testing, same images, same
input size, same cores: `python benchmarks/anomalib_speed.py [--venv DIR] [--images N] [--size S] [--json PATH]`.

anomalib runs in a virtual environment of its own, installed on first use and reused after, because it needs
another torch than polydefect's. No backbone weights can be downloaded here, so its backbones are randomly
initialised (`pre_trained=False`): the figures compare speed, never accuracy. See benchmarks/README.md,
"anomalib comparison".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from app_config import compose_config, fresh_store
from omegaconf import open_dict
from thesis_data import VIEWS_PER_BATCH, write_thesis_images

from polydefect.pipeline.run import run as run_pipeline

# Installed together in one pip command, so nothing pulls another torch. anomalib's own requirements (timm,
# kornia, FrEIA, lightning, ...) come with it; none of its extras is needed for PatchCore: they add torch
# (cpu, cu126, ...), torchcodec (video), OpenVINO, loggers, notebooks or VLMs.
REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "anomalib==2.7.0")
DEFAULT_VENV = Path.home() / ".cache" / "polydefect" / "anomalib-venv"
READY = "polydefect-ready.txt"  # written into the venv once the install has finished: its requirements
CATEGORY = "planted"  # the MVTec-layout folder's name under the data root (anomalib's MVTecAD category)
DEFECTIVE_EVERY = 4  # every 4th batch of the generated thesis images has a scratch
BACKBONES = {"anomalib_patchcore": "wide_resnet50_2", "anomalib_patchcore_resnet18": "resnet18"}
# Default data: anomalib's greedy coreset grows with the square of the training patches (40 images at 256 px:
# 4 096 steps over 40 960 rows, 1-3 minutes a backbone on 2 shared cores), so a few minutes hold a small set.
# Under ~30 training images at 256 px its coreset can fragment glibc's heap past the machine's memory (README)
TRAIN, TEST, SIDE, SIZE = 40, 20, 288, 256

# The anomalib side, run by the venv's python with `-c`: argv = data root, category, input size, backbone,
# threads, results folder. Prints its wall and CPU times and image count as JSON on the last line of stdout.
CHILD = """
import json, resource, sys, time
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from anomalib.models import Patchcore

root, category, size, backbone, threads, results = sys.argv[1:]
size, threads = int(size), int(threads)
torch.set_num_threads(threads)
# val_split_mode=from_test: half the test images validate (thresholds), the other half test, so each
# image is scored once, as in polydefect; num_workers: one loader process per core
data = MVTecAD(root=root, category=category, num_workers=threads, val_split_mode="from_test", seed=0)
model = Patchcore(
    backbone=backbone,
    layers=["layer2", "layer3"],
    pre_trained=False,
    coreset_sampling_ratio=0.1,
    pre_processor=Patchcore.configure_pre_processor(image_size=(size, size)),
    visualizer=False,
)
engine = Engine(logger=False, default_root_dir=results, accelerator="cpu", devices=1, enable_progress_bar=False)


def cpu_seconds():  # this process and its loader workers (joined after each pass)
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


cpu, started = cpu_seconds(), time.perf_counter()
engine.fit(model, datamodule=data)
fitted = time.perf_counter()
engine.test(model, datamodule=data)
tested = time.perf_counter()
images = len(data.train_data) + len(data.val_data) + len(data.test_data)
timings = {"fit_s": fitted - started, "test_s": tested - fitted, "cpu_s": cpu_seconds() - cpu, "images": images}
print(json.dumps(timings))
"""


def ensure_venv(venv: Path) -> Path:
    """The venv's python; installs anomalib and its torch first where the venv is missing or was left half-done."""
    python = venv / "bin" / "python"
    ready = venv / READY
    if ready.is_file() and ready.read_text() == " ".join(REQUIREMENTS):
        return python
    if venv.is_dir() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").is_file():
        raise ValueError(f"--venv {venv}: a folder that is not a virtual environment; name an empty or new one")
    print(f"installing {' '.join(REQUIREMENTS)} into {venv} (once: about 6 GB, minutes)", file=sys.stderr)
    _install([sys.executable, "-m", "venv", "--clear", str(venv)], venv)
    _install([str(python), "-m", "pip", "install", *REQUIREMENTS], venv)
    ready.write_text(" ".join(REQUIREMENTS))
    return python


def _install(command: list[str], venv: Path) -> None:
    """Run one install step; a failure names the step and shows the end of its output."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(
            f"installing anomalib into {venv} failed: `{' '.join(command)}` exited {result.returncode}:\n{output}"
        )


def _batches(good: int, defective: int) -> int:
    """How many batches of generated thesis images hold `good` good and `defective` defective ones."""
    batches = 1
    while VIEWS_PER_BATCH * (batches // DEFECTIVE_EVERY) < defective or (
        VIEWS_PER_BATCH * (batches - batches // DEFECTIVE_EVERY) < good
    ):
        batches += 1
    return batches


def write_mvtec(root: Path, train: int, test: int, side: int) -> Path:
    """The benchmarks' generated part images (`thesis_data.py`, `side` px square) in the MVTec AD layout, which
    both tools read: `train` good training images, `test` test images, half of them with a scratch.

    Returns:
        the category folder (polydefect's `data.root`; its parent is anomalib's MVTecAD root).
    """
    defective = test // 2
    good = train + test - defective
    count = VIEWS_PER_BATCH * _batches(good, defective)
    table = write_thesis_images(root / "thesis", count, (side, side), DEFECTIVE_EVERY)
    goods, scratched = table[table.label == 0], table[table.label == 1].iloc[:defective]
    category = root / "mvtec" / CATEGORY
    trained, tested = goods.image_path.iloc[:train], goods.image_path.iloc[train:good]
    files = [(path, category / "train" / "good" / f"{index:03d}.png") for index, path in enumerate(trained)]
    files += [(path, category / "test" / "good" / f"{index:03d}.png") for index, path in enumerate(tested)]
    for index, row in enumerate(scratched.itertuples()):
        files.append((row.image_path, category / "test" / "scratch" / f"{index:03d}.png"))
        files.append((row.defect_mask_path, category / "ground_truth" / "scratch" / f"{index:03d}_mask.png"))
    for source, target in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.hardlink_to(source)
    return category


def cpu_seconds() -> float:
    """User + system time of this process and its finished children: less moved than wall time by the load of
    other processes on the same cores (they still share caches and memory bandwidth)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def polydefect_seconds(category: Path, size: int, scratch: Path) -> tuple[float, float]:
    """Wall and CPU time of `python -m polydefect data=mvtec model=patchcore` on `category` at `size` px, in this
    process: the run's data, segment, detect (features, coreset, validation and test scoring) and evaluate
    stages with their MLflow logging, in a fresh stage cache and MLflow store."""
    cfg = compose_config(
        "data=mvtec",
        f"data.root={category}",
        "model=patchcore",
        f"model.input_size={size}",
        f"preprocess.size=[{size},{size}]",
        *fresh_store(scratch),
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(scratch / "out")
    cpu, started = cpu_seconds(), time.perf_counter()
    run_pipeline(cfg)
    return time.perf_counter() - started, cpu_seconds() - cpu


def anomalib_timings(python: Path, category: Path, size: int, backbone: str, threads: int) -> dict[str, Any]:
    """anomalib's `Engine.fit` and `Engine.test` of PatchCore on `category`, timed inside a child process of the
    venv's python (imports and model construction are outside the timings)."""
    with tempfile.TemporaryDirectory(prefix="anomalib_results_") as results:
        arguments = [str(category.parent), category.name, str(size), backbone, str(threads), results]
        result = subprocess.run([str(python), "-c", CHILD, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        killed = " (killed: out of memory? see README)" if result.returncode == -9 else ""
        output = result.stderr[-3000:]
        raise RuntimeError(f"anomalib PatchCore ({backbone}) exited {result.returncode}{killed}:\n{output}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def anomalib_figures(
    venv: Path, train: int = TRAIN, test: int = TEST, side: int = SIDE, size: int = SIZE, threads: int = 2
) -> dict[str, Any]:
    """Every figure of the comparison (see README); the venv is installed first where it is missing."""
    python = ensure_venv(venv)
    images = train + test
    with tempfile.TemporaryDirectory(prefix="polydefect_anomalib_") as scratch:
        category = write_mvtec(Path(scratch), train, test, side)
        seconds, cpu = polydefect_seconds(category, size, Path(scratch) / "polydefect")
        figures: dict[str, Any] = {
            "anomalib_images": images,
            "anomalib_input_size": size,
            "polydefect_patchcore_seconds": seconds,
            "polydefect_patchcore_cpu_seconds": cpu,
            "polydefect_patchcore_images_per_s": images / seconds,
            "polydefect_patchcore_load_1min": os.getloadavg()[0],  # other processes' share of the 2 cores, roughly
        }
        for key, backbone in BACKBONES.items():
            timings = anomalib_timings(python, category, size, backbone, threads)
            if timings["images"] != images:
                raise RuntimeError(f"anomalib read {timings['images']} images of {category}, {images} written")
            figures[f"{key}_fit_seconds"] = timings["fit_s"]
            figures[f"{key}_test_seconds"] = timings["test_s"]
            figures[f"{key}_cpu_seconds"] = timings["cpu_s"]
            figures[f"{key}_images_per_s"] = images / (timings["fit_s"] + timings["test_s"])
            figures[f"{key}_load_1min"] = os.getloadavg()[0]
    for key in BACKBONES:
        figures[f"{key}_speed_ratio"] = figures["polydefect_patchcore_images_per_s"] / figures[f"{key}_images_per_s"]
        figures[f"{key}_cpu_ratio"] = figures[f"{key}_cpu_seconds"] / cpu  # the same ratio in CPU time
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"anomalib's venv (default {DEFAULT_VENV})")
    parser.add_argument("--images", type=int, default=TRAIN, help="good training images")
    parser.add_argument("--test-images", type=int, default=TEST, help="test images, half of them defective")
    parser.add_argument("--side", type=int, default=SIDE, help="side of the generated square images, px")
    parser.add_argument("--size", type=int, default=SIZE, help="input size of both detectors, px")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = anomalib_figures(args.venv, args.images, args.test_images, args.side, args.size, args.threads)
    for key, value in figures.items():
        print(f"{key:>45}  {value:.3f}" if isinstance(value, float) else f"{key:>45}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
