"""Greedy coreset selection: deterministic, covering, and spread over well-separated clusters; built batch by batch,
it keeps the same bank while holding a few chunks of projected rows."""

from __future__ import annotations

import pytest
import torch

from polydefect.models import coreset
from polydefect.models.coreset import CoresetBuilder, greedy_coreset


def _coverage_radius(points: torch.Tensor, chosen: torch.Tensor) -> float:
    """Largest distance from any point to its nearest chosen point."""
    return float(torch.cdist(points, points[chosen]).min(1).values.max())


@pytest.fixture
def points() -> torch.Tensor:
    return torch.randn(600, 16, generator=torch.Generator().manual_seed(1))


def test_coreset_selection_is_deterministic_for_a_seed(points: torch.Tensor) -> None:
    first = greedy_coreset(points, 0.1, projection_dim=8, seed=3)
    assert torch.equal(first, greedy_coreset(points, 0.1, projection_dim=8, seed=3))
    assert len(first) == 60 and torch.equal(first, first.unique())


def test_coverage_radius_shrinks_as_the_ratio_grows(points: torch.Tensor) -> None:
    radii = [_coverage_radius(points, greedy_coreset(points, ratio)) for ratio in (0.01, 0.05, 0.2, 0.5)]
    assert radii == sorted(radii, reverse=True) and radii[-1] < 0.6 * radii[0]


def test_greedy_coreset_covers_better_than_a_random_subset_of_the_same_size(points: torch.Tensor) -> None:
    chosen = greedy_coreset(points, 0.05)
    random = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[: len(chosen)]
    assert _coverage_radius(points, chosen) < _coverage_radius(points, random)


def test_coreset_picks_one_point_in_each_well_separated_cluster() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(5, 32) * 100.0
    cluster = torch.arange(500) % 5
    points = centres[cluster] + torch.randn(500, 32, generator=generator)
    chosen = greedy_coreset(points, 0.01, projection_dim=16)
    assert sorted(cluster[chosen].tolist()) == [0, 1, 2, 3, 4]


def test_chunked_selection_still_covers_every_point(points: torch.Tensor) -> None:
    whole = _coverage_radius(points, greedy_coreset(points, 0.2))
    chunked = greedy_coreset(points, 0.2, chunk_size=150)
    assert len(chunked) == 120 and _coverage_radius(points, chunked) < 1.5 * whole


def test_ratio_one_keeps_every_point_and_ratios_outside_zero_one_are_errors(points: torch.Tensor) -> None:
    assert torch.equal(greedy_coreset(points, 1.0), torch.arange(len(points)))
    with pytest.raises(ValueError, match="model.bank_ratio"):
        greedy_coreset(points, 0.0)


@pytest.mark.parametrize(("ratio", "chunks_per_read"), [(0.1, 16), (0.1, 1), (1.0, 16)])
def test_rows_added_batch_by_batch_give_the_bank_of_the_whole_array(
    ratio: float, chunks_per_read: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coreset, "CHUNKS_PER_READ", chunks_per_read)  # the chunks read back together, or one by one
    features = torch.randn(1000, 48, generator=torch.Generator().manual_seed(2))
    builder = CoresetBuilder(ratio, projection_dim=16, chunk_size=300, seed=5)
    for batch in features.split(64):  # batches that straddle the chunks
        builder.add(batch)
    assert builder.projected.tell() == (0 if ratio == 1.0 else 1000 * 16 * 4)  # projected rows: on disk
    bank = builder.finish()
    expected = features[greedy_coreset(features, ratio, projection_dim=16, chunk_size=300, seed=5)]
    assert bank.dtype == torch.float32 and torch.equal(bank, expected)
    assert builder.spill.closed


def test_a_builder_without_rows_says_so() -> None:
    with pytest.raises(RuntimeError, match="no features"):
        CoresetBuilder(0.1).finish()
    with pytest.raises(ValueError, match="model.bank_ratio"):
        CoresetBuilder(1.5)
