"""Scoring and judging new images with an inspection bundle: ONNX Runtime runs the networks, and the run's own
preprocessing, scoring, thresholds and fixed SPC limits (the code `polydefect.inspect` uses) do the rest.

No weights are read into PyTorch and no training code runs: the detector and U-Net are the bundle's graphs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import pandas as pd

from polydefect.data.io import ImageReadError, decode_image
from polydefect.data.layout import COLUMNS, IMAGE_SUFFIXES
from polydefect.export.files import DETECTOR, FORMAT, FORMAT_VERSION, MANIFEST, SEGMENTER
from polydefect.export.onnx_detector import OnnxDetector, OnnxNet, cpu_session
from polydefect.judging import Judgement, judge, read_pipeline
from polydefect.reporting.overlay import anomaly_overlay
from polydefect.segmentation.base import Segmenter, build_segmenter

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """An upload the bundle cannot judge; `file` names the file (None: the batch as a whole)."""

    def __init__(self, file: str | None, reason: str) -> None:
        super().__init__(f"{file}: {reason}" if file else reason)
        self.file, self.reason = file, reason


@dataclass
class UploadedImage:
    name: str  # the file name as uploaded
    view: str  # the view it was taken from: "p00_c1" (thesis layout), "all" (MVTec layout)
    data: bytes  # the encoded file: PNG, JPEG, TIFF or BMP


@dataclass
class ImageResult:
    name: str
    view: str
    score: float
    threshold: float
    anomalous: bool
    map_sum: float  # the SPC index's C (thesis eq. 1.1)
    nqi: float | None  # None where the bundle has no SPC limits
    ucl: float | None
    out_of_control: bool | None
    overlay_png: bytes  # the image as the detector saw it, beside its anomaly map


@dataclass
class BatchResult:
    images: list[ImageResult]  # in upload order
    out_of_control: bool | None  # the batch's SPC verdict (views out >= scoring.spc.min_views); None without limits
    views_out: int | None
    note: str  # e.g. why nQI was not computed


def read_manifest(folder: Path) -> dict:
    """The bundle's manifest, after checking it is one this version reads and that its files are there."""
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"bundle={folder}: no {MANIFEST}; make a bundle with python -m polydefect.export")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"bundle={folder}: {MANIFEST} is not a {FORMAT} of version {FORMAT_VERSION} "
            f"(format {manifest.get('format')!r}, version {manifest.get('format_version')!r}); export the run again"
        )
    missing = [name for name in manifest["files"] if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle={folder}: missing {missing}; copy the whole folder")
    return manifest


class InspectionBundle:
    """A bundle loaded for scoring: `inspect` judges an uploaded batch, `score_table` a table of image files."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.pipeline = read_pipeline(self.manifest["run_id"], self.folder)
        self.detector = OnnxDetector(cpu_session(self.folder / DETECTOR, threads))
        self.segmenter = self._segmenter(threads)

    @classmethod
    def load(cls, folder: str | Path) -> InspectionBundle:
        return cls(folder)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def views(self) -> list[str] | None:
        """The views the bundle judges each with its own threshold; None: any view (one threshold for all)."""
        return self.manifest["views"]

    def _segmenter(self, threads: int) -> Segmenter | None:
        """The run's segmenter, a trained U-Net's net replaced by the bundle's graph."""
        if not self.pipeline.cfg.segmenter:
            return None
        segmenter = build_segmenter(self.pipeline.cfg.segmenter)
        if (self.folder / SEGMENTER).is_file():
            segmenter.net = OnnxNet(cpu_session(self.folder / SEGMENTER, threads))
        return segmenter

    def check(self, images: list[UploadedImage]) -> None:
        """Raise BadInput naming the first file the bundle cannot judge, before anything is scored."""
        if not images:
            raise BadInput(None, "the batch is empty: upload at least one image")
        shape = self.manifest["image_shape"]
        for image in images:
            try:
                pixels = decode_image(image.data, image.name)
            except ImageReadError as error:
                raise BadInput(image.name, str(error).removeprefix(f"{image.name}: ")) from None
            if shape is not None and list(pixels.shape[:2]) != shape:
                raise BadInput(
                    image.name,
                    f"{pixels.shape[0]}x{pixels.shape[1]} px; this bundle's run was trained on {shape[0]}x{shape[1]} "
                    "px images (height x width)",
                )
            if self.views is not None and image.view not in self.views:
                shown = ", ".join(self.views[:8]) + (" ..." if len(self.views) > 8 else "")
                raise BadInput(image.name, f"unknown view {image.view!r}; this bundle's views: {shown}")

    def score_table(self, table: pd.DataFrame, threshold: str = "per_view", keep: int = 0) -> pd.DataFrame:
        """Score and judge the images a sample table lists (`polydefect.data.layout.COLUMNS`): one row each."""
        with tempfile.TemporaryDirectory() as masks:
            return self._judge(table, threshold, keep, Path(masks)).scored

    def _judge(self, table: pd.DataFrame, threshold: str, keep: int, masks: Path) -> Judgement:
        return judge(self.pipeline, self.detector, self.segmenter, table, threshold, keep, masks)

    def inspect(self, images: list[UploadedImage], threshold: str = "per_view") -> BatchResult:
        """Check, score and judge one uploaded batch with the bundle's thresholds and fixed control limits."""
        self.check(images)
        with tempfile.TemporaryDirectory() as work:
            table = upload_table(images, Path(work))
            judged = self._judge(table, threshold, len(images), Path(work) / "masks")
            overlays = [
                cv2.imencode(".png", anomaly_overlay(judged.samples[i].image, *judged.top[i], judged.vmax))[1].tobytes()
                for i in range(len(images))
            ]
        return batch_result(images, judged, overlays)


def upload_table(images: list[UploadedImage], folder: Path) -> pd.DataFrame:
    """The uploads written into `folder` under safe names, as a sample table of one batch."""
    rows = []
    for index, image in enumerate(images):
        suffix = Path(image.name).suffix.lower()
        path = folder / f"{index:05d}{suffix if suffix in IMAGE_SUFFIXES else '.png'}"
        path.write_bytes(image.data)
        row = dict.fromkeys(COLUMNS)
        row.update(row_id=f"upload/{index:05d}", image_path=str(path), batch=1, view=image.view, position=-1, camera=-1)
        row.update(label=0, defect_type="", split="test")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def batch_result(images: list[UploadedImage], judged: Judgement, overlays: list[bytes]) -> BatchResult:
    """The service's answer: each image's verdict and overlay, and the batch's SPC verdict."""
    scored = judged.scored
    has_nqi = "nqi" in scored.columns
    results = [
        ImageResult(
            name=image.name,
            view=image.view,
            score=float(row["score"]),
            threshold=float(row["threshold"]),
            anomalous=bool(row["anomalous"]),
            map_sum=float(row["map_sum"]),
            nqi=float(row["nqi"]) if has_nqi else None,
            ucl=float(row["ucl"]) if has_nqi else None,
            out_of_control=bool(row["out_of_control"]) if has_nqi else None,
            overlay_png=overlay,
        )
        for image, (_, row), overlay in zip(images, scored.iterrows(), overlays, strict=True)
    ]
    batches = judged.batches
    verdict = None if batches is None else batches.iloc[0]
    return BatchResult(
        images=results,
        out_of_control=None if verdict is None else bool(verdict["out_of_control"]),
        views_out=None if verdict is None else int(verdict["views_out"]),
        note="; ".join(judged.notes),
    )
