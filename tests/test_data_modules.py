"""Splits by batch and both DataModules: shapes, labels, seeded hold-out, bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.thesis import write_thesis_fixture
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from polydefect.config import DataConfig, PreprocessConfig
from polydefect.data.datamodules import ReconstructionDataModule, SegmentationDataModule
from polydefect.data.datasets import ImageDataset
from polydefect.data.io import read_image
from polydefect.data.layout import DataLayoutError
from polydefect.data.sample import LazySamples, load_sample
from polydefect.data.splits import make_splits
from polydefect.pipeline.segment import SegmentResult


def data_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), overrides)


def preprocess_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(PreprocessConfig), overrides)


def test_thesis_split_tests_on_batches_1_and_2_and_trains_on_the_rest(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=0)
    assert set(splits.test["batch"]) == {1, 2}
    assert set(splits.train["batch"]) | set(splits.val["batch"]) == {3, 4}
    assert len(splits.val) == 2 and len(splits.train) == 6
    assert splits.test["label"].tolist().count(1) == 4


def test_validation_hold_out_is_seeded(thesis_root: Path) -> None:
    a = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=3)
    b = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=3)
    c = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=4)
    assert a.val["image_path"].tolist() == b.val["image_path"].tolist()
    assert a.val["image_path"].tolist() != c.val["image_path"].tolist() or len(a.val) == len(c.val)


def test_mixed_trains_on_the_union_and_still_tests_on_real(tmp_path: Path, thesis_root: Path) -> None:
    synthetic = write_thesis_fixture(tmp_path / "synthetic", batches=2, defective=())
    splits = make_splits(
        data_cfg(train_domains=["real", "synthetic"], val_fraction=0.0),
        {"real": thesis_root, "synthetic": synthetic},
        seed=0,
    )
    assert set(splits.train["domain"]) == {"real", "synthetic"}
    assert len(splits.train) == 8 + 8
    assert set(splits.test["domain"]) == {"real"}


def test_mvtec_split_follows_its_folders(magnetic_tile: Path) -> None:
    splits = make_splits(data_cfg(layout="mvtec", val_fraction=0.1), {"real": magnetic_tile}, seed=0)
    assert len(splits.train) + len(splits.val) == 700
    assert len(splits.test) == 644
    assert splits.train["label"].eq(0).all()


def test_test_batches_that_do_not_exist_are_named(thesis_root: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"data.test_batches=\[7\]"):
        make_splits(data_cfg(test_batches=[7]), {"real": thesis_root}, seed=0)


def test_unknown_training_domain_names_the_key(thesis_root: Path) -> None:
    with pytest.raises(DataLayoutError, match="data.train_domains"):
        make_splits(data_cfg(train_domains=["cartoon"]), {"real": thesis_root}, seed=0)


def test_segmentation_datamodule_yields_square_images_and_binary_masks(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=0)
    module = SegmentationDataModule(splits.train, splits.val, image_size=32, batch_size=4)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() <= batch["image"].max() <= 1
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert len(module.val_set) == 2


def test_segmentation_without_true_masks_is_refused(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(), {"real": thesis_root}, seed=0)
    table = splits.train.assign(object_mask_path=None)
    module = SegmentationDataModule(table, splits.val, image_size=32)
    with pytest.raises(DataLayoutError, match="no object mask"):
        module.setup("fit")


def test_reconstruction_datamodule_cuts_windows_of_good_images_and_keeps_test_labels(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=0)
    pre = preprocess_cfg(tile={"core": 32, "window": 48})
    load = lambda table: [load_sample(row, pre) for _, row in table.iterrows()]  # noqa: E731
    train, val, test = load(splits.train), load(splits.val), load(splits.test)
    module = ReconstructionDataModule(train, val, core=32, window=48, batch_size=5)
    module.setup("fit")
    # a 96x64 image gives 3x2 cores of 32 px
    assert len(module.train_set) == len(train) * 6
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (5, 1, 48, 48)
    test_batch = next(iter(DataLoader(ImageDataset(test), batch_size=5)))  # as the detect stage scores them
    assert test_batch["image"].shape[1:] == (1, 64, 96)
    assert test_batch["defect_mask"].shape == test_batch["image"].shape
    assert test_batch["label"].tolist() == splits.test["label"].tolist()[:5]


def test_defective_training_images_never_reach_the_detector(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(test_batches=[2]), {"real": thesis_root}, seed=0)
    pre = preprocess_cfg()
    train = [load_sample(row, pre) for _, row in splits.train.iterrows()]
    assert any(s.label == 1 for s in train)
    module = ReconstructionDataModule(train, [], core=32, window=48, min_foreground=0.1)
    module.setup("fit")
    assert all(s.label == 0 for s in module.samples["train"])


def test_training_images_read_lazily_give_the_same_good_windows(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(test_batches=[2]), {"real": thesis_root}, seed=0)
    pre = preprocess_cfg()
    held = ReconstructionDataModule([load_sample(row, pre) for _, row in splits.train.iterrows()], [], 32, 48)
    lazy = ReconstructionDataModule(LazySamples(splits.train, pre), [], 32, 48)
    assert isinstance(lazy.samples["train"], LazySamples)  # the defective rows dropped on the table, nothing read
    assert len(lazy.samples["train"]) == int((splits.train["label"] == 0).sum()) < len(splits.train)
    held.setup("fit")
    lazy.setup("fit")
    assert np.array_equal(held.train_set.images, lazy.train_set.images)


def test_loaded_sample_is_masked_and_equalised(thesis_root: Path) -> None:
    splits = make_splits(data_cfg(), {"real": thesis_root}, seed=0)
    sample = load_sample(splits.test.iloc[0], preprocess_cfg(size=[48, 32]))
    assert sample.image.shape == (32, 48)
    assert sample.image[~sample.object_mask].max() == 0
    assert sample.label == 1 and sample.defect_mask.any()


@pytest.mark.parametrize("workers", [0, 2])
def test_augmented_batches_are_decided_by_the_seed(thesis_root: Path, workers: int) -> None:
    splits = make_splits(data_cfg(val_fraction=0.25), {"real": thesis_root}, seed=0)
    augment = OmegaConf.create(
        {
            "_target_": "albumentations.Compose",
            "transforms": [{"_target_": "albumentations.Affine", "rotate": [-30, 30], "p": 1.0}],
        }
    )

    def batches(seed: int) -> list[torch.Tensor]:
        module = SegmentationDataModule(
            splits.train, splits.val, image_size=32, batch_size=2, num_workers=workers, augment=augment, seed=seed
        )
        module.setup("fit")
        loader = iter(module.train_dataloader())
        return [next(loader)["image"] for _ in range(2)]

    first, again, other = batches(1), batches(1), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_an_empty_predicted_object_mask_falls_back_to_the_whole_frame(
    thesis_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = make_splits(data_cfg(), {"real": thesis_root}, seed=0).test.iloc[0]
    empty = tmp_path / "empty_mask.png"
    height, width = read_image(row["image_path"]).shape[:2]
    cv2.imwrite(str(empty), np.zeros((height, width), np.uint8))
    with caplog.at_level("WARNING"):
        sample = load_sample({**row.to_dict(), "predicted_mask_path": str(empty)}, preprocess_cfg(size=[48, 32]))
    assert sample.object_mask.all() and sample.image.any()  # scored over the frame, not blacked out
    assert str(empty) in caplog.text


def test_the_segmenters_masks_become_a_column_that_loading_prefers(thesis_root: Path, tmp_path: Path) -> None:
    splits = make_splits(data_cfg(), {"real": thesis_root}, seed=0)
    row = splits.test.iloc[0]
    height, width = read_image(row["image_path"]).shape[:2]
    square = np.zeros((height, width), np.uint8)
    square[: height // 2, : width // 2] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), square)
    masks = SegmentResult("key", {row["image_path"]: str(tmp_path / "mask.png")})
    attached = masks.attach(splits)
    assert attached.test["predicted_mask_path"].iloc[0] == str(tmp_path / "mask.png")
    assert attached.train["predicted_mask_path"].isna().all()
    assert load_sample(attached.test.iloc[0], preprocess_cfg()).object_mask.sum() == square.astype(bool).sum()
    assert SegmentResult("key").attach(splits) is splits  # no predictions: the data's own masks
