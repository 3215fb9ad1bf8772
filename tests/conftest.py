"""Shared fixtures: one torch thread, a tiny generated thesis-layout data set, the real magnetic-tile folder;
the skip of `gpu`-marked tests where there is no CUDA device; and, under pytest-xdist (`-n auto`), each file's
tests kept on one worker (the `services` files all on one: one SLURM cluster at a time) and the cores shared
between the workers.

The generators and paths behind them live in tests/helpers; tests import those from there, not from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.paths import MAGNETIC_TILE, require_shared
from helpers.thesis import write_thesis_fixture


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests where torch sees no CUDA device; give every test its worker group (`--dist
    loadgroup`): its file, so module fixtures are built once, or `services` for the services tests."""
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            group = "services" if item.get_closest_marker("services") else item.path.name
            item.add_marker(pytest.mark.xdist_group(group))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def cores_shared_between_workers() -> None:
    """Under xdist each worker (and every process a test starts) takes its share of the cores: torch's default,
    all of them per worker, makes the workers fight over every core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture
def one_thread():
    """One torch thread for the test: many threads on a busy 2-core machine make small kernels far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    return require_shared(MAGNETIC_TILE)


@pytest.fixture
def thesis_root(tmp_path: Path) -> Path:
    return write_thesis_fixture(tmp_path / "thesis_data")


@pytest.fixture(scope="session")
def thesis_root_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_thesis_fixture(tmp_path_factory.mktemp("thesis_data"))
