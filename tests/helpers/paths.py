"""Where the repository and the data shipped beside it (../shared) lie, and skipping where that data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MAGNETIC_TILE = SHARED / "data" / "magnetic_tile"


def require_shared(path: Path) -> Path:
    """Skip where ../shared is absent (a user's own clone), but never in CI, where it must be present."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing, and CI must run the tests that need it")
        pytest.skip(f"{path} not present (it ships beside the repository in ../shared)")
    return path
