"""A validation signal every data set has: held-out good images, and the same images with pasted anomalies.

Test labels must never choose a setting. The held-out good images (`data.val_fraction`, never trained on) are
scored as they are and again with one anomaly pasted inside each one's object; image AUROC of pasted against
clean, and pixel AUROC of the maps against the pasted masks, rank configurations without reading a single test
label. The shapes take turns (`detect.validation.shapes`): Perlin blobs
(`polydefect.data.synthetic_anomalies.paste_anomalies`), small spots and thin scratches
(`polydefect.evaluation.paste_shapes`), so the signal weighs point and line defects as well as patches of another
surface. Detectors trained on blob pastes (DRAEM, the feature segmenter) see that kind of anomaly here too, so
their blob figure is an optimistic one (a different seed, never their training draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from polydefect.data.sample import Sample
from polydefect.data.synthetic_anomalies import paste_anomalies
from polydefect.evaluation.metrics import evaluate
from polydefect.evaluation.paste_shapes import scratch_mask, shifted, spot_mask
from polydefect.scoring.location import COPY_MARK, LocationNormaliser, calibration_of
from polydefect.scoring.stream import ScoredImage, calibrated_scores, run_scores

if TYPE_CHECKING:
    from polydefect.tasks.base import Detector

PASTED_SUFFIX = COPY_MARK + "pasted"  # a pasted copy's row id: its source's, with this suffix
DRAWS = 16  # draws per image before giving up on a shape that overlaps the object within the area limits
SHAPES = ("blob", "spot", "scratch")


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 -> (1, C, H, W) float in [0, 1]."""
    array = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


def _as_image(tensor: torch.Tensor, like: np.ndarray) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> uint8 in the shape of `like`."""
    array = (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return array.reshape(like.shape)


def _draw(
    shape: str, image: torch.Tensor, inside: torch.Tensor, generator: torch.Generator, threshold: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One candidate paste: ((1, C, H, W) filled image, (H, W) bool mask, not yet cut to the object)."""
    if shape == "blob":
        pasted, mask = paste_anomalies(image, generator, probability=1.0, threshold=threshold)
        return pasted, mask[0, 0] > 0.5
    if shape == "spot":
        return shifted(image, generator), torch.from_numpy(spot_mask(inside.numpy(), generator))
    if shape == "scratch":
        return shifted(image, generator), torch.from_numpy(scratch_mask(inside.numpy(), generator))
    raise ValueError(f"detect.validation.shapes: unknown shape {shape!r}; choose from {list(SHAPES)}")


def paste_one(
    sample: Sample,
    generator: torch.Generator,
    threshold: Sequence[float],
    max_area: float,
    shape: str = "blob",
) -> Sample | None:
    """A copy of a good sample with one anomaly of `shape` (blob, spot or scratch) inside its object mask,
    covering at most `max_area` of the object; label 1 and the pasted pixels as its defect mask. None where no
    draw fits (an object too small)."""
    image, inside = _as_tensor(sample.image), torch.from_numpy(sample.object_mask)
    limit = max_area * int(inside.sum())
    for _ in range(DRAWS):
        pasted, mask = _draw(shape, image, inside, generator, threshold)
        mask = mask & inside
        if 0 < int(mask.sum()) <= limit:
            blended = torch.where(mask, pasted, image)
            return replace(
                sample,
                image=_as_image(blended, sample.image),
                defect_mask=mask.numpy(),
                label=1,
                row_id=sample.row_id + PASTED_SUFFIX,
                anomaly_map=None,
                score=None,
            )
    return None


def pasted_set(samples: Sequence[Sample], settings: Any) -> list[Sample]:
    """The good samples followed by their pasted copies (a fixed draw: `settings.seed`), the shapes of
    `settings.shapes` in turn."""
    generator = torch.Generator().manual_seed(int(settings.seed))
    threshold, shapes = [float(t) for t in settings.threshold], list(settings.shapes)
    if not shapes:
        raise ValueError("detect.validation.shapes is empty: name at least one of " + ", ".join(SHAPES))
    copies = [
        paste_one(s, generator, threshold, float(settings.max_area), shapes[i % len(shapes)])
        for i, s in enumerate(samples)
    ]
    return [*samples, *(c for c in copies if c is not None)]


@dataclass
class ValidationSignal:
    """A fitted detector's validation figures under each calibration (`none`: the maps as they come; `location`:
    against the good validation maps), and that per-location calibration (None where it was not asked for or
    there are too few validation images)."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    normaliser: LocationNormaliser | None = None


def synthetic_validation(detector: Detector, samples: Sequence[Sample], cfg: Any, calibrate: bool) -> ValidationSignal:
    """`synthetic_image_auroc` and `synthetic_pixel_auroc` of the detector on the good validation samples and
    their pasted copies, scored as the test images are (`run_scores`). With `calibrate`, the per-location
    calibration is built on the good samples' maps of the same pass and the figures are given with it too (each
    image and its copy against the other validation images): one pass of the detector serves both."""
    if not samples:
        return ValidationSignal()
    scored = list(run_scores(detector, pasted_set(samples, cfg.detect.validation), cfg))
    signal = ValidationSignal({"none": _figures(scored)})
    if calibrate:
        signal.normaliser = calibration_of(s for s in scored if not s.row_id.endswith(PASTED_SUFFIX))
    if signal.normaliser is not None:
        signal.figures["location"] = _figures([_recalibrated(s, signal.normaliser, cfg.scoring) for s in scored])
    return signal


def _recalibrated(image: ScoredImage, normaliser: LocationNormaliser, scoring: Any) -> ScoredImage:
    """An uncalibrated image's map and score as the calibrated scoring would have given them."""
    amap, mask = torch.from_numpy(image.anomaly_map)[None, None], torch.from_numpy(image.object_mask)[None, None]
    calibrated, score = calibrated_scores(amap, mask, [image.row_id], scoring, normaliser)
    return replace(image, anomaly_map=calibrated[0, 0].numpy(), score=float(score[0]))


def _figures(scored: Sequence[ScoredImage]) -> dict[str, float]:
    """Image AUROC of pasted against clean copies, and pixel AUROC of the maps against the pasted masks (where
    the maps have one size)."""
    records = {
        "score": torch.tensor([s.score for s in scored]),
        "label": torch.tensor([int(s.row_id.endswith(PASTED_SUFFIX)) for s in scored]),
    }
    names = ["image_auroc"]
    if len({s.anomaly_map.shape for s in scored}) == 1:  # pixel AUROC over one stack of maps
        records |= {
            key: torch.from_numpy(np.stack([getattr(s, key) for s in scored]))[:, None]
            for key in ("anomaly_map", "defect_mask", "object_mask")
        }
        names.append("pixel_auroc")
    return {f"synthetic_{name}": value for name, value in evaluate(records, names).items()}
