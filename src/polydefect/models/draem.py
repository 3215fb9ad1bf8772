"""DRAEM-style networks trained from scratch: a reconstructive autoencoder and a discriminative segmenter."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm and ReLU: one level of either network."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _EncoderDecoder(nn.Module):
    """A U-shaped net; without skip connections it must squeeze the image through its bottleneck.

    Inputs need H and W divisible by 2 ** (len(widths) - 1).
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], skips: bool) -> None:
        super().__init__()
        widths = list(widths)
        self.skips = skips
        self.down = nn.ModuleList(_block(a, b) for a, b in zip([in_channels, *widths[:-1]], widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        upper, lower = widths[-2::-1], widths[:0:-1]  # decoder levels from the deepest up
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(b, a, 3, padding=1)
            )
            for a, b in zip(upper, lower, strict=True)
        )
        self.merge = nn.ModuleList(_block(a * (2 if skips else 1), a) for a in upper)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        levels = []
        for index, down in enumerate(self.down):
            x = down(x if index == 0 else self.pool(x))
            levels.append(x)
        for up, merge, skip in zip(self.up, self.merge, levels[-2::-1], strict=True):
            x = up(x)
            x = merge(torch.cat([x, skip], 1) if self.skips else x)
        return self.head(x)


class Draem(nn.Module):
    """DRAEM (Zavrtanik et al. 2021): reconstruct the image, then segment where input and reconstruction differ.

    The reconstructive net learns to map images with pasted anomalies back to the good image; the
    discriminative net sees the input and its reconstruction side by side and outputs one logit per
    pixel. Both are small and trained from scratch, so nothing is downloaded.

    Args:
        in_channels: 1 for grey, 3 for colour.
        reconstruction_widths: widths of the reconstructive encoder levels (no skips).
        segmentation_widths: widths of the discriminative U-Net levels (with skips).
    """

    def __init__(
        self,
        in_channels: int = 1,
        reconstruction_widths: Sequence[int] = (32, 64, 128, 128),
        segmentation_widths: Sequence[int] = (16, 32, 64, 64),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.reconstructive = _EncoderDecoder(in_channels, in_channels, reconstruction_widths, skips=False)
        self.discriminative = _EncoderDecoder(2 * in_channels, 1, segmentation_widths, skips=True)
        self.divisor = 2 ** (max(len(reconstruction_widths), len(segmentation_widths)) - 1)

    def reconstruct(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, C, H, W) reconstruction in [0, 1]."""
        return torch.sigmoid(self.reconstructive(x))

    def segment(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Input and reconstruction, (B, C, H, W) each -> (B, 1, H, W) anomaly logits."""
        return self.discriminative(torch.cat([x, x_hat], 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H, W) anomaly logits."""
        return self.segment(x, self.reconstruct(x))
