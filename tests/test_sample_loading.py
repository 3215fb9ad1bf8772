"""Reading a table row into a preprocessed sample: CLAHE at the smaller of the file's and the output's size, and a
scoring batch of lazily read samples read on several threads into the same items as one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from polydefect.config import PreprocessConfig
from polydefect.data.datasets import ImageDataset, WindowDataset
from polydefect.data.io import ImageReadError
from polydefect.data.preprocess import apply_mask, clahe, resize
from polydefect.data.sample import LazySamples, load_sample


def write_part(folder: Path, name: str, seed: int, defect: bool = False) -> dict[str, object]:
    """A textured part on a grey background (240 x 320), its object mask and, where `defect`, a defect mask."""
    rng = np.random.default_rng(seed)
    image = np.full((240, 320), 70, np.uint8)
    part = np.zeros(image.shape, bool)
    part[40:200, 60:260] = True
    image[part] = rng.integers(90, 140, int(part.sum()))
    paths = {"image_path": folder / f"{name}.png", "object_mask_path": folder / f"{name}_mask.png"}
    cv2.imwrite(str(paths["image_path"]), image)
    cv2.imwrite(str(paths["object_mask_path"]), part.astype(np.uint8) * 255)
    row: dict[str, object] = {key: str(path) for key, path in paths.items()}
    row["defect_mask_path"] = None
    if defect:
        row["defect_mask_path"] = str(folder / f"{name}_defect.png")
        cv2.imwrite(row["defect_mask_path"], (part & (np.arange(320) > 200)).astype(np.uint8) * 255)
    return {**row, "label": int(defect), "batch": 1, "view": "all", "row_id": f"test/{name}.png"}


def preprocess(size: list[int]) -> object:
    return OmegaConf.structured(PreprocessConfig(size=size, mask_background=True))  # CLAHE on by default


def written_part(folder: Path) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """A written part's table row, and its image and object mask as read back."""
    row = pd.Series(write_part(folder, "a", 0))
    return row, cv2.imread(row["image_path"], cv2.IMREAD_UNCHANGED), cv2.imread(row["object_mask_path"], 0) > 127


def test_a_shrinking_size_equalises_the_resized_part_and_keeps_the_background_black(tmp_path: Path) -> None:
    row, image, part = written_part(tmp_path)
    sample = load_sample(row, preprocess([80, 60]))
    small_part = resize(part, (80, 60), is_mask=True)
    expected = clahe(apply_mask(resize(apply_mask(image, part), (80, 60)), small_part), small_part, 9.0, 9)
    assert sample.image.shape == (60, 80) and np.array_equal(sample.image, expected)
    assert sample.image[~sample.object_mask].max() == 0 and sample.image[sample.object_mask].std() > 20
    assert sample.defect_mask.shape == (60, 80) and not sample.defect_mask.any()


def test_an_enlarging_size_equalises_at_the_file_size_as_before(tmp_path: Path) -> None:
    row, image, part = written_part(tmp_path)
    sample = load_sample(row, preprocess([400, 300]))
    big_part = resize(part, (400, 300), is_mask=True)
    expected = apply_mask(resize(clahe(apply_mask(image, part), part, 9.0, 9), (400, 300)), big_part)
    assert np.array_equal(sample.image, expected)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch at two threads, so a batch is read on two (whatever this machine's default), then as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_a_lazy_batch_read_on_threads_equals_the_items_read_one_by_one(tmp_path: Path, two_threads: None) -> None:
    table = pd.DataFrame([write_part(tmp_path, f"p{i}", i, defect=i % 2 == 1) for i in range(5)])
    dataset = ImageDataset(LazySamples(table, preprocess([80, 60])))
    batch = dataset.__getitems__(list(range(5)))
    for index, item in enumerate(batch):
        alone = dataset[index]
        assert item["row_id"] == alone["row_id"] == f"test/p{index}.png"
        for key in ("image", "object_mask", "defect_mask"):
            assert torch.equal(item[key], alone[key])
    assert batch[1]["defect_mask"].any() and not batch[0]["defect_mask"].any()


def test_an_unreadable_file_in_a_threaded_batch_is_named(tmp_path: Path, two_threads: None) -> None:
    rows = [write_part(tmp_path, f"p{i}", i) for i in range(3)]
    Path(rows[2]["image_path"]).write_bytes(b"not a png")
    dataset = ImageDataset(LazySamples(pd.DataFrame(rows), preprocess([80, 60])))
    with pytest.raises(ImageReadError, match="p2.png"):
        dataset.__getitems__([0, 1, 2])


def test_training_windows_read_each_image_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = pd.DataFrame([write_part(tmp_path, f"p{i}", i) for i in range(3)])
    reads: list[str] = []

    def counted(row: pd.Series, preprocess: object) -> object:
        reads.append(row["row_id"])
        return load_sample(row, preprocess)

    monkeypatch.setattr("polydefect.data.sample.load_sample", counted)
    windows = WindowDataset(LazySamples(table, preprocess([64, 64])), core=32, window=48)
    assert sorted(reads) == sorted(table["row_id"]) and len(windows) == 3 * 4
