"""Bringing images to the channel count a network was built for, so grey and colour data reach any model."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
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
    """(B, C, H, W) -> (B, C, *input_shape(H, W, size, keep_aspect)), antialiased (`antialiased_resize`); a batch
    already that size passes through.

    Detectors with a fixed input size (the feature models, DRAEM) see every data set's images at the scale they
    were set for; their maps are resized back by the caller. A square image gives the same input either way.
    """
    shape = input_shape(*images.shape[-2:], size, keep_aspect)
    if tuple(images.shape[-2:]) == shape:
        return images
    return antialiased_resize(images, shape)


def antialiased_resize(images: Tensor, shape: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, *shape): `F.interpolate(..., mode="bilinear", antialias=True)`, with the weights
    taken in float64 (`axis_taps`) and applied as one matrix product per axis (`axis_matrix`).

    torch's and ONNX Runtime's float32 antialiased resizes each err by ~3e-5 on pixels in [0, 1] (their weights
    are float32 sums), and a backbone amplifies that to ~4e-4 on a feature memory's distances; here both runtimes
    sum the same few products of the same weights, within ~2e-7. The products run at the matrix-multiply rate: a
    1536 x 1024 image to 160 px in half the time the same taps took gathered row by row. The graph of an
    exported detector (`polydefect.export`) is this code traced.
    """
    height, width = images.shape[-2:]
    rows = _weights(axis_matrix(height, shape[0]), images)
    columns = _weights(axis_matrix(width, shape[1]), images).T
    # the order with fewer multiply-adds: the axis that shrinks the image more goes first
    if shape[0] * width * (height + shape[1]) <= shape[1] * height * (width + shape[0]):
        return (rows @ images) @ columns
    return rows @ (images @ columns)


def _weights(matrix: np.ndarray, images: Tensor) -> Tensor:
    """A float64 resize matrix in the images' dtype and device: the weights are rounded once, as the graph's are."""
    return torch.as_tensor(matrix, device=images.device).to(images.dtype)


@lru_cache(maxsize=64)
def axis_matrix(size: int, resized: int) -> np.ndarray:
    """The (resized, size) float64 matrix of one axis' antialiased resize: row i holds output sample i's
    `axis_taps` weights at their input indices, zero elsewhere."""
    indices, weights = axis_taps(size, resized)
    matrix = np.zeros((resized, size))
    np.add.at(matrix, (np.arange(resized)[:, None], indices), weights)  # the row index broadcasts over the taps
    return matrix


def axis_taps(size: int, resized: int) -> tuple[np.ndarray, np.ndarray]:
    """The input indices (resized, K) and float64 weights (resized, K) of torch's antialiased bilinear resize of
    one axis from `size` to `resized` samples: a triangle filter widened by the scale when shrinking, centred on
    each output sample and normalised to sum 1 (aten's `_compute_indices_min_size_weights_aa`). Indices past a
    sample's support carry weight 0."""
    scale = size / resized
    support, stretch = (scale, 1 / scale) if scale >= 1 else (1.0, 1.0)
    centres = scale * (np.arange(resized) + 0.5)
    first = np.maximum(np.trunc(centres - support + 0.5), 0).astype(np.int64)
    end = np.minimum(np.trunc(centres + support + 0.5).astype(np.int64), size)
    indices = first[:, None] + np.arange(int((end - first).max()))
    weights = np.clip(1 - np.abs((indices - centres[:, None] + 0.5) * stretch), 0, None)
    weights[indices >= end[:, None]] = 0
    weights /= weights.sum(1, keepdims=True)
    return np.minimum(indices, size - 1), weights
