"""Bringing images to the channel count a network was built for, so grey and colour data reach any model."""

from __future__ import annotations

from torch import Tensor


def match_channels(images: Tensor, channels: int) -> Tensor:
    """(B, C, H, W) -> (B, channels, H, W): colour averaged to grey, grey replicated to colour.

    A detector built for grey (the thesis' autoencoders) still runs on colour data, and one built for
    colour on grey data, without a config change; equal channel counts pass through untouched.
    """
    if images.shape[1] == channels:
        return images
    return images.mean(1, keepdim=True).expand(-1, channels, -1, -1)
