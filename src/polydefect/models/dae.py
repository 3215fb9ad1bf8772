"""The older fully connected autoencoder (DAE, thesis figure 1.5): the baseline behind `model=dae`.

The thesis shows this network only as a figure and states its rules (dense layers, ReLU, sigmoid
output, trained with Adam on slices of good images); the sizes below are our reading of it. A
window is shrunk to `input_size` pixels a side so that the first dense layer stays small, and the
reconstruction is enlarged back to the window size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _dense_stack(sizes: Sequence[int], last: nn.Module) -> nn.Sequential:
    """Linear layers with ReLU between them and `last` after the final one."""
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b), last if index == len(sizes) - 2 else nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DenseAutoencoder(nn.Module):
    """Fully connected autoencoder on a downsampled window.

    Args:
        in_channels: channels of the input and of the reconstruction (1 for grey-scale).
        input_size: side in pixels the window is resized to before flattening.
        hidden: widths of the dense layers between the pixels and the code (mirrored in the decoder).
        latent: size of the code `z`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int = 64,
        hidden: Sequence[int] = (512, 128),
        latent: int = 25,
    ) -> None:
        super().__init__()
        if input_size <= 0 or latent <= 0:
            raise ValueError(f"model.net.input_size ({input_size}) and model.net.latent ({latent}) must be positive")
        self.in_channels, self.input_size = in_channels, input_size
        sizes = [in_channels * input_size * input_size, *hidden, latent]
        # every dense layer has ReLU (thesis 1.1), the code included; only the output is a sigmoid
        self.encoder = _dense_stack(sizes, nn.ReLU(inplace=True))
        self.decoder = _dense_stack(sizes[::-1], nn.Sigmoid())

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1], any H, W -> code (B, latent)."""
        small = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return self.encoder(small.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """Code (B, latent) -> reconstruction (B, C, input_size, input_size) in [0, 1]."""
        return self.decoder(z).view(-1, self.in_channels, self.input_size, self.input_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> reconstruction of the same shape, enlarged back from `input_size`."""
        x_hat = self.decode(self.encode(x))
        return F.interpolate(x_hat, size=x.shape[-2:], mode="bilinear", align_corners=False)
