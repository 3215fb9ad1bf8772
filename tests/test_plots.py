"""Every evaluation figure renders and is written as a non-empty PNG."""

import numpy as np
import pytest
import torch

from polydefect.evaluation.plots import (
    f1_threshold_figure,
    pr_figure,
    reconstruction_panels,
    roc_figure,
    save_figure,
    score_distribution_figure,
)
from polydefect.scoring.thresholds import fit_threshold

RNG = np.random.default_rng(0)
LABELS = np.array([0, 1] * 12)
SCORES = RNG.random(24) + 0.5 * LABELS
VIEWS = [f"p{(i // 2) % 3:02d}_c{i // 12}" for i in range(24)]  # every view has good and defective images


def _panels():
    images = torch.rand(2, 1, 32, 32)
    reconstructions = images.clamp(0.2, 0.8)
    return images, reconstructions, (images - reconstructions).square()


FIGURES = {
    "roc": lambda: roc_figure({"real": (SCORES, LABELS), "synthetic": (SCORES[::-1], LABELS)}),
    "pr": lambda: pr_figure({"real": (torch.from_numpy(SCORES), torch.from_numpy(LABELS))}),
    "f1": lambda: f1_threshold_figure(SCORES, LABELS, marks={"train max": 1.2}),
    "distribution": lambda: score_distribution_figure(
        SCORES, LABELS, VIEWS, fit_threshold(SCORES[LABELS == 0], VIEWS[::2], "view")
    ),
    "panels": lambda: reconstruction_panels(*_panels()),
    "panels_thresholded": lambda: reconstruction_panels(*_panels(), threshold=0.05),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_is_written_as_a_non_empty_png(name, tmp_path):
    path = save_figure(FIGURES[name](), tmp_path / "figures" / f"{name}.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
