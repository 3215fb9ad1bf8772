"""Scoring in the trainer's mixed precision: which settings open an autocast, and an autoencoder scored under
bf16 autocast against the same model in float32 (CPU autocast here; a GPU run takes the same path on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import untrained_tiny_cae
from omegaconf import open_dict

from polydefect.pipeline.artifacts import score_test, stacked_arrays
from polydefect.scoring.maps import smooth
from polydefect.scoring.stream import scoring_autocast

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", ["32-true", "64-true", "bf16-true", 32])
def test_full_precision_settings_score_without_autocast(precision: str | int) -> None:
    with scoring_autocast(precision, CPU):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16-mixed", torch.bfloat16), ("bf16", torch.bfloat16), ("16-mixed", torch.float16), (16, torch.float16)],
)
def test_mixed_precision_settings_score_under_autocast_of_their_type(precision: str | int, dtype: torch.dtype) -> None:
    with scoring_autocast(precision, CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == dtype
    assert not torch.is_autocast_enabled("cpu")


def test_maps_are_smoothed_in_float32_under_autocast() -> None:
    amap = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = smooth(amap, 2.0)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, smooth(amap, 2.0))


def test_an_autoencoder_scored_in_bf16_mixed_precision_ranks_like_float32(tmp_path: Path) -> None:
    cfg, task, samples, test = untrained_tiny_cae(tmp_path)
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        with open_dict(cfg):
            cfg.trainer.precision = precision
        folder = tmp_path / precision
        folder.mkdir()
        scores, _ = score_test(task, samples, cfg, test, folder)
        maps = stacked_arrays(folder / "test_maps.npz", list(test["row_id"]), np.float32)
        results[precision] = scores, maps.ravel()
    (full_scores, full_maps), (mixed_scores, mixed_maps) = results["32-true"], results["bf16-mixed"]
    assert np.isfinite(mixed_maps).all() and not np.array_equal(full_maps, mixed_maps)  # autocast did run
    assert np.corrcoef(full_maps, mixed_maps)[0, 1] > 0.99
    assert np.corrcoef(full_scores, mixed_scores)[0, 1] > 0.99
