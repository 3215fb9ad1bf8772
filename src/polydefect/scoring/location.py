"""Per-location calibration of anomaly maps on good validation images (`scoring.normalise: location`).

A detector's map is not equally trustworthy everywhere in the frame: the rows at an image's edge, a fixture, a
printed mark or a band of another finish score high on every good image too, and an image score that takes the
map's highest values then ranks good images by those places instead of by defects. Each map value is turned
into its standard score against the same pixel of the good validation images' maps (which no detector trained
on): (map - mean) / sd, floored at zero (below the good images' mean is normal). A validation image is scored
against the others only (leave-one-out), and so is a copy of it (a row id `<its row id>#...`, as the pasted
validation copies), so the thresholds and the validation signal fitted on those images stay honest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

NORMALISATIONS = ("none", "location", "auto")  # scoring.normalise; auto: location where the validation signal
# says it helps (`polydefect.pipeline.detect.calibrate`)
LOCATION_FILE = "location.npz"  # the calibration in a fit stage folder and in a run's model artifacts
LOCATION_MAPS_FILE = "location_maps.npz"  # beside it in the fit stage only: the validation maps, for leave-one-out
COPY_MARK = "#"  # a row id "<row id>#<what>" is a copy of the image <row id>: it is left out of its own reference
MIN_IMAGES = 3  # validation maps needed for a mean and an sd per pixel, one left out
SD_FLOOR = 0.5  # a pixel's sd is at least this share of the median sd: a pixel that happens to vary little on the
# good images must not turn a faint value into an extreme score


class LocationNormaliser:
    """Per-pixel sums of the good validation maps, and the standard scores of new maps against them."""

    def __init__(
        self,
        total: np.ndarray,
        squares: np.ndarray,
        count: int,
        maps: np.ndarray | None = None,
        row_ids: Sequence[str] = (),
    ) -> None:
        """`maps` (N, H, W) and their `row_ids`: the validation maps themselves, kept where their images (or
        copies of them) are scored again, each against the others only."""
        if count < MIN_IMAGES:
            raise ValueError(
                f"scoring.normalise=location needs at least {MIN_IMAGES} good validation images, got {count}: raise "
                "data.val_fraction or set scoring.normalise=none"
            )
        self.total, self.squares, self.count = total.astype(np.float64), squares.astype(np.float64), int(count)
        self.maps = maps
        self.index = {row_id: i for i, row_id in enumerate(row_ids)}
        self.everyone = _mean_and_sd(self.total, self.squares, self.count)  # the reference of any other image

    @classmethod
    def from_maps(cls, maps: Sequence[np.ndarray], row_ids: Sequence[str]) -> LocationNormaliser:
        """From the (H, W) maps of the good validation images, in the order of their row ids."""
        shapes = {m.shape for m in maps}
        if len(shapes) > 1:
            raise ValueError(
                f"scoring.normalise=location needs maps of one size, got {sorted(shapes)}: set preprocess.size "
                "or preprocess.short_side, or scoring.normalise=none"
            )
        stack = np.stack(maps).astype(np.float64) if maps else np.zeros((0, 1, 1))
        return cls(stack.sum(0), (stack**2).sum(0), len(stack), stack, row_ids)

    def _reference(self, row_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) of every pixel over the validation maps, this image (or the image it copies) left out."""
        own = self.index.get(row_id.split(COPY_MARK)[0])
        if own is None or self.maps is None:
            return self.everyone
        left_out = self.maps[own]
        return _mean_and_sd(self.total - left_out, self.squares - left_out**2, self.count - 1)

    def __call__(self, amap: Tensor, row_ids: Sequence[str]) -> Tensor:
        """(B, 1, H, W) maps of the images `row_ids` -> their standard scores, floored at 0."""
        if amap.shape[-2:] != self.total.shape:
            raise ValueError(
                f"scoring.normalise=location: maps of {tuple(amap.shape[-2:])} px, but the calibration was made on "
                f"maps of {self.total.shape}: score images at the size the run was trained on"
            )
        references = [self._reference(row_id) for row_id in row_ids]
        mean = torch.from_numpy(np.stack([m for m, _ in references])[:, None]).to(amap)
        sd = torch.from_numpy(np.stack([s for _, s in references])[:, None]).to(amap)
        return ((amap - mean) / sd).clamp_min(0)

    def save(self, path: Path) -> None:
        """Sums and count (npz, no pickles): what scoring new images needs (no validation map is kept)."""
        np.savez(path, total=self.total, squares=self.squares, count=np.array(self.count))

    def save_maps(self, path: Path) -> None:
        """The validation maps and their row ids (npz, exact): what scoring those images again, each against
        the others only, needs beside `save`'s sums."""
        if self.maps is None:
            raise ValueError("LocationNormaliser.save_maps: this calibration keeps no validation maps")
        np.savez(path, maps=self.maps, row_ids=np.array(list(self.index), dtype=str))

    @classmethod
    def load(cls, path: Path, maps: Path | None = None) -> LocationNormaliser:
        """The calibration `save` wrote; with the file `save_maps` wrote, its validation images are scored
        leave-one-out again."""
        with np.load(path, allow_pickle=False) as stored:
            sums = stored["total"], stored["squares"], int(stored["count"])
        if maps is None:
            return cls(*sums)
        with np.load(maps, allow_pickle=False) as stored:
            return cls(*sums, stored["maps"], [str(row_id) for row_id in stored["row_ids"]])


def calibration_of(scored: Iterable[Any]) -> LocationNormaliser | None:
    """The calibration on scored good images (each with `anomaly_map` (H, W) and `row_id`, as the scoring stream
    yields them), or None where there are fewer than `MIN_IMAGES` of them."""
    images = list(scored)
    if len(images) < MIN_IMAGES:
        return None
    return LocationNormaliser.from_maps([s.anomaly_map for s in images], [s.row_id for s in images])


def check_normalise(normalise: str, validation_enabled: bool) -> None:
    """`scoring.normalise=auto` chooses on the validation signal, so it needs one: refused before any run starts."""
    if str(normalise) == "auto" and not validation_enabled:
        raise ValueError(
            "scoring.normalise=auto chooses on the validation signal: detect.validation.enabled must be true "
            "(or set scoring.normalise=location or none)"
        )


def _mean_and_sd(total: np.ndarray, squares: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and sd from sums over `count` maps, the sd floored at `SD_FLOOR` of its median."""
    mean = total / count
    sd = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean, np.maximum(sd, SD_FLOOR * np.median(sd) + 1e-12)
