"""`python -m polydefect.cache`: listing the stage cache and clearing it, never under a job that is building."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.cache import hold_lock
from helpers.tiny import compose_app

from polydefect.cache import default_root, main
from polydefect.stage_cache import StageCache
from polydefect.stage_keys import StageKey

SEGMENT, DETECT, STOPPED = StageKey({"stage": "segment"}), StageKey({"stage": "detect"}), StageKey({"stage": "stop"})


def write(size: int) -> Callable[[Path], int]:
    return lambda folder: (folder / "weights.bin").write_bytes(b"\0" * size)


def stopped(folder: Path) -> None:
    (folder / "last.ckpt").write_bytes(b"\0" * 10)
    raise KeyboardInterrupt


@pytest.fixture
def cache(tmp_path: Path) -> StageCache:
    """A finished segment and detect stage, and a detect stage stopped half-way."""
    cache = StageCache(tmp_path / "stages")
    cache.build("segment", SEGMENT, write(2_000_000))
    cache.build("detect", DETECT, write(5_000_000))
    with pytest.raises(KeyboardInterrupt):
        cache.build("detect", STOPPED, stopped)
    return cache


def command(cache: StageCache, capsys: pytest.CaptureFixture, *args: str) -> str:
    main([*args, "--root", str(cache.root)])
    return capsys.readouterr().out


def listed(cache: StageCache, capsys: pytest.CaptureFixture) -> dict[str, list[str]]:
    """The listed entries by key: their stage, size and state columns."""
    lines = command(cache, capsys, "list").splitlines()[1:-1]
    return {line.split()[1]: [line.split()[0], " ".join(line.split()[2:4]), line.split()[-1]] for line in lines}


def test_list_shows_each_entry_with_its_size_and_state(cache: StageCache, capsys: pytest.CaptureFixture) -> None:
    assert listed(cache, capsys) == {
        SEGMENT.digest: ["segment", "2.0 MB", "complete"],  # with its provenance, a few hundred bytes
        DETECT.digest: ["detect", "5.0 MB", "complete"],
        STOPPED.digest: ["detect", "10 B", "partial"],
    }


def test_clear_removes_every_entry_and_says_which(cache: StageCache, capsys: pytest.CaptureFixture) -> None:
    out = command(cache, capsys, "clear")
    assert out.count("removing ") == 3 and str(cache.path("segment", SEGMENT.digest)) in out
    assert listed(cache, capsys) == {}
    assert not list(cache.root.rglob(".*.lock"))


def test_clear_partial_keeps_the_finished_entries(cache: StageCache, capsys: pytest.CaptureFixture) -> None:
    command(cache, capsys, "clear", "--partial")
    assert set(listed(cache, capsys)) == {SEGMENT.digest, DETECT.digest}


def test_clear_by_stage_and_key_prefix_removes_only_that_entry(
    cache: StageCache, capsys: pytest.CaptureFixture
) -> None:
    command(cache, capsys, "clear", "--stage", "detect", "--key", DETECT.digest[:6])
    assert set(listed(cache, capsys)) == {SEGMENT.digest, STOPPED.digest}
    assert command(cache, capsys, "clear", "--stage", "evaluate").startswith("nothing to remove")


def test_clear_skips_an_entry_a_running_job_is_building(cache: StageCache, capsys: pytest.CaptureFixture) -> None:
    job = hold_lock(cache.lock_path("detect", STOPPED.digest))
    try:
        assert listed(cache, capsys)[STOPPED.digest][-1] == "building"
        out = command(cache, capsys, "clear", "--stage", "detect")
    finally:
        job.communicate("done\n", timeout=30)
    assert f"skipping {cache.partial_path('detect', STOPPED.digest)}: a job is building it" in out
    assert cache.partial_path("detect", STOPPED.digest).is_dir()
    assert not cache.path("detect", DETECT.digest).exists()


@pytest.mark.parametrize("xdg", ["/srv/xdg-cache", None])
def test_the_default_root_is_the_configs_cache_dir(xdg: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if xdg:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    else:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert compose_app().paths.cache_dir == str(default_root())
