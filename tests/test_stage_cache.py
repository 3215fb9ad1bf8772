"""The stage cache: keys follow the config, finished results are reused, unfinished ones resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from polydefect.stage_cache import StageCache, config_key


def test_key_depends_on_values_not_on_key_order() -> None:
    a = OmegaConf.create({"x": 1, "y": {"z": [1, 2]}})
    b = OmegaConf.create({"y": {"z": [1, 2]}, "x": 1})
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(OmegaConf.create({"x": 2, "y": {"z": [1, 2]}}))


def test_key_resolves_interpolations() -> None:
    a = OmegaConf.create({"size": 3, "tile": "${size}"})
    b = OmegaConf.create({"size": 3, "tile": 3})
    assert config_key(a.tile) == config_key(b.tile)


def test_finished_stage_is_reused(tmp_path: Path) -> None:
    cache, calls = StageCache(tmp_path), []

    def make(folder: Path) -> None:
        calls.append(folder)
        (folder / "out.txt").write_text("done")

    first, hit_first = cache.build("segment", "k1", make)
    second, hit_second = cache.build("segment", "k1", make)
    assert (hit_first, hit_second) == (False, True)
    assert first == second and (first / "out.txt").read_text() == "done"
    assert len(calls) == 1


def test_failed_stage_leaves_no_finished_folder_and_resumes_from_its_partial_one(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)

    def crash(folder: Path) -> None:
        (folder / "checkpoint").write_text("epoch 3")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.build("detect", "k2", crash)
    assert not cache.is_complete("detect", "k2")
    seen = []
    cache.build("detect", "k2", lambda folder: seen.append((folder / "checkpoint").read_text()))
    assert seen == ["epoch 3"]
    assert cache.is_complete("detect", "k2")
    assert not cache.partial_path("detect", "k2").exists()
