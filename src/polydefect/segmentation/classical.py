"""Classical background segmenters (thesis 3.6.1): Otsu threshold, k-means with k=2, marker-based watershed.

They need no training; each finds the bright class of a grey image, picks which class is the object
(`polarity`) and closes the mask as the U-Net's output is closed (listing 3.7).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from skimage.filters import sobel
from skimage.segmentation import watershed

from polydefect.data.preprocess import to_grey_uint8
from polydefect.segmentation.postprocess import close_mask

POLARITIES = ("bright", "dark", "auto")


def border_pixels(image: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of the frame's border strip, `width` px wide, each once: the holder or floor around a part."""
    sides = (image[:width], image[-width:], image[width:-width, :width], image[width:-width, -width:])
    return np.concatenate([side.ravel() for side in sides])


def orient(bright: np.ndarray, polarity: str) -> np.ndarray:
    """Choose the object class of a two-class split.

    Args:
        bright: (H, W) bool, the brighter class.
        polarity: "bright" or "dark" (the object's class), or "auto": the class that covers less of the
            image border is the object, since the holder frames the part in every view.

    Returns:
        (H, W) bool object mask.
    """
    if polarity == "bright":
        return bright
    if polarity == "dark":
        return ~bright
    return ~bright if border_pixels(bright).mean() > 0.5 else bright


class ClassicalSegmenter(ABC):
    """Grey -> blur -> bright class (`_bright_mask`, per method) -> object class -> closing.

    Args:
        polarity: see `orient`.
        blur: Gaussian blur kernel side before segmenting (odd; 0 or 1 turns it off), against sensor noise.
        closing_kernel: cross kernel side of the closing (thesis: 5).
        closing_iterations: closing iterations (thesis: 3).
    """

    def __init__(
        self, polarity: str = "auto", blur: int = 5, closing_kernel: int = 5, closing_iterations: int = 3
    ) -> None:
        if polarity not in POLARITIES:
            raise ValueError(f"segmenter.polarity: {polarity!r} is not one of {POLARITIES}")
        if blur > 1 and blur % 2 == 0:
            raise ValueError(f"segmenter.blur must be odd, got {blur}")
        self.polarity, self.blur = polarity, int(blur)
        self.closing_kernel, self.closing_iterations = int(closing_kernel), int(closing_iterations)

    @abstractmethod
    def _bright_mask(self, grey: np.ndarray) -> np.ndarray:
        """(H, W) uint8 -> (H, W) bool, True on the brighter of the two classes."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) uint8/uint16 -> (H, W) bool object mask."""
        grey = to_grey_uint8(image)
        if self.blur > 1:
            grey = cv2.GaussianBlur(grey, (self.blur, self.blur), 0)
        mask = orient(self._bright_mask(grey), self.polarity)
        return close_mask(mask, self.closing_kernel, self.closing_iterations)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`predict` for each image."""
        return [self.predict(image) for image in images]

    def score_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The hard masks as 0/1 float32: their ROC AUC is the balanced accuracy of the mask."""
        return [mask.astype(np.float32) for mask in self.predict_batch(images)]


class OtsuSegmenter(ClassicalSegmenter):
    """Global Otsu threshold: the grey level that best separates two intensity classes."""

    def _bright_mask(self, grey: np.ndarray) -> np.ndarray:
        _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return bright.astype(bool)


class KMeansSegmenter(ClassicalSegmenter):
    """k-means with k=2 on pixel intensities (thesis: OpenCV, k=2, random initial centres).

    Args:
        max_samples: centres are fitted on at most this many random pixels, then every pixel goes to the
            nearer centre: the result is the same threshold at a fraction of the time on large images.
        attempts: k-means restarts; the most compact result is kept.
        seed: seed of the pixel sample and of OpenCV's initial centres, for repeatable masks.
        **kwargs: polarity, blur, closing_kernel, closing_iterations (see `ClassicalSegmenter`).
    """

    def __init__(self, max_samples: int = 100_000, attempts: int = 3, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_samples, self.attempts, self.seed = int(max_samples), int(attempts), int(seed)

    def _bright_mask(self, grey: np.ndarray) -> np.ndarray:
        pixels = grey.reshape(-1, 1).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        if len(pixels) > self.max_samples:
            pixels = pixels[rng.choice(len(pixels), self.max_samples, replace=False)]
        if float(pixels.min()) == float(pixels.max()):
            return np.zeros(grey.shape, bool)
        cv2.setRNGSeed(self.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.1)
        _, _, centres = cv2.kmeans(pixels, 2, None, criteria, self.attempts, cv2.KMEANS_RANDOM_CENTERS)
        # two centres on a line: nearest centre == above their midpoint
        return grey > float(centres.mean())


class WatershedSegmenter(ClassicalSegmenter):
    """Marker-based watershed on the intensity gradient (thesis 3.6.1).

    Sure object and sure background markers are the two Otsu classes, eroded so they stay clear of the
    edges; the watershed then places the boundary on the strongest gradient between them.

    Args:
        marker_erosion: erosion iterations (3x3) shrinking both Otsu classes into markers.
        **kwargs: polarity, blur, closing_kernel, closing_iterations (see `ClassicalSegmenter`).
    """

    def __init__(self, marker_erosion: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker_erosion = int(marker_erosion)

    def _bright_mask(self, grey: np.ndarray) -> np.ndarray:
        _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        kernel = np.ones((3, 3), np.uint8)
        markers = np.zeros(grey.shape, np.int32)
        markers[cv2.erode(1 - bright, kernel, iterations=self.marker_erosion).astype(bool)] = 1
        markers[cv2.erode(bright, kernel, iterations=self.marker_erosion).astype(bool)] = 2
        if not (markers == 1).any() or not (markers == 2).any():
            return bright.astype(bool)
        return watershed(sobel(grey.astype(np.float32) / 255.0), markers) == 2
