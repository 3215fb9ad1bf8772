"""A part finder for folders without object masks: OpenCV's GrabCut, seeded by the frame's border.

Otsu and k-means split grey levels, so on a dark floor they keep a part's lit faces and can drop its shaded ones
(on the posed_bricks renders their masks cover 0.74 of the part at the median). GrabCut models the border strip
(sure background) and the rest of the frame with colour mixtures and cuts on the image's edges, so a shaded face
that differs from the floor stays with the part; a cast shadow may join it (1.25 of the part at the median, IoU
0.70 against Otsu's 0.67): for a crop around the part, too much is the safer error. It runs at a reduced size
(it is an iterative graph cut), keeps the largest piece, fills its holes and closes it as the other segmenters
do. Its masks feed the object-centric input (`preprocess.crop_margin`, `preprocess.mask_background`) of
MVTec-layout folders.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from polydefect.data.preprocess import to_grey_uint8, to_rgb_uint8
from polydefect.segmentation.classical import border_pixels
from polydefect.segmentation.postprocess import close_mask


def border_ratio(image: np.ndarray, border: float) -> float:
    """Grey-level spread of the frame's border strip (`border` of the long side wide) over the whole frame's: low
    where a part lies on a plain floor (the posed renders: 0.26 at the median), about 1 or more where a surface
    fills the frame (magnetic tiles 1.31, KolektorSDD 1.12)."""
    grey = to_grey_uint8(image).astype(np.float32)
    edges = border_pixels(grey, max(1, round(border * max(grey.shape))))
    return float(edges.std() / max(float(grey.std()), 1e-6))


def largest_piece(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> its largest 8-connected component, holes filled: one part per image."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return np.zeros(mask.shape, bool)
    piece = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(1 - piece, 1, constant_values=1)  # flood the background from a frame around the image
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside[1:-1, 1:-1] != 2) | piece.astype(bool)


class GrabCutSegmenter:
    """Border strip = sure background, the rest = probable object; GrabCut, largest piece, holes filled, closed.

    Args:
        side: long side of the image GrabCut works on, px (the mask is scaled back to the image).
        border: width of the sure-background strip, as a share of the long side.
        iterations: GrabCut iterations.
        closing_kernel, closing_iterations: the closing of the other segmenters (thesis listing 3.7).
        seed: OpenCV's random seed (GrabCut initialises its colour mixtures with k-means), for repeatable masks.
        plain_border: a folder's frames show a part on a plain floor where the median `border_ratio` of its
            images is below this (`finds_parts_in`); otherwise a surface fills them and they are left whole.
    """

    def __init__(
        self,
        side: int = 160,
        border: float = 0.03,
        iterations: int = 5,
        closing_kernel: int = 5,
        closing_iterations: int = 3,
        seed: int = 0,
        plain_border: float = 0.6,
    ) -> None:
        if side < 16:
            raise ValueError(f"segmenter.side must be at least 16 px, got {side}")
        if not 0 < border < 0.5:
            raise ValueError(f"segmenter.border is a share of the long side in (0, 0.5), got {border}")
        self.side, self.border, self.iterations, self.seed = int(side), float(border), int(iterations), int(seed)
        self.closing_kernel, self.closing_iterations = int(closing_kernel), int(closing_iterations)
        self.plain_border = float(plain_border)

    def finds_parts_in(self, images: Sequence[np.ndarray]) -> bool:
        """Whether these frames (a folder's, or a sample of them) show a part on a plain floor, so that finding
        it means something: decided for the folder as a whole, never image by image, so a surface is never cut
        up in the few frames whose border happens to be plain."""
        ratios = [border_ratio(image, self.border) for image in images]
        return bool(ratios) and float(np.median(ratios)) < self.plain_border

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) uint8/uint16 -> (H, W) bool object mask; empty where the frame is flat."""
        height, width = image.shape[:2]
        scale = min(1.0, self.side / max(height, width))
        reduced = (max(4, round(width * scale)), max(4, round(height * scale)))
        small = cv2.resize(to_rgb_uint8(image), reduced, interpolation=cv2.INTER_AREA)
        labels = np.zeros(small.shape[:2], np.uint8)
        strip = max(1, round(self.border * max(small.shape[:2])))
        rect = (strip, strip, small.shape[1] - 2 * strip, small.shape[0] - 2 * strip)
        cv2.setRNGSeed(self.seed)
        try:
            cv2.grabCut(small, labels, rect, None, None, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # a flat frame gives the colour mixtures nothing to fit
            return np.zeros((height, width), bool)
        found = largest_piece((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
        mask = cv2.resize(found.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        return close_mask(mask, self.closing_kernel, self.closing_iterations)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`predict` for each image."""
        return [self.predict(image) for image in images]

    def score_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The hard masks as 0/1 float32 (as the classical segmenters give them)."""
        return [mask.astype(np.float32) for mask in self.predict_batch(images)]
