"""Shared fixtures: one torch thread, a tiny generated thesis-layout data set, the real magnetic-tile folder;
and the skip of `gpu`-marked tests where there is no CUDA device.

The generators and paths behind them live in tests/helpers; tests import those from there, not from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.paths import MAGNETIC_TILE, require_shared
from helpers.thesis import write_thesis_fixture


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests where torch sees no CUDA device; run them where it does."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


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
