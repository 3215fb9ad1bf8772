"""Bringing images to the channel count a network was built for, so grey and colour data reach any model."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def match_channels(images: Tensor, channels: int) -> Tensor:
    """(B, C, H, W) -> (B, channels, H, W): colour averaged to grey, grey replicated to colour.

    A detector built for grey (the thesis' autoencoders) still runs on colour data, and one built for
    colour on grey data, without a config change; equal channel counts pass through untouched.
    """
    if images.shape[1] == channels:
        return images
    return images.mean(1, keepdim=True).expand(-1, channels, -1, -1)


def resize_square(images: Tensor, size: int | None) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size), antialiased; None or a batch already that size passes through.

    Detectors with a fixed input square (the feature models, DRAEM) see every data set's images, whatever
    their size and aspect, at the size they were tuned for; their maps are resized back by the caller.
    """
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
