"""`python -m polydefect.render` renders into the cache, links the run folder, and resumes after being killed."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polydefect.data.layout import discover_thesis

pytestmark = [
    pytest.mark.render,
    pytest.mark.skipif(
        importlib.util.find_spec("bpy") is None and os.environ.get("CI") != "true",
        reason="needs the bpy package: pip install -e .[render]",
    ),
]
TINY = ["synth=scanner", "synth.size=tiny", "progress=false"]


def render_cli(cache: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "polydefect.render", *TINY, f"synth.cache_dir={cache}", f"hydra.run.dir={run_dir}", *extra
    ]  # fmt: skip


def pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("batch_*/*/*.png"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted CLI render; returns its run folder."""
    base = tmp_path_factory.mktemp("reference")
    subprocess.run(render_cli(base / "cache", base / "run"), check=True, capture_output=True, timeout=300)
    return base / "run"


def test_render_command_links_the_cached_data_set_into_the_run_folder(reference):
    data = reference / "data"
    assert data.is_symlink() and (data / ".complete").is_file()
    assert len(discover_thesis(data)) == 16


def test_a_second_call_reuses_the_cache(reference, tmp_path):
    root = (reference / "data").resolve()
    stamps = {path: path.stat().st_mtime_ns for path in [root / ".complete", *root.glob("batch_*/*/*.png")]}
    subprocess.run(render_cli(root.parent, tmp_path / "run"), check=True, capture_output=True, timeout=120)
    assert (tmp_path / "run" / "data").resolve() == root
    assert stamps == {path: path.stat().st_mtime_ns for path in stamps}


def test_a_render_killed_midway_completes_on_rerun_with_identical_files(reference, tmp_path):
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        render_cli(cache, tmp_path / "run1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches the renderer too
    )
    deadline = time.monotonic() + 240
    while len(list(cache.glob("*/batch_*/images/*.png"))) < 5 and time.monotonic() < deadline:
        assert process.poll() is None, "the render finished or failed before it could be killed"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (root,) = cache.iterdir()
    assert not (root / ".complete").exists()
    assert 0 < len(pngs(root)) < 16 * 2 + 4
    subprocess.run(render_cli(cache, tmp_path / "run2"), check=True, capture_output=True, timeout=300)
    assert (root / ".complete").is_file()
    assert not list(root.glob("**/.*.tmp"))
    assert pngs(root) == pngs((reference / "data").resolve())
