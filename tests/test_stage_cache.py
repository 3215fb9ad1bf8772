"""The stage cache: keys follow the config, the data files and the code; finished results are reused (naming the
run that built them), unfinished ones resume, and a key's lock holds even when `cache clear` deletes its file."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import mlflow
import pytest
from helpers.cache import hold_lock, replace_image
from helpers.tiny import compose_tiny
from omegaconf import DictConfig, OmegaConf

from polydefect import stage_cache
from polydefect.config import DataConfig
from polydefect.data.splits import DataSplits, make_splits
from polydefect.pipeline.detect import detect_key
from polydefect.pipeline.segment import segment_key
from polydefect.stage_cache import BUILT_BY_TAG, StageCache, StageKey, config_key, data_fingerprint, read_provenance

FILES = ("image_path", "object_mask_path", "defect_mask_path")


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

    first, hit_first = cache.build("segment", StageKey({"k": 1}), make)
    second, hit_second = cache.build("segment", StageKey({"k": 1}), make)
    assert (hit_first, hit_second) == (False, True)
    assert first == second and (first / "out.txt").read_text() == "done"
    assert len(calls) == 1


def test_failed_stage_leaves_no_finished_folder_and_resumes_from_its_partial_one(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)

    def crash(folder: Path) -> None:
        (folder / "checkpoint").write_text("epoch 3")
        raise RuntimeError("killed")

    key = StageKey({"k": 2})
    with pytest.raises(RuntimeError):
        cache.build("detect", key, crash)
    assert not cache.is_complete("detect", key.digest)
    seen = []
    cache.build("detect", key, lambda folder: seen.append((folder / "checkpoint").read_text()))
    assert seen == ["epoch 3"]
    assert cache.is_complete("detect", key.digest)
    assert not cache.partial_path("detect", key.digest).exists()


def thesis_splits(root: Path) -> DataSplits:
    return make_splits(OmegaConf.structured(DataConfig), {"real": root}, seed=0)


@pytest.mark.parametrize("mode", ["stat", "content"])
def test_replacing_an_image_under_the_same_root_changes_the_data_fingerprint(thesis_root: Path, mode: str) -> None:
    splits = thesis_splits(thesis_root)
    before = data_fingerprint(splits, FILES, mode)
    assert data_fingerprint(thesis_splits(thesis_root), FILES, mode) == before
    replace_image(Path(splits.train["image_path"][0]))
    assert data_fingerprint(thesis_splits(thesis_root), FILES, mode) != before


def test_a_file_touched_changes_the_stat_fingerprint_but_not_the_content_one(thesis_root: Path) -> None:
    splits = thesis_splits(thesis_root)
    before = {mode: data_fingerprint(splits, FILES, mode) for mode in ("stat", "content")}
    os.utime(splits.test["defect_mask_path"].dropna().iloc[0], ns=(10**18, 10**18))
    assert data_fingerprint(splits, FILES, "stat") != before["stat"]
    assert data_fingerprint(splits, FILES, "content") == before["content"]


def test_a_row_moved_to_another_split_changes_the_data_fingerprint(thesis_root: Path) -> None:
    splits = thesis_splits(thesis_root)
    moved = DataSplits(train=splits.train.iloc[1:], val=splits.train.iloc[:1], test=splits.test)
    assert data_fingerprint(moved, FILES, "stat") != data_fingerprint(splits, FILES, "stat")


def test_the_predicted_masks_are_left_to_the_segment_key(thesis_root: Path) -> None:
    splits = thesis_splits(thesis_root)
    with_masks = splits.map(lambda table: table.assign(predicted_mask_path="/cache/segment/abc/masks/000001.png"))
    assert data_fingerprint(with_masks, FILES, "stat") == data_fingerprint(splits, FILES, "stat")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[DictConfig, DataSplits]:
    cfg = compose_tiny(tmp_path_factory.mktemp("keys"))
    return cfg, make_splits(cfg.data, {"real": Path(cfg.data.root), "synthetic": Path(cfg.data.synthetic_root)}, 42)


def stage_keys(cfg: DictConfig, splits: DataSplits) -> tuple[str, str]:
    segment = segment_key(cfg, splits).digest
    return segment, detect_key(cfg, splits, segment).digest


def edited_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Point the code fingerprint at a copy of the package in which each of `modules` gained a function."""
    copy = tmp_path / "polydefect"
    shutil.copytree(stage_cache.SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for module in modules:
        path = copy.joinpath(*module.split(".")[1:]).with_suffix(".py")
        path.write_text(path.read_text() + "\n\ndef _edited() -> int:\n    return 1\n")
    monkeypatch.setattr(stage_cache, "SRC", copy)


def test_editing_the_detectors_code_changes_the_detect_key_and_not_the_segment_key(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = stage_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.models.cae")  # named only by the config's _target_
    new_segment, new_detect = stage_keys(*tiny)
    assert new_segment == segment and new_detect != detect


def test_editing_a_module_imported_inside_a_function_changes_both_keys(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = stage_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.synth.spec")  # pipeline/data.py imports synth when rendering
    new_segment, new_detect = stage_keys(*tiny)
    assert new_segment != segment and new_detect != detect


def test_editing_the_evaluate_stage_changes_no_key(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = stage_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.pipeline.evaluate")
    assert stage_keys(*tiny) == keys


def test_a_replaced_defect_mask_changes_the_detect_key_and_not_the_segment_key(
    tiny: tuple[DictConfig, DataSplits],
) -> None:
    cfg, splits = tiny
    segment, detect = stage_keys(cfg, splits)
    replace_image(Path(splits.test["defect_mask_path"].dropna().iloc[0]))  # the detect stage archives it
    new_segment, new_detect = stage_keys(cfg, splits)
    assert new_segment == segment and new_detect != detect


def test_a_new_polydefect_version_changes_both_keys(
    tiny: tuple[DictConfig, DataSplits], monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = stage_keys(*tiny)
    monkeypatch.setattr(stage_cache, "polydefect_version", lambda: "99.0")
    new_segment, new_detect = stage_keys(*tiny)
    assert new_segment != segment and new_detect != detect


def test_a_built_stage_records_its_run_and_a_reuse_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("stage_cache")
    cache, key = StageCache(tmp_path / "cache"), StageKey({"segmenter": {"name": "otsu"}, "seed": 42})
    with mlflow.start_run() as builder:
        folder, _ = cache.build("segment", key, lambda folder: None)
    built = read_provenance(folder)
    assert built["run_id"] == builder.info.run_id and built["key"] == key.digest
    assert built["parts"] == {"segmenter": config_key({"name": "otsu"}), "seed": 42}
    assert built["polydefect"] == stage_cache.polydefect_version()
    with caplog.at_level(logging.INFO, "polydefect.stage_cache"), mlflow.start_run() as reuser:
        assert cache.build("segment", key, lambda folder: None) == (folder, True)
    assert f"Stage segment: reusing cached result {folder} built by run {builder.info.run_id} at" in caplog.text
    assert mlflow.get_run(reuser.info.run_id).data.tags[BUILT_BY_TAG] == builder.info.run_id


def test_a_job_waiting_on_a_lock_file_that_is_deleted_locks_the_new_one(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    lock = cache.lock_path("detect", "k")
    lock.parent.mkdir(parents=True)
    holder, seen = hold_lock(lock), []

    def wait_for_the_lock() -> None:
        with cache.locked("detect", "k") as held:
            seen.append((held, lock.exists()))

    waiter = threading.Thread(target=wait_for_the_lock)
    waiter.start()
    time.sleep(0.5)  # the waiter blocks on the old file
    holder.communicate("go\n", timeout=30)
    waiter.join(timeout=30)
    assert seen == [(True, True)]
