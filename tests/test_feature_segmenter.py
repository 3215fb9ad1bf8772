"""The feature segmenter: only its head learns from pasted anomalies; maps of any size, grey or colour."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from helpers.surfaces import textured_surfaces
from helpers.trainer import bare_trainer
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from polydefect.models.backbones import EfficientNetLiteFeatures
from polydefect.models.feature_segmenter import FeatureSegmenter
from polydefect.tasks.feature_segmentation import FeatureSegmentationTask


def _task(**kwargs: object) -> FeatureSegmentationTask:
    net = FeatureSegmenter(EfficientNetLiteFeatures("efficientnet-lite0", (2, 4)), widths=(16, 8))
    return FeatureSegmentationTask(net, partial(torch.optim.Adam, lr=1e-2), **{"input_size": 64, **kwargs})


def test_only_the_head_learns_and_maps_come_back_at_any_size_grey_or_colour() -> None:
    torch.manual_seed(0)
    task = _task(anomaly_probability=1.0)
    backbone = {k: v.clone() for k, v in task.net.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in task.net.head.state_dict().items()}
    loader = DataLoader([{"image": image} for image in textured_surfaces(8)], batch_size=4)
    trainer = bare_trainer(max_steps=4, limit_val_batches=1)
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    assert {"train/loss", "val/loss"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert all(torch.equal(v, task.net.backbone.state_dict()[k]) for k, v in backbone.items())
    assert any(not torch.equal(v, task.net.head.state_dict()[k]) for k, v in head.items())
    grey = textured_surfaces(2, size=(37, 53))
    for images in (grey, grey.expand(-1, 3, -1, -1)):
        amap = task.anomaly_map(images)
        assert amap.shape == (2, 1, 37, 53) and amap.dtype == torch.float32
        assert amap.min() >= 0 and amap.max() <= 1
    assert task.training  # scoring leaves the task in the mode it found it in


def test_a_trained_head_ranks_pasted_anomalies_above_good_patches() -> None:
    torch.manual_seed(0)
    task = _task(anomaly_probability=0.5, repeats=4)
    loader = DataLoader([{"image": image} for image in textured_surfaces(16)], batch_size=8, shuffle=True)
    trainer = bare_trainer(max_steps=120, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=loader)
    task.eval()
    images = textured_surfaces(4, size=(64, 64))
    images[:, :, 16:40, 16:40] = 1.0 - images[:, :, 16:40, 16:40]  # an inverted square on each surface
    amap = task.anomaly_map(images)[:, 0]
    inside, outside = amap[:, 20:36, 20:36].mean(), amap[:, :, 48:].mean()
    assert inside > 2 * outside


@pytest.mark.parametrize(("key", "value"), [("input_size", 16), ("repeats", 0)])
def test_bad_settings_name_their_key(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"model.{key}"):
        _task(**{key: value})


def test_head_needs_two_widths() -> None:
    with pytest.raises(ValueError, match="model.net.widths"):
        FeatureSegmenter(EfficientNetLiteFeatures("efficientnet-lite0", (2,)), widths=(8,))


def test_config_builds_its_task() -> None:
    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "feature_segmenter.yaml")
    task = instantiate(config)
    assert isinstance(task, FeatureSegmentationTask) and isinstance(task.net, FeatureSegmenter)


def test_the_map_in_log_odds_is_unbounded_and_orders_pixels_as_the_probabilities_do() -> None:
    torch.manual_seed(0)
    task = _task(anomaly_probability=0.5, sigma=0.0)
    loader = DataLoader([{"image": image} for image in textured_surfaces(8)], batch_size=4)
    bare_trainer(max_steps=10, limit_val_batches=0).fit(task, train_dataloaders=loader)
    images = textured_surfaces(2, size=(64, 64))
    probability = task.anomaly_map(images)
    task.hparams.logits = True
    logits = task.anomaly_map(images)
    assert logits.min() < 0 or logits.max() > 1
    # the two maps differ only by the sigmoid, applied before or after the upsampling of the patch grid
    assert torch.equal(logits.flatten(1).argmax(1), probability.flatten(1).argmax(1))
    assert (torch.sigmoid(logits) - probability).abs().max() < 0.01
