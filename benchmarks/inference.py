"""Inference throughput: the detector's network alone (windows or images per second, GFLOP/s) against the
whole scoring path of the detect stage (read, mask, CLAHE, resize, split, reconstruct, stitch, score)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from timing import best_rate
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from polydefect.data.datasets import ImageDataset
from polydefect.data.io import read_image
from polydefect.data.sample import LazySamples, load_samples
from polydefect.data.tiling import grid_for
from polydefect.pipeline.artifacts import score_test
from polydefect.tasks.base import build_detector


def flops_per_item(net: nn.Module, item: Tensor) -> float:
    """FLOPs of one forward pass on one input (1, C, H, W), counted by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(item)
    return float(counter.get_total_flops())


def net_items_per_s(net: nn.Module, batch: Tensor, rounds: int, device: torch.device, repeats: int = 1) -> float:
    """Inputs per second of the network's forward pass on `batch`, `repeats` times a round, under inference_mode.

    `repeats` lets a round last as long as a round of the pipeline it is compared with, so both see the same
    share of a shared machine's load.
    """
    net.eval()
    with torch.inference_mode():
        net(batch)  # warm-up: kernel choice and allocation
        return best_rate(lambda: sum(len(net(batch)) for _ in range(repeats)), rounds, device)


def score_table(cfg: DictConfig, task: L.LightningModule, table: pd.DataFrame) -> np.ndarray:
    """The detect stage's scoring of test images, from the files to the image scores and the archived maps
    and masks (written to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="scores_") as folder:
        samples = LazySamples(table, cfg.preprocess)
        scores, _ = score_test(task, samples, cfg, table, Path(folder))
    return scores


def pipeline_images_per_s(cfg: DictConfig, task: L.LightningModule, table: pd.DataFrame, rounds: int) -> float:
    """Images per second of the detect stage's scoring path (`score_table`)."""
    return best_rate(lambda: len(score_table(cfg, task, table)), rounds, task.device)


def cae_figures(cfg: DictConfig, table: pd.DataFrame, rounds: int, device: torch.device) -> dict[str, Any]:
    """The thesis CAE (`model=cae`) on windows of `preprocess.tile.window` px, untrained (speed only)."""
    task = build_detector(cfg.model).to(device).eval()
    window, chunk = cfg.preprocess.tile.window, task.hparams.chunk_size
    width, height = load_samples(table.iloc[:1], cfg.preprocess)[0].image.shape[::-1]
    per_image = grid_for(height, width, cfg.preprocess.tile.core, window).tiles_per_image
    batch = torch.rand(chunk, cfg.model.net.in_channels, window, window, device=device)
    flops = flops_per_item(task.net, batch[:1])
    repeats = max(1, round(len(table) * per_image / chunk))  # the pipeline's windows
    windows_per_s = net_items_per_s(task.net, batch, rounds, device, repeats)
    images_per_s = pipeline_images_per_s(cfg, task, table, rounds)
    # the memory-format gain: one chunk a round for each, back to back
    contiguous = build_detector(cfg.model).net.to(device, memory_format=torch.contiguous_format)
    channels_last = net_items_per_s(task.net, batch, rounds, device)
    contiguous_per_s = net_items_per_s(contiguous, batch, rounds, device)
    return {
        "cae_gflop_per_window": flops / 1e9,
        "cae_windows_per_image": per_image,
        "cae_model_windows_per_s": windows_per_s,
        "cae_model_gflops": windows_per_s * flops / 1e9,
        "cae_channels_last_speedup": channels_last / contiguous_per_s,
        "pipeline_images_per_s": images_per_s,
        "pipeline_to_model_ratio": images_per_s * per_image / windows_per_s,
    }


def _fitted_memory_bank(cfg: DictConfig, table: pd.DataFrame, device: torch.device) -> L.LightningModule:
    """A feature-memory task whose bank is built from the good images of `table`, as one training epoch does."""
    task = build_detector(cfg.model).to(device)
    good = ImageDataset(load_samples(table[table["label"] == 0], cfg.preprocess))
    for batch in torch.utils.data.DataLoader(good, batch_size=cfg.data.batch_size):
        task.collect(batch["image"])
    task.fit()
    return task.eval()


def feature_memory_figures(
    cfg: DictConfig, full_size: DictConfig, table: pd.DataFrame, rounds: int, device: torch.device
) -> dict[str, Any]:
    """The feature-memory detector (`model=patchcore`): backbone + nearest-neighbour search alone, on inputs
    already at `model.input_size`, against the same scoring path as the CAE, with the images preprocessed at the
    network's size (`cfg`) and at their full size (`full_size`: maps, masks and pixel metrics at that size)."""
    task = _fitted_memory_bank(cfg, table, device)
    size = cfg.model.input_size
    batch = torch.rand(cfg.data.batch_size, 1, size, size, device=device)
    flops = flops_per_item(task.net.backbone, batch[:1])
    repeats = max(1, round(len(table) / len(batch)))  # the pipeline's images
    images_per_s = net_items_per_s(task.net, batch, rounds, device, repeats)
    pipeline = pipeline_images_per_s(cfg, task, table, rounds)
    full_size_pipeline = pipeline_images_per_s(full_size, task, table, rounds)
    parts = unavoidable_parts(task, batch, table, rounds, repeats)
    parts_per_s = 1 / sum(1 / rate for rate in parts.values())
    return {
        "feature_memory_gflop_per_image": flops / 1e9,
        "feature_memory_model_images_per_s": images_per_s,
        "feature_memory_pipeline_images_per_s": pipeline,
        "feature_memory_pipeline_to_model_ratio": pipeline / images_per_s,
        **{f"feature_memory_{part}_images_per_s": rate for part, rate in parts.items()},
        "feature_memory_parts_images_per_s": parts_per_s,
        "feature_memory_pipeline_to_parts_ratio": pipeline / parts_per_s,
        "feature_memory_full_size_pipeline_images_per_s": full_size_pipeline,
        "feature_memory_full_size_pipeline_to_parts_ratio": full_size_pipeline / parts_per_s,
    }


def _decoded(paths: list[str], images: int) -> int:
    """Decode every file of `paths`; returns `images`, the images they make."""
    for path in paths:
        read_image(path)
    return images


def unavoidable_parts(
    task: L.LightningModule, batch: Tensor, table: pd.DataFrame, rounds: int, repeats: int
) -> dict[str, float]:
    """Images/s of each part of a feature memory's scoring that no pipeline can skip, each alone: decoding the
    image files and their object masks, the backbone's features at the input size, and the bank search."""
    paths = [*table["image_path"], *table["object_mask_path"].dropna()]
    decode = best_rate(lambda: _decoded(paths, len(table)), rounds, task.device)
    with torch.inference_mode():
        features = task.net.embed(batch)
        task.net.score(features)  # warm-up: the faiss index built
        network = best_rate(lambda: sum(len(task.net.embed(batch)) for _ in range(repeats)), rounds, task.device)
        search = best_rate(lambda: sum(len(task.net.score(features)) for _ in range(repeats)), rounds, task.device)
    return {"decode": decode, "network": network, "search": search}
