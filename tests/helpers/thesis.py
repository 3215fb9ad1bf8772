"""A small generated data set in the thesis layout (batch_XX/images|object_masks|defect_masks/pNN_cK.png)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from helpers.surfaces import textured_surfaces

SCENE_MARGIN = 3  # px: the most a fixed view's scene is shifted between batches (the parts' placement jitter)


def write_thesis_fixture(
    root: Path,
    batches: int = 4,
    positions: int = 2,
    size: tuple[int, int] = (96, 64),
    defective: tuple[int, ...] = (1,),
    fixed_scenes: bool = False,
    seed: int = 0,
) -> Path:
    """A small thesis-layout data set: a bright textured ellipse (the part) on a dark holder, per batch and view.

    Defective batches carry a dark scratch on the part, with its defect mask. With `fixed_scenes` every view
    shows one textured scene of its own, shifted by up to `SCENE_MARGIN` px per batch, as fixed scanner views
    with hand-placed parts do, and defective batches carry three dark spots instead of the scratch. Sets written
    with different `seed`s share their layout but none of their pixels (the same seed repeats them exactly).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    m = SCENE_MARGIN
    if fixed_scenes:
        scenes = textured_surfaces(positions * 2, size=(height + 2 * m, width + 2 * m))[:, 0].numpy() * 255
    for batch in range(1, batches + 1):
        for position in range(1, positions + 1):
            for camera in (0, 1):
                view = f"p{position:02d}_c{camera}"
                centre = (width // 2 + 4 * camera + int(rng.integers(-2, 3)), height // 2 + int(rng.integers(-2, 3)))
                mask = np.zeros((height, width), np.uint8)
                cv2.ellipse(mask, centre, (width // 4 + position, height // 4), 0, 0, 360, 255, -1)
                image = rng.normal(40, 5, (height, width))
                if fixed_scenes:
                    dx, dy = centre[0] - width // 2 - 4 * camera, centre[1] - height // 2  # the part's shift
                    scene = scenes[2 * (position - 1) + camera, m - dy : m - dy + height, m - dx : m - dx + width]
                    image[mask > 0] = scene[mask > 0] + rng.normal(0, 2, int((mask > 0).sum()))
                else:
                    image[mask > 0] = rng.normal(170, 8, int((mask > 0).sum()))
                folder = root / f"batch_{batch:02d}"
                for sub in ("images", "object_masks"):
                    (folder / sub).mkdir(parents=True, exist_ok=True)
                if batch in defective:
                    defect = np.zeros_like(mask)
                    if fixed_scenes:
                        for _ in range(3):
                            spot = (centre[0] + int(rng.integers(-8, 9)), centre[1] + int(rng.integers(-5, 6)))
                            cv2.circle(defect, spot, 2, 255, -1)
                    else:
                        cv2.line(defect, (centre[0] - 8, centre[1]), (centre[0] + 8, centre[1] + 3), 255, 2)
                    defect &= mask
                    image[defect > 0] = 20 if fixed_scenes else 60
                    (folder / "defect_masks").mkdir(exist_ok=True)
                    cv2.imwrite(str(folder / "defect_masks" / f"{view}.png"), defect)
                cv2.imwrite(str(folder / "images" / f"{view}.png"), np.clip(image, 0, 255).astype(np.uint8))
                cv2.imwrite(str(folder / "object_masks" / f"{view}.png"), mask)
    return root
