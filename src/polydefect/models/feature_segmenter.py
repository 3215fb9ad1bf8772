"""A small segmentation head on frozen pretrained patch features: DRAEM's discriminative idea without its
from-scratch networks, so it trains in minutes on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from polydefect.models.feature_memory import check_aggregation, embed_patches


def _conv(in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeatureSegmenter(nn.Module):
    """Anomaly logits per patch: frozen backbone features (locally averaged, as the feature memory's) through
    a 1x1 projection and 3x3 convolutions, the last one dilated, so a patch is judged against its surroundings.

    Args:
        backbone: frozen module mapping (B, C, H, W) in [0, 1] to a list of feature maps with `channels`.
        aggregation: side of the averaging neighbourhood of each backbone map, in cells (odd).
        widths: output channels of the projection and of each 3x3 convolution after it (at least two).
    """

    def __init__(self, backbone: nn.Module, aggregation: int = 3, widths: Sequence[int] = (128, 64, 64)) -> None:
        super().__init__()
        check_aggregation(aggregation)
        if len(widths) < 2:
            raise ValueError(f"model.net.widths needs a projection width and at least one more, got {list(widths)}")
        self.backbone, self.aggregation = backbone, aggregation
        layers = [_conv(sum(backbone.channels), widths[0], 1)]
        for index, (before, after) in enumerate(zip(widths, widths[1:], strict=False)):
            last = index == len(widths) - 2
            layers.append(_conv(before, after, 3, dilation=2 if last else 1))
        layers.append(nn.Conv2d(widths[-1], 1, 1))
        self.head = nn.Sequential(*layers)

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D, h, w) patch features, the same as a feature memory's on this backbone
        and aggregation (so an ensemble computes them once for both)."""
        return embed_patches(self.backbone, images, self.aggregation)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, h, w) logits at the backbone's finest requested stride."""
        return self.head(self.embed(images))
