"""Picture grid of the synthetic profiles: image, object mask and defect mask side by side, for the docs.

python -m polydefect.synth.grid --out docs/images/synthetic_grid.png [--size small] [--profiles scanner,clean]
    [--views p01_c0,p04_c1,p08_c0] [Hydra override ...]

Rows show batches 1 and 2 of each profile (batch 1 is the defective one by default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from hydra import compose, initialize_config_dir

from polydefect.data.io import read_image, read_mask, write_image_atomic
from polydefect.data.layout import discover_thesis
from polydefect.synth.runner import ensure_rendered

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def overlay(image: np.ndarray, object_mask: np.ndarray, defect_mask: np.ndarray | None) -> np.ndarray:
    """(H, W) grey image -> (H, W, 3) BGR with the object outline in blue and defects filled in red."""
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(object_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(colour, contours, -1, (255, 128, 0), 1)
    if defect_mask is not None:
        colour[defect_mask] = (0, 0, 255)
    return colour


def profile_rows(root: Path, views: list[str], batches: list[int]) -> np.ndarray:
    """Rows of [image | overlay] for each batch, one column pair per view; (rows*H, views*2*W, 3) BGR."""
    table = discover_thesis(root).set_index(["batch", "view"])
    rows = []
    for batch in batches:
        cells = []
        for view in views:
            row = table.loc[(batch, view)]
            image = read_image(row.image_path)
            object_mask = read_mask(row.object_mask_path, image.shape)
            defect = read_mask(row.defect_mask_path, image.shape) if isinstance(row.defect_mask_path, str) else None
            cells += [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), overlay(image, object_mask, defect)]
        rows.append(np.hstack(cells))
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/synthetic_grid.png"))
    parser.add_argument("--size", default="small", help="synth.size of both profiles")
    parser.add_argument("--views", default="p01_c0,p04_c1,p08_c0", help="comma-separated view stems")
    parser.add_argument("--profiles", default="scanner,clean", help="comma-separated synth profiles")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both profiles, e.g. synth.seed=1")
    args = parser.parse_args(argv)
    blocks = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for profile in args.profiles.split(","):
            cfg = compose("render", overrides=[f"synth={profile}", f"synth.size={args.size}", *args.overrides])
            root = ensure_rendered(cfg.synth)
            batches = [batch for batch in (1, 2) if batch <= cfg.synth.batches]
            blocks.append(profile_rows(root, args.views.split(","), batches))
    width = max(block.shape[1] for block in blocks)
    grid = np.vstack([np.pad(b, ((0, 4), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks])
    write_image_atomic(args.out, grid)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
