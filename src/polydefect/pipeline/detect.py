"""Detect stage: train a detector on good images, then score every image with an anomaly map (thesis 3.8, 4.3).

Any `model=` works here: autoencoders (trained by Lightning), feature-memory banks (one epoch of feature
collection, then an explicit `fit()`), and synthetic-anomaly detectors; all expose `anomaly_map(images)`.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning as L
import mlflow
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import Tensor

from polydefect.data.datamodules import ImageDataset, ReconstructionDataModule
from polydefect.data.sample import Sample, load_sample
from polydefect.data.splits import DataSplits
from polydefect.pipeline.data import data_identity
from polydefect.pipeline.segment import SegmentResult
from polydefect.pipeline.training import epoch_budget, scoring_autocast, trainer_kwargs
from polydefect.scoring.maps import smooth
from polydefect.scoring.scores import image_score
from polydefect.stage_cache import StageCache, config_key

log = logging.getLogger(__name__)
ROLES = ("train", "val", "test")


@dataclass
class DetectResult:
    """Per-image scores (one row per image: role, domain, batch, view, label, score, map_sum) and where the
    test anomaly maps and the model weights are."""

    key: str
    scores: pd.DataFrame
    folder: Path


def detect_key(cfg: DictConfig, segment_key: str) -> str:
    """What determines the scores: the masks, preprocessing, augmentation, the model and its training, and how
    maps become scores (thresholds and SPC limits are the evaluate stage's: changing them retrains nothing)."""
    scoring = {name: cfg.scoring[name] for name in ("error", "reduction", "k")}
    data = data_identity(cfg)
    return config_key(
        segment_key, cfg.preprocess, cfg.augment, cfg.model, cfg.detect, scoring, cfg.trainer, data, cfg.seed
    )


def load_samples(cfg: DictConfig, table: pd.DataFrame, masks: SegmentResult) -> list[Sample]:
    """Preprocess every row, with the segment stage's mask in place of the data's own where there is one."""
    return [load_sample(row, cfg.preprocess, masks.mask_paths.get(row["image_path"])) for _, row in table.iterrows()]


def reconstruction_datamodule(
    cfg: DictConfig, train: Sequence[Sample], val: Sequence[Sample]
) -> ReconstructionDataModule:
    """The detector's training data as the run's config describes it: windows, batches, augmentation."""
    return ReconstructionDataModule(
        train,
        val,
        core=cfg.preprocess.tile.core,
        window=cfg.preprocess.tile.window,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        augment=cfg.augment,
        min_foreground=cfg.detect.min_foreground,
        seed=cfg.seed,
    )


def build_task(cfg: DictConfig) -> L.LightningModule:
    log.info("Instantiating <%s>", cfg.model._target_)
    return instantiate(cfg.model, _convert_="all")


def _train(cfg: DictConfig, task: L.LightningModule, data: ReconstructionDataModule, folder: Path) -> None:
    """Fit with checkpoints in the stage folder; a `last.ckpt` left by a killed run is resumed from. The task
    stays on the device it trained on (Lightning hands it back on the CPU), so a GPU run also scores there."""
    checkpoints = folder / "checkpoints"
    kwargs = trainer_kwargs(cfg, epoch_budget(int(cfg.model.get("max_epochs", 1)), cfg.detect.max_epochs), folder)
    # keep the best epoch by the metric the task names (a validation loss); tasks without one keep the last
    monitor = getattr(task, "checkpoint_monitor", None)
    best = dict(monitor=monitor, mode="min", save_top_k=1) if monitor else {}
    checkpoint = ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_epochs=1, **best)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), checkpoint]
    trainer = L.Trainer(**kwargs)
    last = checkpoints / "last.ckpt"
    trainer.fit(task, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor and c.best_model_path), "")
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    task.to(trainer.strategy.root_device)
    if callable(getattr(task, "fit", None)):
        task.fit()  # memory banks: build the coreset from the features collected in the epoch


class LazySamples(Sequence[Sample]):
    """The rows of a table as samples read and preprocessed on access, so scoring holds one batch of images
    at a time, however many the table lists."""

    def __init__(self, cfg: DictConfig, table: pd.DataFrame, masks: SegmentResult) -> None:
        self.preprocess, self.rows, self.masks = cfg.preprocess, table.reset_index(drop=True), masks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        row = self.rows.iloc[index]
        return load_sample(row, self.preprocess, self.masks.mask_paths.get(row["image_path"]))


@dataclass
class ScoredImage:
    """One image's scoring output."""

    score: float
    map_sum: float  # the "C" of the SPC index, eq. 1.1
    anomaly_map: np.ndarray  # (H, W) float32, zero outside the object mask
    object_mask: np.ndarray  # (H, W) bool
    defect_mask: np.ndarray  # (H, W) bool
    panel: tuple[np.ndarray, np.ndarray] | None = None  # (C, H, W) input and its reconstruction, where asked for


def _maps_and_reconstructions(task: L.LightningModule, images: Tensor) -> tuple[Tensor, Tensor]:
    """Anomaly maps and what the detector made of the images: its reconstruction, or the images themselves
    for detectors that do not reconstruct. One forward pass serves both."""
    both = getattr(task, "map_and_reconstruction", None)
    if callable(both):
        return both(images)
    return task.anomaly_map(images), images


@torch.inference_mode()
def iter_scores(
    task: L.LightningModule,
    samples: Sequence[Sample],
    scoring: DictConfig,
    sigma: float,
    batch_size: int,
    panels: Container[int] = (),
    precision: str | int = "32-true",
) -> Iterator[ScoredImage]:
    """Anomaly maps inside the object mask and image scores, one image at a time, in sample order; the images
    whose index is in `panels` also keep their input and reconstruction (for figure panels). The detector runs
    on its own device, under autocast where `precision` is a mixed one (`trainer.precision`)."""
    task.eval()
    error, reduction, k = scoring.error, scoring.reduction, scoring.k
    loader = torch.utils.data.DataLoader(ImageDataset(samples), batch_size=batch_size, shuffle=False)
    for batch in loader:
        mask = batch["object_mask"] > 0.5  # (B, 1, H, W)
        with scoring_autocast(precision, task.device):
            amap, made = _maps_and_reconstructions(task, batch["image"])
        amap = amap.float().cpu()
        if error == "absolute":  # eq. 4.1 as written: sqrt of the squared error; keeps the ranking of any map
            amap = amap.clamp_min(0).sqrt()
        amap = smooth(amap, sigma) * mask
        scores, sums = image_score(amap, mask, reduction, k), amap.sum(dim=(1, 2, 3))
        for i, index in enumerate(batch["index"].tolist()):
            panel = (batch["image"][i].numpy(), made[i].float().cpu().numpy()) if index in panels else None
            yield ScoredImage(
                float(scores[i]),
                float(sums[i]),
                amap[i, 0].numpy(),
                mask[i, 0].numpy(),
                batch["defect_mask"][i, 0].numpy() > 0.5,
                panel,
            )


def score_samples(
    task: L.LightningModule,
    samples: Sequence[Sample],
    scoring: DictConfig,
    sigma: float,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Anomaly maps inside the object mask, image scores and anomaly-pixel sums for each sample.

    Returns:
        scores (N,), map sums (N,) (the "C" of the SPC index, eq. 1.1) and the (H, W) float32 maps.
    """
    scored = list(iter_scores(task, samples, scoring, sigma, batch_size))
    scores = np.array([s.score for s in scored], np.float32)
    return scores, np.array([s.map_sum for s in scored], np.float32), [s.anomaly_map for s in scored]


def score_only(task: L.LightningModule, samples: Sequence[Sample], cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and map sums (N,) of the samples, dropping each map once reduced."""
    scored = iter_scores(
        task, samples, cfg.scoring, cfg.detect.map_sigma, cfg.data.batch_size, precision=cfg.trainer.precision
    )
    values = np.array([(s.score, s.map_sum) for s in scored], np.float32).reshape(-1, 2)
    return values[:, 0], values[:, 1]


class NpzWriter:
    """An .npz archive written one array at a time (read back by `np.load` as arr_0, arr_1, ...), so a stage
    never holds all of its maps or masks.

    Deflate level 1: a 1536x1024 float16 map compresses about as well as at numpy's default level 6 (31% vs
    30% of its size) in 0.6x the time, which is a sixth of a feature-memory image's scoring time.
    """

    def __init__(self, path: Path) -> None:
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self.count = 0

    def add(self, array: np.ndarray) -> None:
        with self.archive.open(f"arr_{self.count}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
        self.count += 1

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.archive.close()


def panel_indices(labels: Sequence[int], count: int) -> list[int]:
    """The test images drawn as panels: the first (count + 1) // 2 defective and count // 2 good ones."""
    defective = [i for i, label in enumerate(labels) if label == 1]
    good = [i for i, label in enumerate(labels) if label == 0]
    return sorted(defective[: (count + 1) // 2] + good[: count // 2])


def score_test(
    task: L.LightningModule, samples: Sequence[Sample], cfg: DictConfig, labels: Sequence[int], folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Score the test images, streaming their maps (float16) and masks into the stage folder's archives and
    keeping only the panels' maps: memory stays flat in the number of test images.

    Returns:
        scores (N,) and map sums (N,).
    """
    chosen = set(panel_indices(labels, cfg.detect.samples))
    scores, sums, panels = [], [], {}
    scored = iter_scores(
        task, samples, cfg.scoring, cfg.detect.map_sigma, cfg.data.batch_size, chosen, cfg.trainer.precision
    )
    with (
        NpzWriter(folder / "test_maps.npz") as maps,
        NpzWriter(folder / "test_defect_masks.npz") as defects,
        NpzWriter(folder / "test_object_masks.npz") as objects,
    ):
        for index, image in enumerate(scored):
            scores.append(image.score)
            sums.append(image.map_sum)
            maps.add(image.anomaly_map.astype(np.float16))
            defects.add(image.defect_mask)
            objects.add(image.object_mask)
            if image.panel is not None:  # at figure size, copied: a view would keep its whole batch alive
                parts = (*image.panel, image.anomaly_map[None])
                panels[index] = (*(at_figure_size(part).copy() for part in parts), labels[index])
    save_panels(panels, folder / "panels.npz")
    return np.array(scores, np.float32), np.array(sums, np.float32)


# px: a panel is drawn about 3 inches wide; compressing four full-size 1536x1024 panels took as long as
# archiving every map of six images
PANEL_SIDE = 512


def at_figure_size(array: np.ndarray) -> np.ndarray:
    """(C, H, W) -> the same picture with its longer side at most `PANEL_SIDE` (area averaging)."""
    height, width = array.shape[-2:]
    scale = PANEL_SIDE / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = [cv2.resize(np.asarray(channel, np.float32), size, interpolation=cv2.INTER_AREA) for channel in array]
    return np.stack(resized)


def save_panels(panels: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]], path: Path) -> None:
    """(C, H, W) inputs, reconstructions (the input itself where the detector does not reconstruct), maps
    and labels of the test images `panel_indices` picked, by index, for the thesis' figure 4.3-4.5 panels."""
    if not panels:
        return
    images, reconstructions, maps, labels = zip(*(panels[i] for i in sorted(panels)), strict=True)
    np.savez_compressed(
        path,
        images=np.stack(images),
        reconstructions=np.stack(reconstructions),
        maps=np.stack(maps),
        labels=np.array(labels),
    )


def check_finite_scores(table: pd.DataFrame, model: str) -> None:
    """Stop before a diverged detector's scores are cached: NaN or infinite scores would otherwise surface later
    as unrelated threshold or SPC errors."""
    bad = ~np.isfinite(table["score"].to_numpy(np.float64))
    if bad.any():
        raise FloatingPointError(
            f"model ({model}): {int(bad.sum())} of {len(table)} image scores are NaN or infinite; its training "
            "diverged (see the detect stage's train/loss in MLflow): try a lower model.optimizer.lr, or "
            "trainer.precision=32-true if it trained in mixed precision"
        )


def detect(cfg: DictConfig, splits: DataSplits, masks: SegmentResult, cache: StageCache) -> DetectResult:
    """Run (or reuse) the detect stage; logs the weights and the score table to the active MLflow run."""
    key = detect_key(cfg, masks.key)
    tables = {"train": splits.train, "val": splits.val, "test": splits.test}

    def make(folder: Path) -> None:
        samples = {role: load_samples(cfg, tables[role], masks) for role in ("train", "val")}
        task = build_task(cfg)
        data = reconstruction_datamodule(cfg, samples["train"], samples["val"])
        started = time.perf_counter()
        _train(cfg, task, data, folder)
        train_s = time.perf_counter() - started
        save_file({k: v.contiguous() for k, v in task.state_dict().items()}, str(folder / "model.safetensors"))
        rows = []
        started = time.perf_counter()
        for role in ("train", "val"):
            scores, sums = score_only(task, samples[role], cfg)
            rows.append(tables[role].assign(role=role, score=scores, map_sum=sums))
        # test images are read as they are scored: any number of them fits in memory
        scores, sums = score_test(task, LazySamples(cfg, splits.test, masks), cfg, list(splits.test["label"]), folder)
        rows.append(splits.test.assign(role="test", score=scores, map_sum=sums))
        timings = {"train_s": train_s, "infer_img_per_s": len(splits.all()) / (time.perf_counter() - started)}
        table = pd.concat(rows, ignore_index=True)
        check_finite_scores(table, cfg.model._target_)
        (folder / "timings.json").write_text(json.dumps(timings))
        table.to_csv(folder / "scores.csv", index=False)

    folder, hit = cache.build("detect", key, make)
    scores = pd.read_csv(folder / "scores.csv")
    if mlflow.active_run():
        mlflow.set_tag("stage_cache_hit", str(hit))
        timings = folder / "timings.json"  # of the run that trained, also logged on a hit
        if timings.is_file():  # absent from folders cached before timings were recorded
            mlflow.log_metrics({f"detect/{k}": v for k, v in json.loads(timings.read_text()).items()})
        mlflow.log_artifact(str(folder / "scores.csv"))
        if cfg.mlflow.log_models:
            mlflow.log_artifact(str(folder / "model.safetensors"), "model")
    return DetectResult(key, scores, folder)


def load_arrays(path: Path, dtype: type = np.float32) -> list[np.ndarray]:
    """Per-test-image arrays saved by the stage (maps, defect or object masks), in test-row order."""
    with np.load(path) as archive:
        return [archive[f"arr_{i}"].astype(dtype) for i in range(len(archive.files))]


def load_task(cfg: DictConfig, folder: Path) -> L.LightningModule:
    """Rebuild the detector from config and its saved weights (safetensors: no pickled code is loaded)."""
    task = build_task(cfg)
    task.load_state_dict(load_file(str(folder / "model.safetensors")))
    return task.eval()
