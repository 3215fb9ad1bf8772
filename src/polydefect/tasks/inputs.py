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


ASPECT_MULTIPLE = 8  # an aspect-kept input's long side is rounded to this (the backbones' first pooling stride)


def input_shape(height: int, width: int, size: int | None, keep_aspect: bool = False) -> tuple[int, int]:
    """The (H, W) a detector's network sees for an image of (height, width): a `size` square, or with
    `keep_aspect` the short side at `size` and the long side scaled with it (a multiple of ASPECT_MULTIPLE), so a
    long narrow image keeps its detail along its length; None keeps the image's own size."""
    if size is None:
        return height, width
    if not keep_aspect:
        return size, size
    scale = size / min(height, width)
    long_side = max(ASPECT_MULTIPLE, round(max(height, width) * scale / ASPECT_MULTIPLE) * ASPECT_MULTIPLE)
    return (size, long_side) if height <= width else (long_side, size)


def resize_input(images: Tensor, size: int | None, keep_aspect: bool = False) -> Tensor:
    """(B, C, H, W) -> (B, C, *input_shape(H, W, size, keep_aspect)), antialiased; a batch already that size
    passes through.

    Detectors with a fixed input size (the feature models, DRAEM) see every data set's images at the scale they
    were set for; their maps are resized back by the caller. A square image gives the same input either way.
    """
    shape = input_shape(*images.shape[-2:], size, keep_aspect)
    if tuple(images.shape[-2:]) == shape:
        return images
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=False, antialias=True)
