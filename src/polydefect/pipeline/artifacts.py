"""The detect stage's files beside its score table: test maps and masks archived by row id, figure panels."""

from __future__ import annotations

import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from polydefect.data.sample import Sample
from polydefect.scoring.location import LocationNormaliser
from polydefect.scoring.stream import run_scores
from polydefect.tasks.base import Detector

# px: a panel is drawn about 3 inches wide; compressing four full-size 1536x1024 panels took as long as
# archiving every map of six images
PANEL_SIDE = 512


class NpzWriter:
    """An .npz archive written one named array at a time (read back by `np.load` under that name), so a stage
    never holds all of its maps or masks.

    Deflate level 1: a 1536x1024 float16 map compresses about as well as at numpy's default level 6 (31% vs
    30% of its size) in 0.6x the time. Each archive compresses on a thread of its own (zlib lets go of the GIL),
    so the scoring of the next images goes on meanwhile; at most `backlog` arrays wait for it.
    """

    def __init__(self, path: Path, backlog: int = 4) -> None:
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"npz-{path.stem}")
        self.pending: deque[Future[None]] = deque()
        self.backlog = backlog

    def add(self, name: str, array: np.ndarray) -> None:
        """Queue `array` under `name`; the caller must not change it afterwards. Raises a failed earlier write."""
        while len(self.pending) >= self.backlog:
            self.pending.popleft().result()
        self.pending.append(self.writer.submit(self._write, name, np.asanyarray(array)))

    def _write(self, name: str, array: np.ndarray) -> None:
        with self.archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, array, allow_pickle=False)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        try:
            while self.pending and error is None:  # after an error, the archive is not kept: drop what waits
                self.pending.popleft().result()
        finally:
            self.writer.shutdown(cancel_futures=True)
            self.pending.clear()
            self.archive.close()


def stacked_arrays(path: Path, row_ids: Sequence[str], dtype: type) -> np.ndarray | None:
    """The arrays saved under these row ids as one (N, 1, H, W) array, filled in place (no list beside it, so a
    test set's maps are held once); None where they differ in size."""
    with np.load(path) as archive:
        first = archive[row_ids[0]]
        stacked = np.empty((len(row_ids), 1, *first.shape), dtype)
        for index, row_id in enumerate(row_ids):
            array = first if index == 0 else archive[row_id]
            if array.shape != first.shape:
                return None
            stacked[index, 0] = array
    return stacked


def panel_rows(test: pd.DataFrame, count: int) -> list[str]:
    """Row ids of the test images drawn as panels: the first (count + 1) // 2 defective and count // 2 good."""
    defective = list(test.loc[test["label"] == 1, "row_id"])[: (count + 1) // 2]
    good = list(test.loc[test["label"] == 0, "row_id"])[: count // 2]
    chosen = set(defective + good)
    return [row_id for row_id in test["row_id"] if row_id in chosen]


def at_figure_size(array: np.ndarray) -> np.ndarray:
    """(C, H, W) -> the same picture with its longer side at most `PANEL_SIDE` (area averaging)."""
    height, width = array.shape[-2:]
    scale = PANEL_SIDE / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = [cv2.resize(np.asarray(channel, np.float32), size, interpolation=cv2.INTER_AREA) for channel in array]
    return np.stack(resized)


def save_panels(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]], path: Path) -> None:
    """(C, H, W) inputs, reconstructions (the input itself where the detector does not reconstruct), maps
    and labels of the test images `panel_rows` picked, in test order, for the thesis' figure 4.3-4.5 panels."""
    if not panels:
        return
    images, reconstructions, maps, labels = zip(*panels.values(), strict=True)
    np.savez_compressed(
        path,
        images=np.stack(images),
        reconstructions=np.stack(reconstructions),
        maps=np.stack(maps),
        labels=np.array(labels),
    )


def as_float16(array: np.ndarray) -> np.ndarray:
    """The array in float16, rounded as numpy rounds (to nearest, ties to even), by torch: 0.2 ms for a
    1536 x 1024 map where numpy's `astype` took 4.7."""
    return torch.from_numpy(np.ascontiguousarray(array)).half().numpy()


def score_test(
    detector: Detector,
    samples: Sequence[Sample],
    cfg: Any,
    test: pd.DataFrame,
    folder: Path,
    normaliser: LocationNormaliser | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score the test images, streaming their maps (float16) and masks into the stage folder's archives under
    their row ids and keeping only the panels' maps: memory stays flat in the number of test images.

    Returns:
        scores (N,) and map sums (N,), in sample order.
    """
    chosen = set(panel_rows(test, cfg.detect.samples))
    labels = dict(zip(test["row_id"], test["label"], strict=True))
    scores, sums, panels = [], [], {}
    scored = run_scores(detector, samples, cfg, normaliser, chosen)
    with (
        NpzWriter(folder / "test_maps.npz") as maps,
        NpzWriter(folder / "test_defect_masks.npz") as defects,
        NpzWriter(folder / "test_object_masks.npz") as objects,
    ):
        for image in scored:
            scores.append(image.score)
            sums.append(image.map_sum)
            maps.add(image.row_id, as_float16(image.anomaly_map))
            defects.add(image.row_id, image.defect_mask)
            objects.add(image.row_id, image.object_mask)
            if image.panel is not None:  # at figure size, copied: a view would keep its whole batch alive
                parts = (*image.panel, image.anomaly_map[None])
                panels[image.row_id] = (*(at_figure_size(part).copy() for part in parts), int(labels[image.row_id]))
    save_panels(panels, folder / "panels.npz")
    return np.array(scores, np.float32), np.array(sums, np.float32)
