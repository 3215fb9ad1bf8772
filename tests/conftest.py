"""Shared fixtures: one torch thread, a tiny generated thesis-layout data set, the real magnetic-tile folder.

The generators and paths behind them live in tests/helpers; tests import those from there, not from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.paths import MAGNETIC_TILE, require_shared
from helpers.thesis import write_thesis_fixture


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
