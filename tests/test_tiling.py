"""Overlap-tile: the split/stitch round trip is exact for every size (property-based), and bad sizes fail."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polydefect.data.tiling import grid_for, mirror_indices, mirror_pad, split, stitch


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    channels=st.integers(1, 3),
    core=st.sampled_from([8, 32, 64, 256]),
    margin=st.sampled_from([0, 4, 32]),
)
def test_stitch_of_split_gives_back_the_image_exactly(height, width, channels, core, margin) -> None:
    image = torch.rand(2, channels, height, width)
    tiles, grid = split(image, core=core, window=core + 2 * margin)
    assert tiles.shape == (2 * grid.rows * grid.cols, channels, core + 2 * margin, core + 2 * margin)
    assert torch.equal(stitch(tiles, grid), image)


def test_thesis_sized_image_gives_24_windows_of_320_px() -> None:
    tiles, grid = split(torch.zeros(1, 1024, 1536))
    assert (grid.rows, grid.cols) == (4, 6)
    assert tiles.shape == (24, 1, 320, 320)


def test_window_border_is_a_mirror_of_the_image() -> None:
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    tiles, _ = split(image, core=2, window=6)
    # the first window's top-left core pixel is image[0, 0]; the margin mirrors without repeating the edge
    assert tiles[0, 0, 2, 2] == 0
    assert tiles[0, 0, 2, :3].tolist() == [2.0, 1.0, 0.0]


def test_mirror_indices_fold_repeatedly_for_margins_wider_than_the_image() -> None:
    assert mirror_indices(3, -5, 8).tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]
    assert mirror_indices(1, -2, 3).tolist() == [0, 0, 0, 0, 0]


def test_window_cannot_be_smaller_than_its_core() -> None:
    with pytest.raises(ValueError, match="cannot be smaller"):
        grid_for(10, 10, core=64, window=32)


def test_margin_must_be_symmetric() -> None:
    with pytest.raises(ValueError, match="even"):
        grid_for(10, 10, core=64, window=65)


def test_stitch_refuses_tiles_of_another_grid() -> None:
    tiles, grid = split(torch.zeros(1, 1, 100, 100), core=32, window=48)
    with pytest.raises(ValueError, match="do not fit"):
        stitch(tiles[:-1], grid)


@pytest.mark.parametrize("rows, cols", [((2, 3), (1, 4)), ((8, 2), (3, 12)), ((0, 6), (8, 0))])
def test_mirror_padding_matches_the_mirrored_indices_for_narrow_and_wide_margins(rows, cols) -> None:
    images = torch.rand(2, 3, 7, 9)
    expected = images[:, :, mirror_indices(7, -rows[0], 7 + rows[1])][..., mirror_indices(9, -cols[0], 9 + cols[1])]
    assert torch.equal(mirror_pad(images, rows, cols), expected)
    as_bytes = (images * 255).to(torch.uint8)  # integer images take the gathering path
    assert torch.equal(mirror_pad(as_bytes, rows, cols), (expected * 255).to(torch.uint8))
