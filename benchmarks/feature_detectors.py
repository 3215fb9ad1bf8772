"""The feature detectors' own costs: the ensemble with its members sharing a backbone's features against the same
members scored one by one, the coreset selection as the patch count grows, and approximate nearest-neighbour search
(HNSW, IVF) against exact search."""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig
from timing import best_rate

from polydefect.models.coreset import greedy_coreset
from polydefect.models.feature_memory import (
    SEARCHES,
    hnsw_index,
    ivf_index,
    nearest_rows,
    patch_rows,
    row_distances,
)
from polydefect.tasks.base import build_detector
from polydefect.tasks.ensemble import EnsembleTask
from polydefect.tasks.memory_bank import MemoryBankTask

CORESET_RATIOS = (0.01, 0.10, 0.25)
IVF_PROBES = (1, 2, 4, 8)  # cells an IVF search compares a patch with: 8 is `ivf_index`'s default


def _fitted_ensemble(cfg: DictConfig, train_images: int, size: int, seed: int = 0) -> EnsembleTask:
    """`model=ensemble` with banks of `train_images` random images of `size` px (its segmenters untrained: their
    cost is the same trained or not)."""
    generator = torch.Generator().manual_seed(seed)
    task = build_detector(cfg.model)
    for batch in torch.rand(train_images, 1, size, size, generator=generator).split(cfg.data.batch_size):
        for bank in _banks(task):
            bank.collect(batch)
    task.validation_images = [torch.rand(cfg.data.batch_size, 1, size, size, generator=generator)]
    task.fit()
    return task.eval()


def _banks(task: EnsembleTask) -> list[MemoryBankTask]:
    return [member for member in task.members.values() if isinstance(member, MemoryBankTask)]


def _shared_speedup(task: EnsembleTask, batch: torch.Tensor, rounds: int) -> tuple[float, float]:
    """Images/s of the ensemble with shared features, and its speedup over its members scored one by one."""
    task.hparams.share_features = True
    task.anomaly_map(batch)  # warm-up, and the faiss indexes built
    shared = best_rate(lambda: len(task.anomaly_map(batch)), rounds, batch.device)
    task.hparams.share_features = False
    alone = best_rate(lambda: len(task.anomaly_map(batch)), rounds, batch.device)
    task.hparams.share_features = True
    return shared, shared / alone


def ensemble_figures(cfg: DictConfig, train_images: int, size: int, rounds: int) -> dict[str, Any]:
    """The default ensemble on `size` px images with each search (`SEARCHES`), banks from `train_images` images."""
    task = _fitted_ensemble(cfg, train_images, size)
    batch = torch.rand(cfg.data.batch_size, 1, size, size, generator=torch.Generator().manual_seed(1))
    figures: dict[str, Any] = {"ensemble_bank_rows": int(_banks(task)[0].net.bank.shape[0])}
    default_search = _banks(task)[0].net.search
    for search in SEARCHES:
        for bank in _banks(task):
            bank.net.search = search
            bank.net.remember(bank.net.bank)  # the index is rebuilt for the new search
        rate, speedup = _shared_speedup(task, batch, rounds)
        figures[f"ensemble_{search}_images_per_s"], figures[f"ensemble_{search}_shared_speedup"] = rate, speedup
        if search == default_search:  # the default ensemble's figures
            figures["ensemble_images_per_s"], figures["ensemble_shared_speedup"] = rate, speedup
    return figures | ivf_budget_figures(_banks(task)[0], batch, rounds)


def ivf_budget_figures(bank: MemoryBankTask, batch: torch.Tensor, rounds: int) -> dict[str, Any]:
    """What the shared speedup's search budget buys: the bank's IVF index searching 1 to 8 of its cells for one
    batch's patches (ms a batch, best of `rounds`, and the share of patches given their exact nearest row), and the
    ms of assigning the patches to cells alone, which every cell count pays (benchmarks/README, "What does not
    hold")."""
    with torch.inference_mode():
        features = bank.embed_input(batch)
    rows = patch_rows(features)  # the patches as `score` searches them
    exact = nearest_rows(rows, bank.net.bank)[:, 0].numpy()
    queries = rows.contiguous().numpy()  # float32 on the CPU: what faiss takes
    index = ivf_index(bank.net.bank, bank.net.ivf_lists)  # the member's cells
    figures: dict[str, Any] = {"ensemble_ivf_cells": int(index.nlist)}
    for probes in IVF_PROBES:
        index.nprobe = min(probes, index.nlist)
        timed = [_timed(index.search, queries, 1) for _ in range(rounds)]
        (_, found), seconds = timed[0][0], min(seconds for _, seconds in timed)
        figures[f"ensemble_ivf_{probes}_cells_ms"] = 1000 * seconds
        figures[f"ensemble_ivf_{probes}_cells_recall_at_1"] = float((found[:, 0] == exact).mean())
    assign = min(_timed(index.quantizer.search, queries, 1)[1] for _ in range(rounds))
    figures["ensemble_ivf_assign_ms"] = 1000 * assign
    return figures


def _timed(work: Any, *args: Any) -> tuple[Any, float]:
    """What `work(*args)` returns, and the seconds it took."""
    started = time.perf_counter()
    result = work(*args)
    return result, time.perf_counter() - started


def coreset_figures(patches: int, dims: int, rounds: int = 1) -> dict[str, Any]:
    """Seconds of the greedy coreset at 1, 10 and 25% banks of `patches` random rows, and at 4x as many rows, each
    the best of `rounds` (a 1% bank of 70 000 rows takes a quarter of a second: one timing is mostly noise)."""
    generator = torch.Generator().manual_seed(0)
    figures: dict[str, Any] = {"coreset_patches": patches}
    for count, suffix in ((patches, ""), (4 * patches, "_4x")):
        features = torch.randn(count, dims, generator=generator)
        for ratio in CORESET_RATIOS:
            seconds = min(_timed(greedy_coreset, features, ratio)[1] for _ in range(rounds))
            figures[f"coreset_seconds_{round(ratio * 100)}{suffix}"] = seconds
    for ratio in CORESET_RATIOS:
        percent = round(ratio * 100)
        figures[f"coreset_growth_4x_{percent}"] = (
            figures[f"coreset_seconds_{percent}_4x"] / figures[f"coreset_seconds_{percent}"]
        )
    return figures


def search_figures(bank_rows: int, queries: int, dims: int) -> dict[str, Any]:
    """HNSW and IVF (their default settings; the index built outside the timing) against exact search: recall of
    the nearest row, speedup, and the mean relative excess of its distances."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(64, dims, generator=generator)  # clustered, as patch features are
    bank = centres[torch.randint(64, (bank_rows,), generator=generator)] + 0.5 * torch.randn(
        bank_rows, dims, generator=generator
    )
    query = centres[torch.randint(64, (queries,), generator=generator)] + 0.5 * torch.randn(
        queries, dims, generator=generator
    )
    exact_rows, exact_s = _timed(nearest_rows, query, bank, 1)
    exact = row_distances(query, bank[exact_rows[:, 0]])
    figures: dict[str, Any] = {}
    for name, index in (("hnsw", hnsw_index(bank)), ("ivf", ivf_index(bank))):
        (_, found_rows), seconds = _timed(index.search, query.numpy(), 1)
        found = row_distances(query, bank[torch.from_numpy(found_rows[:, 0])])
        figures[f"{name}_recall_at_1"] = float((exact_rows.numpy() == found_rows).mean())
        figures[f"{name}_speedup"] = exact_s / seconds
        figures[f"{name}_distance_excess"] = float(((found - exact) / exact.clamp_min(1e-6)).mean())
    return figures
