"""Segment stage: train the segmenter (U-Net) or use a classical one, write an object mask for every image,
and measure the masks against the true ones on the test images (thesis 4.2, Table 4.1)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from polydefect.data.datamodules import SegmentationDataModule
from polydefect.data.io import read_image, read_mask, write_image_atomic
from polydefect.data.preprocess import to_grey_uint8
from polydefect.data.sample import optional_path
from polydefect.data.splits import DataSplits
from polydefect.evaluation.segmentation_metrics import roc_curve, save_overlay, save_roc_plot, segmentation_metrics
from polydefect.pipeline.data import data_identity
from polydefect.pipeline.training import epoch_budget, trainer_kwargs
from polydefect.segmentation.base import build_segmenter
from polydefect.segmentation.mean_mask import MeanMask
from polydefect.segmentation.part_finder import part_finder_skip
from polydefect.stage_cache import StageCache
from polydefect.stage_keys import StageKey, data_fingerprint, stage_key

log = logging.getLogger(__name__)
CHUNK = 16  # images per prediction batch: bounds memory whatever the data set's size
READS = ("image_path", "object_mask_path")  # the sample-table columns of the files read here


@dataclass
class SegmentResult:
    """Predicted object mask per image path (empty: use the data's own masks), and the test metrics."""

    key: str
    mask_paths: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    folder: Path | None = None

    def attach(self, splits: DataSplits) -> DataSplits:
        """The splits with each image's predicted mask as the column `predicted_mask_path`, which every later
        reader of a row (`load_sample`) prefers to the data's own mask; unchanged without predictions."""
        if not self.mask_paths:
            return splits
        return splits.map(lambda table: table.assign(predicted_mask_path=table["image_path"].map(self.mask_paths)))


def segment_key(cfg: DictConfig, splits: DataSplits) -> StageKey:
    """What determines the masks: the data settings, the images and object masks, the segmenter and its training,
    the seed, and the code that computes them."""
    settings = {
        "data": data_identity(cfg),
        "render": cfg.render,
        "segmenter": cfg.segmenter,
        "segment": cfg.segment,
        "augment": cfg.augment,
        "trainer": cfg.trainer,
        "seed": cfg.seed,
    }
    return stage_key(__name__, settings, data_fingerprint(splits, READS, cfg.data.fingerprint))


def _train_unet(cfg: DictConfig, segmenter: Any, splits: DataSplits, folder: Path) -> None:
    datamodule = SegmentationDataModule(
        splits.train,
        splits.val,
        image_size=segmenter.image_size,
        batch_size=segmenter.batch_size,
        num_workers=cfg.data.num_workers,
        augment=cfg.augment,
        seed=cfg.seed,
    )
    kwargs = trainer_kwargs(cfg, epoch_budget(segmenter.max_epochs, cfg.segment.max_epochs), folder)
    segmenter.fit_datamodule(datamodule, workdir=folder, trainer_kwargs=kwargs)
    segmenter.save(folder / "unet.safetensors")


def _predict_all(segmenter: Any, table: pd.DataFrame, folder: Path, mean_mask: bool) -> pd.DataFrame:
    """Write one mask PNG per image; with `mean_mask`, replace each by its view's mean over all batches."""
    names = [f"masks/{i:06d}.png" for i in range(len(table))]  # relative: the folder is renamed when done
    paths = [folder / name for name in names]
    accumulator = MeanMask()
    groups = [f"{domain}/{view}" for domain, view in zip(table["domain"], table["view"], strict=True)]
    for start in range(0, len(table), CHUNK):
        rows = table.iloc[start : start + CHUNK]
        images = [to_grey_uint8(read_image(p)) for p in rows["image_path"]]
        for offset, mask in enumerate(segmenter.predict_batch(images)):
            index = start + offset
            write_image_atomic(paths[index], mask.astype(np.uint8) * 255)
            if mean_mask:
                accumulator.update(groups[index], mask)
    if mean_mask:  # second pass: constant memory, one running sum per view
        for index, group in enumerate(groups):
            write_image_atomic(paths[index], accumulator.mask(group).astype(np.uint8) * 255)
    return pd.DataFrame({"image_path": table["image_path"], "mask_path": names})


def _evaluate_masks(segmenter: Any, test: pd.DataFrame, index: pd.DataFrame, folder: Path) -> dict[str, float]:
    """Pixel metrics of the predicted test masks against the true ones, their ROC curve (figure 4.1), and
    overlays of a few test images."""
    has_truth = [optional_path(p) is not None for p in test["object_mask_path"]]
    test = test[has_truth]
    if test.empty:
        return {}
    mask_of = {image: folder / mask for image, mask in zip(index["image_path"], index["mask_path"], strict=True)}
    images = [to_grey_uint8(read_image(p)) for p in test["image_path"]]
    truth = [read_mask(p, im.shape) for p, im in zip(test["object_mask_path"], images, strict=True)]
    predicted = [read_mask(mask_of[p], im.shape) for p, im in zip(test["image_path"], images, strict=True)]
    scores = segmenter.score_batch(images)
    result = segmentation_metrics(predicted, truth, scores=scores, views=list(test["view"]))
    pd.DataFrame(result["per_view"]).T.rename_axis("view").to_csv(folder / "per_view_metrics.csv")
    save_roc_plot({"object pixels": roc_curve(scores, truth)[:2]}, folder / "roc.png", title="Segmentation ROC")
    (folder / "metrics.json").write_text(json.dumps(result["overall"], indent=2))
    overlays = folder / "overlays"
    overlays.mkdir(exist_ok=True)
    for i in np.linspace(0, len(images) - 1, min(4, len(images))).astype(int):
        save_overlay(overlays / f"{Path(test.iloc[i]['image_path']).stem}_{i}.png", images[i], truth[i], predicted[i])
    return result["overall"]


def segment(cfg: DictConfig, splits: DataSplits, cache: StageCache) -> SegmentResult:
    """Run (or reuse) the segment stage and log its metrics and pictures to the active MLflow run."""
    key = segment_key(cfg, splits)
    if not cfg.segmenter:
        log.info("segmenter is empty: using the data's own object masks (or the whole frame)")
        return SegmentResult(key=key.digest)
    segmenter = build_segmenter(cfg.segmenter)
    skip = part_finder_skip(segmenter, splits.train)
    if skip is not None:
        log.info("segmenter: %s", skip)
        if mlflow.active_run():
            mlflow.set_tag("segment.skipped", skip)
        return SegmentResult(key=key.digest)
    images = splits.all()

    def make(folder: Path) -> None:
        if hasattr(segmenter, "fit_datamodule"):
            _train_unet(cfg, segmenter, splits, folder)
        index = _predict_all(segmenter, images, folder, cfg.segment.mean_mask)
        index.to_csv(folder / "index.csv", index=False)
        _evaluate_masks(segmenter, splits.test, index, folder)

    folder, hit = cache.build("segment", key, make)
    index = pd.read_csv(folder / "index.csv")
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if mlflow.active_run():
        mlflow.log_metrics({f"segment/test_{k}": float(v) for k, v in metrics.items()})
        mlflow.set_tag("stage_cache_hit", str(hit))
        for name in ("per_view_metrics.csv", "metrics.json", "roc.png", "unet.safetensors"):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
        if (folder / "overlays").is_dir():
            mlflow.log_artifacts(str(folder / "overlays"), "overlays")
    mask_paths = {image: str(folder / m) for image, m in zip(index["image_path"], index["mask_path"], strict=True)}
    return SegmentResult(key.digest, mask_paths, metrics, folder)
