"""The stage cache: finished results are reused (naming the run that built them), unfinished ones resume, and a
key's lock holds even when `cache clear` deletes its file."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import mlflow
import pytest
from helpers.cache import hold_lock

from polydefect import stage_cache
from polydefect.stage_cache import BUILT_BY_TAG, StageCache, read_provenance
from polydefect.stage_keys import StageKey, config_key


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
