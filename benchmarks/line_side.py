"""Line-side scoring speed (issue 23): `python benchmarks/line_side.py [--quick] [--json PATH] [--work DIR]`.

For thesis-sized images (1536 x 1024 grey, the thesis' CAE and U-Net) and MVTec-sized ones (1024 x 1024, the
feature memory at its default input), a run is trained for a few steps, exported, and the same batch is judged
three ways, each with the same work (masks, scores, verdicts, nQI, an overlay per image):

- `pytorch`: the bundle's judging with the run's PyTorch detector and U-Net put back in (`polydefect.inspect`'s path);
- `onnx`: the bundle's own ONNX Runtime scoring (`InspectionBundle.inspect`), in this process;
- `service`: uploads to `polydefect.serve` on loopback (HTTP, multipart, the database write included).

Rates are images per second, the best of the rounds; `service_overhead` is onnx / service - 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import torch
from machine import describe
from thesis_data import write_thesis_images

from polydefect.export.bundle import export_bundle
from polydefect.export.runtime import InspectionBundle, UploadedImage
from polydefect.inspect import download_pipeline
from polydefect.judging import TrainedPipeline, run_segmenter
from polydefect.serve.app import create_app
from polydefect.serve.store import Store
from polydefect.serve.threaded import served_in_thread
from polydefect.tasks.base import load_detector

MVTEC_SIDE = 1024  # px: MVTec AD's larger images (screw, grid, ...)
QUICK = {"batches": 2, "rounds": 2, "mvtec_train": 16}
FULL = {"batches": 4, "rounds": 3, "mvtec_train": 48}


def write_mvtec_images(root: Path, train: int, test: int, seed: int = 0) -> Path:
    """An MVTec-layout folder of grained grey plates, MVTEC_SIDE px square, the test half scratched."""
    rng = np.random.default_rng(seed)
    for split, kind, count in (("train", "good", train), ("test", "good", test), ("test", "scratch", test)):
        for index in range(count):
            path = root / split / kind / f"{index:03d}.png"
            if path.is_file():
                continue
            coarse = rng.normal(0, 10, (MVTEC_SIDE // 32, MVTEC_SIDE // 32)).astype(np.float32)
            plate = 140 + cv2.resize(coarse, (MVTEC_SIDE, MVTEC_SIDE), interpolation=cv2.INTER_CUBIC)
            plate += rng.normal(0, 5, (MVTEC_SIDE, MVTEC_SIDE)).astype(np.float32)
            if kind == "scratch":
                start = rng.integers(200, 800, 2)
                cv2.line(plate, tuple(int(v) for v in start), tuple(int(v) + 120 for v in start), 60.0, 5)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.clip(plate, 0, 255).astype(np.uint8))
    return root


def train_run(overrides: list[str], work: Path) -> str:
    """`python -m polydefect OVERRIDES` with a few training steps; returns the run id."""
    store = f"sqlite:///{work / 'mlflow.db'}"
    args = [*overrides, "trainer=fast", "budget=smoke", f"mlflow.tracking_uri={store}"]
    args += [f"paths.cache_dir={work / 'cache'}", f"hydra.run.dir={work / 'out'}"]
    subprocess.run([sys.executable, "-m", "polydefect", *args], check=True, capture_output=True, cwd=work)
    return json.loads((work / "out" / "mlflow_run.json").read_text())["run_id"]


def uploads(folder: Path, view_of: Callable[[Path], str]) -> list[UploadedImage]:
    return [UploadedImage(p.name, view_of(p), p.read_bytes()) for p in sorted(folder.glob("*.png"))]


def best_rate(judge: Callable[[], int], rounds: int) -> float:
    """Images per second of `judge()` (which returns how many it judged), the best of `rounds` after a warm-up."""
    judge()
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        count = judge()
        best = max(best, count / (time.perf_counter() - started))
    return best


def rates(
    bundle_dir: Path, trained: TrainedPipeline, batches: list[list[UploadedImage]], rounds: int, work: Path
) -> dict[str, float]:
    """Images per second of the PyTorch path (the `trained` run's weights), the bundle's ONNX scoring and the
    service, on the same batches."""
    bundle = InspectionBundle.load(bundle_dir)
    onnx = best_rate(lambda: sum(len(bundle.inspect(batch).images) for batch in batches), rounds)

    with_torch = InspectionBundle.load(bundle_dir)
    with_torch.detector = load_detector(trained.cfg.model, trained.folder / "model.safetensors")
    with_torch.segmenter = run_segmenter(trained)
    pytorch = best_rate(lambda: sum(len(with_torch.inspect(batch).images) for batch in batches), rounds)

    app = create_app(bundle, Store(f"sqlite:///{work / 'serve.db'}"), max_request_mb=512)
    with served_in_thread(app) as url, httpx.Client(base_url=url, timeout=600) as http:

        def upload_all() -> int:
            for batch in batches:
                files = [("files", (image.name, image.data, "image/png")) for image in batch]
                answer = http.post("/api/batches", files=files, data={"views": [image.view for image in batch]})
                answer.raise_for_status()
            return sum(len(batch) for batch in batches)

        service = best_rate(upload_all, rounds)
    return {"pytorch_img_per_s": pytorch, "onnx_img_per_s": onnx, "service_img_per_s": service}


def measure(case: str, work: Path, settings: dict[str, int]) -> dict[str, Any]:
    """Train, export and time one case: `thesis` or `mvtec`."""
    work.mkdir(parents=True, exist_ok=True)
    if case == "thesis":
        data = work / "data"
        write_thesis_images(data, 12 * 6)  # 6 batches of 12 views: batches 1-2 test, 3-6 train
        run = train_run(["+experiment=real", f"data.root={data}", "preprocess=thesis"], work)
        batches = [uploads(data / "batch_01" / "images", lambda p: p.stem)] * settings["batches"]
    else:
        data = write_mvtec_images(work / "data", settings["mvtec_train"], 8)
        run = train_run(["data=mvtec", f"data.root={data}", "model=patchcore"], work)
        batches = [uploads(data / "test" / "scratch", lambda p: "all")] * settings["batches"]
    bundle = export_bundle(run, f"sqlite:///{work / 'mlflow.db'}", work / "bundle", verify=0)
    trained = download_pipeline(run, f"sqlite:///{work / 'mlflow.db'}", work / "pipeline")  # the PyTorch path
    figures = rates(bundle, trained, batches, settings["rounds"], work)
    figures["service_overhead"] = figures["onnx_img_per_s"] / figures["service_img_per_s"] - 1
    figures["onnx_to_pytorch"] = figures["onnx_img_per_s"] / figures["pytorch_img_per_s"]
    return {f"line_side_{case}_{key}": value for key, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and rounds")
    parser.add_argument("--json", type=Path, help="write the figures and the machine here")
    parser.add_argument("--work", type=Path, help="folder for data, runs and bundles (kept; default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the reference machine has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="polydefect_line_") as scratch:
        work = args.work or Path(scratch)
        figures = {**measure("mvtec", work / "mvtec", settings), **measure("thesis", work / "thesis", settings)}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": describe(torch.device("cpu")), **figures}, indent=2))


if __name__ == "__main__":
    main()
