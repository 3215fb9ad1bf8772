"""From a detector's maps to image scores, one batch of images at a time (thesis 4.3, eq. 4.1 and 1.1).

Everything between the detector's raw map and the numbers the evaluation reads happens here: the square
root of `absolute` errors, smoothing, masking to the object, the image score and the SPC total.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from polydefect.data.datasets import ImageDataset
from polydefect.data.sample import Sample
from polydefect.scoring.location import LocationNormaliser
from polydefect.scoring.maps import smooth
from polydefect.scoring.scores import PEAK_BASELINE, image_score

if TYPE_CHECKING:  # scoring imports no task at run time: any `Detector` will do
    from polydefect.tasks.base import Detector

# Lightning's mixed-precision settings (and their short aliases) and the autocast type each trains under.
SCALE_VALUES_PER_IMAGE = 4096  # map values per image `score_stream` keeps to place the overlays' colour scale
MIXED_PRECISION = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


@dataclass
class ScoredImage:
    """One image's scoring output."""

    row_id: str
    score: float
    map_sum: float  # the "C" of the SPC index, eq. 1.1
    anomaly_map: np.ndarray  # (H, W) float32, zero outside the object mask
    object_mask: np.ndarray  # (H, W) bool
    defect_mask: np.ndarray  # (H, W) bool
    panel: tuple[np.ndarray, np.ndarray] | None = None  # (C, H, W) input and its reconstruction, where asked for


def scoring_autocast(precision: str | int, device: torch.device) -> AbstractContextManager:
    """Autocast for scoring on `device` in the trainer's mixed precision (`trainer.precision`): a model trained
    under bf16 or fp16 autocast scores under it too, at the speed it trained; any other setting scores in the
    model's own precision."""
    dtype = MIXED_PRECISION.get(str(precision))
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def calibrated_scores(
    amap: Tensor, mask: Tensor, row_ids: Sequence[str], scoring: Any, normaliser: LocationNormaliser | None = None
) -> tuple[Tensor, Tensor]:
    """(B, 1, H, W) smoothed maps and bool object masks -> (the maps calibrated (`normaliser`, where the run has
    one) and zeroed outside the object, (B,) image scores): the last step of scoring, also applied to maps kept
    from an uncalibrated pass (`polydefect.evaluation.pasted_validation`)."""
    amap = (amap if normaliser is None else normaliser(amap, row_ids)) * mask
    return amap, image_score(amap, mask, scoring.reduction, scoring.k, scoring.get("peak_baseline", PEAK_BASELINE))


@torch.inference_mode()
def iter_scores(
    detector: Detector,
    samples: Sequence[Sample],
    scoring: Any,
    sigma: float,
    batch_size: int,
    panels: Container[str] = (),
    precision: str | int = "32-true",
    normaliser: LocationNormaliser | None = None,
    num_workers: int = 0,
) -> Iterator[ScoredImage]:
    """Anomaly maps inside the object mask and image scores, one image at a time, in sample order; the images
    whose row id is in `panels` also keep their input and reconstruction (for figure panels). The detector runs
    on its own device, under autocast where `precision` is a mixed one (`trainer.precision`).

    Args:
        scoring: the `scoring` config node (error, reduction, k).
        sigma: `detect.map_sigma`, Gaussian smoothing of the maps in px.
        normaliser: the run's per-location calibration (`scoring.normalise=location`): the maps kept and scored
            are standard scores against the good validation maps; the map sums (SPC) stay the raw maps'.
        num_workers: loader processes reading and preprocessing the next images while the detector scores
            (`data.num_workers`); 0 reads them in this process.
    """
    detector.eval()
    loader = DataLoader(ImageDataset(samples), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        mask = batch["object_mask"] > 0.5  # (B, 1, H, W)
        with scoring_autocast(precision, detector.device):
            amap, made = detector.map_and_reconstruction(batch["image"], batch["view"])
        amap = amap.float().cpu()
        if scoring.error == "absolute":  # eq. 4.1 as written: sqrt of the squared error; keeps any map's ranking
            amap = amap.clamp_min(0).sqrt()
        amap = smooth(amap, sigma)
        sums = (amap * mask).sum(dim=(1, 2, 3))
        amap, scores = calibrated_scores(amap, mask, batch["row_id"], scoring, normaliser)
        for i, row_id in enumerate(batch["row_id"]):
            panel = (batch["image"][i].numpy(), made[i].float().cpu().numpy()) if row_id in panels else None
            yield ScoredImage(
                row_id,
                float(scores[i]),
                float(sums[i]),
                amap[i, 0].numpy(),
                mask[i, 0].numpy(),
                batch["defect_mask"][i, 0].numpy() > 0.5,
                panel,
            )


def run_scores(
    detector: Detector,
    samples: Sequence[Sample],
    cfg: Any,
    normaliser: LocationNormaliser | None = None,
    panels: Container[str] = (),
) -> Iterator[ScoredImage]:
    """`iter_scores` with the run config's scoring, smoothing, batch size and precision."""
    return iter_scores(
        detector,
        samples,
        cfg.scoring,
        cfg.detect.map_sigma,
        cfg.data.batch_size,
        panels,
        cfg.trainer.precision,
        normaliser,
        cfg.data.num_workers,
    )


def score_only(
    detector: Detector, samples: Sequence[Sample], cfg: Any, normaliser: LocationNormaliser | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and map sums (N,) of the samples, dropping each map once reduced."""
    scored = run_scores(detector, samples, cfg, normaliser)
    values = np.array([(s.score, s.map_sum) for s in scored], np.float32).reshape(-1, 2)
    return values[:, 0], values[:, 1]


def check_finite_scores(table: pd.DataFrame, model: str) -> None:
    """Stop before a diverged detector's scores are cached: NaN or infinite scores would otherwise surface later
    as unrelated threshold or SPC errors."""
    bad = ~np.isfinite(table["score"].to_numpy(np.float64))
    if bad.any():
        raise FloatingPointError(
            f"model ({model}): {int(bad.sum())} of {len(table)} image scores are NaN or infinite; its training "
            "diverged (see the detect stage's train/loss in MLflow): try a lower model.optimizer.lr, or "
            "trainer.precision=32-true if it trained in mixed precision"
        )


def score_stream(
    detector: Detector,
    samples: Sequence[Sample],
    cfg: Any,
    keep: int,
    normaliser: LocationNormaliser | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]], float]:
    """Score every sample as the run's detect stage does, holding only the `keep` highest-scored maps and a
    thinned sample of each map's values, so memory stays flat however many images a batch off the line has.

    Returns:
        scores (N,), map sums (N,), {index: (map, object mask)} of the `keep` highest scores, and the 99.5th
        percentile of the maps' positive values (the overlays' shared colour scale).
    """
    scores, sums, values = [], [], []
    highest: list[tuple[float, int, np.ndarray, np.ndarray]] = []  # a min-heap on (score, -index)
    scored = run_scores(detector, samples, cfg, normaliser)
    for index, image in enumerate(scored):
        scores.append(image.score)
        sums.append(image.map_sum)
        positive = image.anomaly_map[image.anomaly_map > 0]
        values.append(positive[:: max(1, positive.size // SCALE_VALUES_PER_IMAGE)].copy())  # not a view of all
        rank = (image.score, -index)
        if len(highest) < keep or (keep and rank > highest[0][:2]):
            # copies: the arrays are views of their whole scoring batch, which a kept view would keep alive
            entry = (*rank, image.anomaly_map.copy(), image.object_mask.copy())
            (heapq.heappush if len(highest) < keep else heapq.heapreplace)(highest, entry)
    vmax = float(np.percentile(np.concatenate(values) if any(v.size for v in values) else np.ones(1), 99.5))
    top = {-negative: (amap, mask) for _, negative, amap, mask in sorted(highest, reverse=True)}
    return np.array(scores, np.float32), np.array(sums, np.float32), top, vmax
