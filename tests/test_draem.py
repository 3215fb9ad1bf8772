"""The DRAEM-style detector: network shapes and gradients, a few real training steps, maps of any size."""

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

from polydefect.models.draem import Draem
from polydefect.tasks.draem import DraemTask, focal_loss


def _net(in_channels: int = 1) -> Draem:
    return Draem(in_channels, reconstruction_widths=(8, 16, 16), segmentation_widths=(8, 16, 16))


@pytest.mark.parametrize("channels", [1, 3])
def test_draem_keeps_the_shape_and_every_parameter_gets_a_gradient(channels: int) -> None:
    net = _net(channels)
    x = torch.rand(1, channels, 320, 320)
    logits = net(x)
    assert logits.shape == (1, 1, 320, 320) and torch.isfinite(logits).all()
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_focal_loss_is_smaller_for_confident_right_answers_than_for_wrong_ones() -> None:
    target = torch.tensor([0.0, 1.0])
    assert focal_loss(torch.tensor([-5.0, 5.0]), target) < 0.01 < focal_loss(torch.tensor([5.0, -5.0]), target)


def test_draem_trains_a_few_steps_and_maps_odd_grey_and_colour_inputs() -> None:
    torch.manual_seed(0)
    task = DraemTask(_net(), partial(torch.optim.Adam, lr=1e-3), input_size=32, anomaly_probability=1.0)
    loader = DataLoader([{"image": image} for image in textured_surfaces(8)], batch_size=4)
    trainer = bare_trainer(max_steps=4, limit_val_batches=1)
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/segmentation_loss"} <= set(metrics)
    assert torch.isfinite(metrics["val/loss"])
    grey = textured_surfaces(2, size=(37, 53))
    for images in (grey, grey.expand(-1, 3, -1, -1)):
        amap = task.anomaly_map(images)
        assert amap.shape == (2, 1, 37, 53) and amap.dtype == torch.float32
        assert amap.min() >= 0 and amap.max() <= 1


def test_input_size_must_suit_the_poolings() -> None:
    with pytest.raises(ValueError, match="model.input_size"):
        DraemTask(_net(), partial(torch.optim.Adam), input_size=30)


def test_draem_config_builds_its_task() -> None:
    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "draem.yaml")
    task = instantiate(config)
    assert isinstance(task, DraemTask) and task.hparams.input_size % task.net.divisor == 0
