"""The thesis' convolutional autoencoder (Appendix A, listing A.2): the reconstructor behind `model=cae`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _conv_pair(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Two 3x3 'same' convolutions with ReLU: one level of listing A.2."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    ]


def _pointwise_stack(channels: Sequence[int]) -> nn.Sequential:
    """1x1 linear maps without activation: what Keras `Dense` does to the channels of a 4D tensor."""
    return nn.Sequential(*(nn.Conv2d(a, b, 1) for a, b in zip(channels[:-1], channels[1:], strict=True)))


class ClampInEval(nn.Module):
    """Identity while training (no saturated gradient), clamp to [0, 1] in eval mode (valid grey values)."""

    def forward(self, x: Tensor) -> Tensor:
        return x if self.training else x.clamp(0.0, 1.0)


OUTPUTS: dict[str, type[nn.Module]] = {"linear": ClampInEval, "sigmoid": nn.Sigmoid}


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder of listing A.2 (31 layers with the defaults).

    Encoder: a pair of 3x3 convolutions per width, dropout after the first pair, 2x2 max-pooling
    between levels. Bottleneck: the Dense 100-25-100 of the listing, applied per position on the
    channels (1x1 convolutions, no activation). Decoder: per level a 3x3 stride-2 transposed
    convolution (no activation, as in the listing) and a pair of convolutions; a 3x3 convolution gives
    the grey values.

    Args:
        in_channels: channels of the input and of the reconstruction (1 for grey-scale).
        widths: convolution widths from the top level down; one pooling between consecutive levels,
            so inputs must be divisible by 2 ** (len(widths) - 1).
        bottleneck: sizes of the per-position dense layers; the smallest one is the code `z`.
        dropout: dropout rate after the first convolution pair (thesis 3.8.2).
        init: 'he' draws every convolution from He-normal (fan-in, ReLU gain) with zero biases, which keeps
            the signal alive through the 31 layers without normalisation; 'default' keeps PyTorch's, under
            which the network can go dead at the start (below).
        output: 'linear' trains the last convolution unbounded and clamps to [0, 1] in eval mode; 'sigmoid'
            is listing A.2's literal output. On masked scanner windows (mostly black) the sigmoid saturates
            within the first ~40 Adam steps at the thesis' learning rate: the output goes black for every
            input and no gradient brings it back (measured on real, synthetic and mixed training windows;
            'linear' with 'he' trained in every case).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        bottleneck: Sequence[int] = (100, 25, 100),
        dropout: float = 0.2,
        init: str = "he",
        output: str = "linear",
    ) -> None:
        super().__init__()
        widths, bottleneck = list(widths), list(bottleneck)
        if not widths or not bottleneck:
            raise ValueError("model.net.widths and model.net.bottleneck need at least one entry each")
        code_at = bottleneck.index(min(bottleneck))
        self.in_channels = in_channels
        self.downsampling = 2 ** (len(widths) - 1)

        encoder: list[nn.Module] = [*_conv_pair(in_channels, widths[0]), nn.Dropout(dropout)]
        for previous, width in zip(widths[:-1], widths[1:], strict=True):
            encoder += [nn.MaxPool2d(2, stride=2, ceil_mode=True), *_conv_pair(previous, width)]
        self.encoder = nn.Sequential(*encoder)
        self.to_code = _pointwise_stack([widths[-1], *bottleneck[: code_at + 1]])
        self.from_code = _pointwise_stack(bottleneck[code_at:])

        decoder: list[nn.Module] = []
        previous = bottleneck[-1]
        for width in reversed(widths[:-1]):
            # padding=1, output_padding=1 doubles the size exactly, as Keras 'same' with stride 2 does
            decoder += [nn.ConvTranspose2d(previous, width, 3, stride=2, padding=1, output_padding=1)]
            decoder += _conv_pair(width, width)
            previous = width
        if output not in OUTPUTS:
            raise ValueError(f"model.net.output must be one of {sorted(OUTPUTS)}, got {output!r}")
        decoder += [nn.Conv2d(previous, in_channels, 3, padding=1), OUTPUTS[output]()]
        self.decoder = nn.Sequential(*decoder)
        if init == "he":
            for module in self.modules():
                if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        elif init != "default":
            raise ValueError(f"model.net.init must be 'default' or 'he', got {init!r}")
        # Channels-last weights put every convolution on oneDNN's blocked fast path (about 2x on a 2-core
        # CPU, benchmarks/README.md); a grey (B, 1, H, W) input is channels-last already, so nothing is copied.
        self.to(memory_format=torch.channels_last)

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> code (B, min(bottleneck), H / 2^L, W / 2^L)."""
        height, width = x.shape[-2:]
        if height % self.downsampling or width % self.downsampling:
            raise ValueError(
                f"ConvAutoencoder input {height}x{width} must be divisible by {self.downsampling} "
                "(check preprocess.tile.window)"
            )
        return self.to_code(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Code (B, min(bottleneck), h, w) -> reconstruction (B, C, h * 2^L, w * 2^L), in [0, 1] in eval mode."""
        return self.decoder(self.from_code(z))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> reconstruction of the same shape."""
        return self.decode(self.encode(x))
