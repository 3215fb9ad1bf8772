"""Training the U-Net segmenter for real on toy scenes: loss, logging, checkpoints, resuming, inference."""

import functools
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from helpers.scenes import toy_scenes
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from polydefect.models.unet import UNet
from polydefect.segmentation.base import Segmenter, build_segmenter
from polydefect.segmentation.unet import UNetSegmenter
from polydefect.tasks.segmentation import SegmentationTask, dice_loss

CONF = Path(__file__).resolve().parents[1] / "conf" / "segmenter"
QUIET = {"accelerator": "cpu", "enable_progress_bar": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**changes):
    """conf/segmenter/unet.yaml shrunk for CPU tests: a 3-level net at 32 px."""
    cfg = OmegaConf.load(CONF / "unet.yaml")
    cfg.net.widths, cfg.net.encoder_dropout, cfg.net.decoder_dropout = [8, 16, 32], [0, 0, 0], [0, 0]
    cfg.optimizer.lr = 0.01
    cfg.image_size, cfg.batch_size, cfg.max_epochs = 32, 4, 2
    return OmegaConf.merge(cfg, changes)


class DictBatches(TensorDataset):
    def __getitem__(self, index):
        image, mask = super().__getitem__(index)
        return {"image": image, "mask": mask}


def toy_loader(count: int, size: int, seed: int, shuffle: bool = True) -> DataLoader:
    images, masks = toy_scenes(count, shape=(size, size), seed=seed)
    x = torch.from_numpy(np.stack(images)).float().div(255).unsqueeze(1)  # (N, 1, S, S)
    y = torch.from_numpy(np.stack(masks)).float().unsqueeze(1)
    return DataLoader(DictBatches(x, y), batch_size=4, shuffle=shuffle, generator=torch.Generator().manual_seed(0))


def test_a_few_training_steps_of_the_thesis_unet_lower_the_loss():
    torch.manual_seed(0)
    train = toy_loader(8, 64, seed=1)
    task = SegmentationTask(UNet(), functools.partial(torch.optim.Adam, lr=1e-3))
    batch = next(iter(DataLoader(train.dataset, batch_size=8)))

    def loss_now() -> float:
        task.eval()
        with torch.no_grad():
            return float(task.loss(task(batch["image"]), batch["mask"]))

    before = loss_now()
    trainer = L.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_model_summary=False, **QUIET)
    trainer.fit(task, train_dataloaders=train)
    assert loss_now() < 0.7 * before


def test_training_logs_loss_f1_and_iou_under_stage_keys():
    torch.manual_seed(0)
    net = UNet(widths=(8, 16), encoder_dropout=(0, 0), decoder_dropout=(0,))
    task = SegmentationTask(net, functools.partial(torch.optim.Adam, lr=1e-2), dice_weight=1.0)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False, **QUIET)
    trainer.fit(task, train_dataloaders=toy_loader(8, 32, 2), val_dataloaders=toy_loader(4, 32, 3, shuffle=False))
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/f1", "val/iou"} <= set(metrics)
    assert 0 <= float(metrics["val/iou"]) <= float(metrics["val/f1"]) <= 1


def test_dice_loss_is_zero_when_right_and_near_one_when_inverted():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    logits = (mask * 2 - 1) * 50  # confident and right
    assert float(dice_loss(logits, mask)) == pytest.approx(0, abs=1e-6)
    assert float(dice_loss(-logits, mask)) > 0.95


def test_fit_keeps_the_best_and_last_checkpoints_and_resumes_from_last(tmp_path):
    images, masks = toy_scenes(10, shape=(40, 56), seed=4)
    build_segmenter(small_cfg()).fit(images[:8], masks[:8], images[8:], masks[8:], tmp_path, QUIET)
    checkpoints = tmp_path / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 1
    steps = torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"]
    # a second call with a longer budget continues the first run: one more epoch, not three
    build_segmenter(small_cfg(max_epochs=3)).fit(images[:8], masks[:8], images[8:], masks[8:], tmp_path, QUIET)
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == steps * 3 // 2


def test_trained_unet_segmenter_masks_images_of_any_size_at_their_own_size(tmp_path):
    torch.manual_seed(0)
    images, masks = toy_scenes(24, shape=(48, 64), seed=5)
    segmenter = build_segmenter(small_cfg(max_epochs=12)).fit(images, masks, None, None, tmp_path, QUIET)
    assert isinstance(segmenter, Segmenter)
    test_images, test_masks = toy_scenes(3, shape=(72, 96), seed=6)
    predictions = segmenter.predict_batch(test_images)
    scores = segmenter.score_batch(test_images)
    for prediction, score, truth in zip(predictions, scores, test_masks, strict=True):
        assert prediction.dtype == bool and prediction.shape == truth.shape
        assert score.dtype == np.float32 and score.shape == truth.shape and 0 <= score.min() <= score.max() <= 1
        assert (prediction & truth).sum() / (prediction | truth).sum() > 0.8
    assert np.array_equal(segmenter.predict(test_images[0]), predictions[0])


def test_saved_weights_load_into_a_fresh_segmenter_and_give_the_same_masks(tmp_path):
    images, masks = toy_scenes(6, shape=(32, 32), seed=7)
    trained = build_segmenter(small_cfg(max_epochs=1)).fit(images, masks, None, None, tmp_path, QUIET)
    trained.save(tmp_path / "unet.safetensors")
    fresh = UNetSegmenter(UNet(widths=(8, 16, 32), encoder_dropout=(0, 0, 0), decoder_dropout=(0, 0)), None, 32)
    fresh.load(tmp_path / "unet.safetensors")
    for a, b in zip(trained.score_batch(images), fresh.score_batch(images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fit_datamodule_trains_from_the_segmentation_datamodule(tmp_path):
    from polydefect.data.datamodules import SegmentationDataModule
    from polydefect.data.io import write_image_atomic
    from polydefect.data.layout import COLUMNS

    images, masks = toy_scenes(6, shape=(40, 40), seed=8)
    rows = []
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        write_image_atomic(tmp_path / f"image_{i}.png", image)
        write_image_atomic(tmp_path / f"mask_{i}.png", mask.astype(np.uint8) * 255)
        rows.append(
            {"image_path": str(tmp_path / f"image_{i}.png"), "object_mask_path": str(tmp_path / f"mask_{i}.png")}
        )
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    data = SegmentationDataModule(table[:4], table[4:], image_size=32, batch_size=2)
    segmenter = build_segmenter(small_cfg(max_epochs=1)).fit_datamodule(data, tmp_path / "run", QUIET)
    assert segmenter.predict(images[0]).shape == (40, 40)
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
