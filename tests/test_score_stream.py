"""Scoring the test images: every image passes through the detector once, panels included, and the archived
maps, masks and panels are the ones the scores came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny import untrained_tiny_cae
from omegaconf import open_dict

from polydefect.pipeline.artifacts import (
    PANEL_SIDE,
    NpzWriter,
    as_float16,
    at_figure_size,
    panel_rows,
    score_test,
    stacked_arrays,
)
from polydefect.scoring.stream import iter_scores


@pytest.fixture()
def scored(tmp_path: Path) -> dict:
    cfg, task, samples, test = untrained_tiny_cae(tmp_path)
    with open_dict(cfg):
        cfg.detect.samples = 3
    passed: list[int] = []
    reconstruct = task.reconstruct

    def counting(images: torch.Tensor) -> torch.Tensor:
        passed.append(len(images))
        return reconstruct(images)

    task.reconstruct = counting
    scores, _ = score_test(task, samples, cfg, test, tmp_path)
    return {
        "test": test,
        "scores": scores,
        "passed": passed,
        "folder": tmp_path,
        "reconstruct": reconstruct,
    }


def test_each_test_image_is_reconstructed_once_even_when_drawn_as_a_panel(scored) -> None:
    assert sum(scored["passed"]) == len(scored["test"]) == len(scored["scores"])


def test_panels_hold_the_inputs_reconstructions_and_maps_of_the_picked_images(scored) -> None:
    test = scored["test"]
    chosen = panel_rows(test, 3)
    assert sorted(test.set_index("row_id").loc[chosen, "label"]) == [0, 1, 1]
    with np.load(scored["folder"] / "panels.npz") as panels:
        assert panels["labels"].tolist() == list(test.set_index("row_id").loc[chosen, "label"])
        images = torch.from_numpy(panels["images"])
        expected = scored["reconstruct"](images).numpy()
        assert np.allclose(panels["reconstructions"], expected, atol=1e-5)
        maps = stacked_arrays(scored["folder"] / "test_maps.npz", chosen, np.float16)
        for row, amap in enumerate(maps):
            assert np.allclose(panels["maps"][row, 0], amap[0], atol=1e-2)  # archived as float16


def test_maps_are_archived_under_the_row_ids_of_their_images(scored) -> None:
    with np.load(scored["folder"] / "test_maps.npz") as archive:
        assert sorted(archive.files) == sorted(scored["test"]["row_id"])


def test_maps_are_archived_in_float16_rounded_as_numpy_rounds() -> None:
    values = np.random.default_rng(0).normal(0, 3, (64, 96)).astype(np.float32)
    values[0, :4] = [1 + 2**-11, 1 + 3 * 2**-11, 70000.0, 1e-8]  # ties to even, overflow, a subnormal
    half = as_float16(values[:, 1:])  # a strided view too
    assert half.dtype == np.float16 and np.array_equal(half, values[:, 1:].astype(np.float16), equal_nan=True)


def test_the_archive_writer_keeps_each_array_under_its_row_id(tmp_path: Path) -> None:
    arrays = {f"real/batch_0{i}/images/p01_c0.png": np.full((3, 4), i, np.float16) for i in range(5)}
    arrays["test/good/000.png"] = np.eye(3, dtype=bool)
    with NpzWriter(tmp_path / "a.npz") as writer:
        for name, array in arrays.items():
            writer.add(name, array)
    names = list(reversed(arrays))[1:]  # the maps, in another order than written
    loaded = stacked_arrays(tmp_path / "a.npz", names, np.float16)
    assert loaded.shape == (5, 1, 3, 4) and [a[0].tolist() for a in loaded] == [arrays[n].tolist() for n in names]
    assert stacked_arrays(tmp_path / "a.npz", list(arrays), np.float16) is None  # sizes differ: no stack


def test_a_write_that_fails_on_the_writer_thread_is_raised_and_the_archive_closed(tmp_path: Path) -> None:
    writer = NpzWriter(tmp_path / "a.npz", backlog=1)
    with pytest.raises(ValueError, match="pickle"), writer:
        writer.add("objects", np.array([object()]))  # no pickles in the archive
        writer.add("fine", np.zeros(3))  # the backlog of one waits for the failed write, which raises here
    assert writer.archive.fp is None and not writer.pending  # closed, nothing left waiting


def test_panels_are_stored_at_figure_size_and_small_ones_untouched() -> None:
    rng = np.random.default_rng(0)
    large = rng.random((3, 1024, 1536), dtype=np.float32)
    shrunk = at_figure_size(large)
    assert shrunk.shape == (3, round(1024 * PANEL_SIDE / 1536), PANEL_SIDE)
    assert np.allclose(shrunk.mean(axis=(1, 2)), large.mean(axis=(1, 2)), atol=1e-3)  # area averaging
    small = rng.random((1, 96, 128), dtype=np.float32)
    assert at_figure_size(small) is small


def test_loader_workers_read_the_images_and_the_scores_stay_the_same(tmp_path: Path) -> None:
    cfg, task, samples, _ = untrained_tiny_cae(tmp_path)
    alone = [s.score for s in iter_scores(task, samples, cfg.scoring, cfg.detect.map_sigma, 2)]
    workers = [s.score for s in iter_scores(task, samples, cfg.scoring, cfg.detect.map_sigma, 2, num_workers=2)]
    assert workers == alone and len(alone) == len(samples)
