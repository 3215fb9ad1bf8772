"""The inspection service for tests: a tiny CAE run's bundle, new batches to upload, and `python -m
polydefect.serve` started for real on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np

from helpers.services_http import http_server
from helpers.thesis import write_thesis_fixture
from helpers.tiny import store_uri, trained_tiny_runs
from polydefect.serve.threaded import free_port

DEFECTIVE = 2  # the scratched batch of `new_batches`


def exported_bundle(root: Path) -> Path:
    """The tiny CAE run (`trained_tiny_runs(root)`) exported as an inspection bundle, once per test session."""
    from polydefect.export.bundle import export_bundle

    folder = root / "bundle_tiny_cae"
    if not folder.is_dir():  # the export moves a whole bundle into place, or nothing
        export_bundle(trained_tiny_runs(root)["tiny_cae"], store_uri(root), folder)
    return folder


def new_batches(root: Path) -> Path:
    """Three unseen thesis-layout batches of the tiny runs' views; batch 2 carries bright, 3 px wide scratches.

    The tiny CAE, trained for a few steps, reconstructs the fixture's thin dark scratch no worse than the part
    (its error grows with brightness after CLAHE), so the scratches are widened and drawn white: then every
    image of batch 2 is above its threshold and the batch is out of control, as `polydefect.inspect` says too.
    """
    write_thesis_fixture(root, batches=3, positions=2, defective=(DEFECTIVE,))
    batch = root / f"batch_{DEFECTIVE:02d}"
    for defect_path in sorted((batch / "defect_masks").glob("*.png")):
        image_path, object_path = batch / "images" / defect_path.name, batch / "object_masks" / defect_path.name
        image, part = cv2.imread(str(image_path), 0), cv2.imread(str(object_path), 0)
        defect = cv2.dilate(cv2.imread(str(defect_path), 0), np.ones((3, 3), np.uint8)) & part
        image[defect > 0] = 255
        cv2.imwrite(str(image_path), image)
        cv2.imwrite(str(defect_path), defect)
    return root


def batch_files(images: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """A batch folder's images as the multipart `files` of an upload, in name order."""
    return [("files", (path.name, path.read_bytes(), "image/png")) for path in sorted(images.glob("*.png"))]


def upload(client: httpx.Client, images: Path, label: str = "") -> httpx.Response:
    """POST a batch folder's images (each file's view is its stem) to a service or a TestClient."""
    return client.post("/api/batches", files=batch_files(images), data={"label": label})


@contextmanager
def served(bundle: Path, db: str, logs: Path, timeout: float = 120) -> Iterator[str]:
    """`python -m polydefect.serve` on a free loopback port over `bundle` and `db`; yields its URL once /health
    answers, and stops it (SIGTERM: uvicorn finishes its requests) afterwards."""
    port = free_port()
    args = [f"bundle={bundle}", f"db={db}", f"serve.port={port}", "serve.refresh_s=0", f"hydra.run.dir={logs}"]
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "polydefect.serve", *args]
    with http_server(command, port, logs / "console.log", "polydefect.serve", timeout) as url:
        yield url
