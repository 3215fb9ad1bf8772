"""Scoring the test images: every image passes through the detector once, panels included, and the archived
maps, masks and panels are the ones the scores came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import untrained_tiny_cae
from omegaconf import open_dict

from polydefect.pipeline.detect import (
    PANEL_SIDE,
    NpzWriter,
    at_figure_size,
    load_arrays,
    panel_indices,
    score_test,
)


@pytest.fixture()
def scored(tmp_path: Path) -> dict:
    cfg, task, samples, labels = untrained_tiny_cae(tmp_path)
    with open_dict(cfg):
        cfg.detect.samples = 3
    passed: list[int] = []
    reconstruct = task.reconstruct

    def counting(images: torch.Tensor) -> torch.Tensor:
        passed.append(len(images))
        return reconstruct(images)

    task.reconstruct = counting
    scores, _ = score_test(task, samples, cfg, labels, tmp_path)
    return {
        "labels": labels,
        "scores": scores,
        "passed": passed,
        "folder": tmp_path,
        "reconstruct": reconstruct,
    }


def test_each_test_image_is_reconstructed_once_even_when_drawn_as_a_panel(scored) -> None:
    assert sum(scored["passed"]) == len(scored["labels"]) == len(scored["scores"])


def test_panels_hold_the_inputs_reconstructions_and_maps_of_the_picked_images(scored) -> None:
    chosen = panel_indices(scored["labels"], 3)
    with np.load(scored["folder"] / "panels.npz") as panels:
        assert panels["labels"].tolist() == [scored["labels"][i] for i in chosen]
        images = torch.from_numpy(panels["images"])
        expected = scored["reconstruct"](images).numpy()
        assert np.allclose(panels["reconstructions"], expected, atol=1e-5)
        maps = load_arrays(scored["folder"] / "test_maps.npz")
        for row, index in enumerate(chosen):
            assert np.allclose(panels["maps"][row, 0], maps[index], atol=1e-2)  # archived as float16


def test_the_archive_writer_keeps_the_order_of_its_arrays(tmp_path: Path) -> None:
    arrays = [np.full((3, 4), i, np.float16) for i in range(5)] + [np.eye(3, dtype=bool)]
    with NpzWriter(tmp_path / "a.npz") as writer:
        for array in arrays:
            writer.add(array)
    with np.load(tmp_path / "a.npz") as archive:
        assert [archive[f"arr_{i}"].tolist() for i in range(6)] == [a.tolist() for a in arrays]


def test_panels_are_stored_at_figure_size_and_small_ones_untouched() -> None:
    rng = np.random.default_rng(0)
    large = rng.random((3, 1024, 1536), dtype=np.float32)
    shrunk = at_figure_size(large)
    assert shrunk.shape == (3, round(1024 * PANEL_SIDE / 1536), PANEL_SIDE)
    assert np.allclose(shrunk.mean(axis=(1, 2)), large.mean(axis=(1, 2)), atol=1e-3)  # area averaging
    small = rng.random((1, 96, 128), dtype=np.float32)
    assert at_figure_size(small) is small
