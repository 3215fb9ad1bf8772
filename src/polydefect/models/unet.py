"""U-Net for background segmentation (thesis 3.6.3, listing A.1): grey image in, object logits out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ConvPair(nn.Sequential):
    """Conv 3x3 + ReLU, dropout, conv 3x3 + ReLU: one level of listing A.1."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """The thesis U-Net, with widths, depth and channels configurable.

    `forward` returns LOGITS, not the sigmoid of listing A.1: training uses `BCEWithLogitsLoss`, which is
    numerically stable where a sigmoid followed by BCE saturates; `torch.sigmoid` of the output gives the
    thesis' object probability.

    Args:
        in_channels: image channels (1 for the thesis' grey images).
        out_channels: output maps (1: object vs background).
        widths: filters per level, top to bottom; its length minus one is the number of 2x poolings.
        encoder_dropout: dropout inside each encoder level (len(widths) values).
        decoder_dropout: dropout inside each decoder level, bottom to top (len(widths) - 1 values).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        encoder_dropout: Sequence[float] = (0.1, 0.1, 0.1, 0.2, 0.3),
        decoder_dropout: Sequence[float] = (0.2, 0.2, 0.1, 0.1),
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"segmenter.net.widths needs at least 2 levels, got {widths}")
        if len(encoder_dropout) != len(widths):
            raise ValueError(f"segmenter.net.encoder_dropout needs {len(widths)} values, got {list(encoder_dropout)}")
        if len(decoder_dropout) != len(widths) - 1:
            raise ValueError(
                f"segmenter.net.decoder_dropout needs {len(widths) - 1} values, got {list(decoder_dropout)}"
            )
        self.depth = len(widths) - 1
        channels = [in_channels, *widths]
        self.encoder = nn.ModuleList(_ConvPair(channels[i], channels[i + 1], p) for i, p in enumerate(encoder_dropout))
        up_widths = widths[::-1]  # e.g. 256, 128, 64, 32, 16
        pairs = zip(up_widths[:-1], up_widths[1:], strict=True)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in pairs)
        # after concatenation with the skip the channels double: 2b -> b
        self.decoder = nn.ModuleList(
            _ConvPair(2 * b, b, p) for b, p in zip(up_widths[1:], decoder_dropout, strict=True)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self._init_weights()
        # channels-last weights take oneDNN's blocked convolutions: a training step at 128 px, batch 16, ran
        # 1.18x faster on a 2-core CPU (0.79 s against 0.94 s); a grey input is channels-last already
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        # As Keras in listing A.1: He normal for the ReLU convs, Glorot uniform (Keras' default) for
        # the transposed convs and the head, zero biases everywhere.
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.head:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.ConvTranspose2d) or module is self.head:
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, out_channels, H, W) logits; any H, W (padded to a multiple of 2**depth)."""
        height, width = x.shape[-2:]
        step = 2**self.depth
        pad_h, pad_w = -height % step, -width % step
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[..., :height, :width]
