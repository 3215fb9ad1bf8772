"""Bad input: corrupt, unreadable and wrong-sized files each give an error naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from polydefect.data.io import ImageReadError, read_image, read_mask, write_image_atomic


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match=r"broken.png: not a readable image"):
        read_image(path)


def test_empty_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageReadError, match="empty.jpg"):
        read_image(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"gone.png: file does not exist"):
        read_image(tmp_path / "gone.png")


def test_wrong_sized_mask_names_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), np.zeros((10, 20), np.uint8))
    with pytest.raises(ImageReadError, match=r"mask.png: mask is 20x10 but its image is 30x10"):
        read_mask(path, (10, 30))


def test_sixteen_bit_and_alpha_images_are_read_as_stored(tmp_path: Path) -> None:
    deep, rgba = tmp_path / "deep.png", tmp_path / "rgba.png"
    cv2.imwrite(str(deep), np.full((4, 5), 40000, np.uint16))
    cv2.imwrite(str(rgba), np.zeros((4, 5, 4), np.uint8))
    assert read_image(deep).dtype == np.uint16
    assert read_image(rgba).shape == (4, 5, 3)


def test_mask_foreground_is_above_half_range(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.array([[0, 127, 128, 255]], np.uint8))
    assert read_mask(path).tolist() == [[False, False, True, True]]


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "out" / "img.png"
    write_image_atomic(target, np.ones((3, 3), np.uint8))
    assert [p.name for p in target.parent.iterdir()] == ["img.png"]
    assert read_image(target).shape == (3, 3)
