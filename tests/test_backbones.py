"""The pretrained EfficientNet-Lite feature extractor: offline loading, grey and colour, odd sizes, frozen."""

from __future__ import annotations

import socket

import pytest
import torch

from polydefect.models.backbones import EfficientNetLiteFeatures, weights_path


def test_backbone_loads_its_weights_with_the_network_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    backbone = EfficientNetLiteFeatures("efficientnet-lite0", stages=[2, 4])
    stored = torch.load(weights_path("efficientnet-lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.stem[0].weight, stored["_conv_stem.weight"])


@pytest.mark.parametrize(("name", "channels"), [("efficientnet-lite0", [40, 112]), ("efficientnet-lite2", [48, 120])])
def test_backbone_returns_one_map_per_stage_at_its_stride_for_odd_sizes(name: str, channels: list[int]) -> None:
    backbone = EfficientNetLiteFeatures(name, stages=[4, 2])
    maps = backbone(torch.rand(2, 3, 75, 101))
    assert backbone.channels == channels and backbone.strides == [8, 16]
    assert [tuple(m.shape) for m in maps] == [(2, channels[0], 10, 13), (2, channels[1], 5, 7)]


def test_grey_input_gives_the_features_of_its_colour_replica() -> None:
    backbone = EfficientNetLiteFeatures("efficientnet-lite0", stages=[2])
    grey = torch.rand(1, 1, 64, 48)
    assert torch.allclose(backbone(grey)[0], backbone(grey.expand(-1, 3, -1, -1))[0])


def test_backbone_stays_frozen_in_eval_mode_when_training_is_asked() -> None:
    backbone = EfficientNetLiteFeatures("efficientnet-lite0", stages=[1]).train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())


def test_unknown_backbone_names_and_stages_are_errors_naming_the_config_key() -> None:
    with pytest.raises(ValueError, match="backbone.name"):
        EfficientNetLiteFeatures("resnet18")
    with pytest.raises(ValueError, match="efficientnet-lite3-pytorch-model"):
        EfficientNetLiteFeatures("efficientnet-lite3")
    with pytest.raises(ValueError, match="backbone.stages"):
        EfficientNetLiteFeatures("efficientnet-lite0", stages=[7])
