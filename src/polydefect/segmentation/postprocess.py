"""Mask post-processing (thesis listing 3.7): threshold, morphological closing, resize back, binarise."""

from __future__ import annotations

import cv2
import numpy as np


def close_mask(mask: np.ndarray, kernel_size: int = 5, iterations: int = 3) -> np.ndarray:
    """Fill small gaps and holes with a closing by a cross-shaped kernel; 0 for either argument skips it.

    Args:
        mask: (H, W) bool.
        kernel_size: side of the cross, in pixels (thesis: 5).
        iterations: dilations then erosions (thesis: 3).

    Returns:
        (H, W) bool.
    """
    if kernel_size <= 0 or iterations <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (int(kernel_size), int(kernel_size)))
    # BORDER_REPLICATE: the default constant border would erode an object touching the frame edge.
    closed = cv2.morphologyEx(
        mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel, iterations=int(iterations), borderType=cv2.BORDER_REPLICATE
    )
    return closed.astype(bool)


def postprocess(
    probability: np.ndarray,
    shape: tuple[int, int],
    threshold: float = 0.5,
    closing_kernel: int = 5,
    closing_iterations: int = 3,
) -> np.ndarray:
    """A model's object probability map -> a binary mask at the original image size.

    Closing runs at the model's resolution, as in the thesis; the closed mask is resized with linear
    interpolation and cut at half level (the thesis cut at 220/255, which shrinks objects slightly).

    Args:
        probability: (h, w) float in [0, 1], the sigmoid of the U-Net's logits.
        shape: (H, W) of the original image.
        threshold: probability above which a pixel is object (thesis: 0.5).
        closing_kernel: cross kernel side for `close_mask`.
        closing_iterations: closing iterations for `close_mask`.

    Returns:
        (H, W) bool.
    """
    mask = close_mask(probability > threshold, closing_kernel, closing_iterations)
    height, width = shape
    if mask.shape == (height, width):
        return mask
    resized = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized > 127
