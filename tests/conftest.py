"""Shared fixtures: a tiny generated thesis-layout data set, the real magnetic-tile folder, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAGNETIC_TILE = SHARED / "data" / "magnetic_tile"
LDRAW = SHARED / "data" / "ldraw"


def require_shared(path: Path) -> Path:
    """Skip where ../shared is absent (a user's own clone), but never in CI, where it must be present."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing, and CI must run the tests that need it")
        pytest.skip(f"{path} not present (it ships beside the repository in ../shared)")
    return path


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


def write_thesis_fixture(
    root: Path,
    batches: int = 4,
    positions: int = 2,
    size: tuple[int, int] = (96, 64),
    defective: tuple[int, ...] = (1,),
) -> Path:
    """A small thesis-layout data set: a bright textured ellipse (the part) on a dark holder, per batch and view.

    Defective batches carry a dark scratch on the part, with its defect mask.
    """
    rng = np.random.default_rng(0)
    width, height = size
    for batch in range(1, batches + 1):
        for position in range(1, positions + 1):
            for camera in (0, 1):
                view = f"p{position:02d}_c{camera}"
                centre = (width // 2 + 4 * camera + int(rng.integers(-2, 3)), height // 2 + int(rng.integers(-2, 3)))
                mask = np.zeros((height, width), np.uint8)
                cv2.ellipse(mask, centre, (width // 4 + position, height // 4), 0, 0, 360, 255, -1)
                image = rng.normal(40, 5, (height, width))
                image[mask > 0] = rng.normal(170, 8, int((mask > 0).sum()))
                folder = root / f"batch_{batch:02d}"
                for sub in ("images", "object_masks"):
                    (folder / sub).mkdir(parents=True, exist_ok=True)
                if batch in defective:
                    defect = np.zeros_like(mask)
                    cv2.line(defect, (centre[0] - 8, centre[1]), (centre[0] + 8, centre[1] + 3), 255, 2)
                    defect &= mask
                    image[defect > 0] = 60
                    (folder / "defect_masks").mkdir(exist_ok=True)
                    cv2.imwrite(str(folder / "defect_masks" / f"{view}.png"), defect)
                cv2.imwrite(str(folder / "images" / f"{view}.png"), np.clip(image, 0, 255).astype(np.uint8))
                cv2.imwrite(str(folder / "object_masks" / f"{view}.png"), mask)
    return root


@pytest.fixture
def thesis_root(tmp_path: Path) -> Path:
    return write_thesis_fixture(tmp_path / "thesis_data")


@pytest.fixture(scope="session")
def thesis_root_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_thesis_fixture(tmp_path_factory.mktemp("thesis_data"))
