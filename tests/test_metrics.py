"""Evaluation metrics agree with scikit-learn, and AUPRO with a plain reference implementation."""

import math

import numpy as np
import pytest
import torch
from skimage.measure import label as connected_regions
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_score, recall_score, roc_auc_score

from polydefect.evaluation.metrics import AUPRO, METRICS, evaluate, rank_auroc


def _image_records(seed: int = 0, count: int = 60) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(count, generator=generator) < 0.3).long()
    # raw scores far outside [0, 1], as summed squared errors are: torchmetrics must not read them as logits
    scores = 500 + 40 * torch.randn(count, generator=generator, dtype=torch.float64) + 50 * labels
    return {"score": scores, "label": labels, "prediction": scores > 540}


def test_image_metrics_agree_with_scikit_learn():
    records = _image_records()
    y, s, p = records["label"].numpy(), records["score"].numpy(), records["prediction"].numpy()
    results = evaluate(records)
    assert results["image_auroc"] == pytest.approx(roc_auc_score(y, s))
    assert results["image_auprc"] == pytest.approx(average_precision_score(y, s))
    assert results["f1"] == pytest.approx(f1_score(y, p))
    assert results["f2"] == pytest.approx(fbeta_score(y, p, beta=2))
    assert results["precision"] == pytest.approx(precision_score(y, p))
    assert results["recall"] == pytest.approx(recall_score(y, p))
    assert set(results) == {"image_auroc", "image_auprc", "f1", "f2", "precision", "recall"}


def _pixel_records(seed: int = 1) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 1, 24, 24), dtype=bool)
    masks[0, 0, 3:7, 4:12] = True  # two regions in image 0, one of them tiny
    masks[0, 0, 15:17, 18:20] = True
    masks[1, 0, 10:20, 10:14] = True
    masks[3, 0, 0:3, 20:24] = True  # image 2 has no defect
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    maps = np.round(maps, 2)  # ties across pixels, to exercise them
    objects = np.ones_like(masks)
    objects[:, :, :, :2] = False
    return {
        "anomaly_map": torch.from_numpy(maps),
        "defect_mask": torch.from_numpy(masks),
        "object_mask": torch.from_numpy(objects),
    }


def test_pixel_auroc_agrees_with_scikit_learn_inside_the_object_mask():
    records = _pixel_records()
    inside = records["object_mask"].numpy()
    expected = roc_auc_score(records["defect_mask"].numpy()[inside], records["anomaly_map"].numpy()[inside])
    assert evaluate(records, ["pixel_auroc"])["pixel_auroc"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("levels", [3, 50, None])
def test_the_rank_auroc_is_exact_with_and_without_ties(levels: int | None):
    rng = np.random.default_rng(1)
    labels = rng.random(20_000) < 0.1
    scores = (rng.random(20_000) + 0.3 * labels).astype(np.float32)
    if levels:
        scores = np.round(scores * levels) / levels  # few distinct values: most pairs tie
    assert rank_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(rank_auroc(scores, np.zeros_like(labels)))


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, valid: np.ndarray, limit: float = 0.3) -> float:
    """Threshold by threshold with explicit loops: at every distinct score, the FPR and the mean region overlap."""
    regions = []  # (image index, bool region)
    for i, (mask, keep) in enumerate(zip(masks, valid, strict=True)):
        labelled = connected_regions(mask & keep, connectivity=2)
        regions += [(i, labelled == r) for r in range(1, labelled.max() + 1)]
    negatives = ~masks & valid
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps[valid].tolist()), reverse=True):
        predicted = (maps >= threshold) & valid
        fpr = (predicted & negatives).sum() / negatives.sum()
        overlaps = [(predicted[i] & region).sum() / region.sum() for i, region in regions]
        points.append((fpr, float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= limit:
            break
        if x1 > limit:  # cut the last segment at the limit, interpolating linearly
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_agrees_with_a_threshold_by_threshold_reference(limit: float):
    """At any FPR limit: the curve is cut to the pixels at or above the first threshold past it before sorting."""
    records = _pixel_records()
    maps, masks = records["anomaly_map"].numpy()[:, 0], records["defect_mask"].numpy()[:, 0]
    everywhere = np.ones_like(masks)
    expected = _reference_aupro(maps, masks, everywhere, limit)
    assert 0.1 < expected < 1
    metric = AUPRO(fpr_limit=limit)
    metric.update(records["anomaly_map"][:2], records["defect_mask"][:2])  # streaming: two updates
    metric.update(records["anomaly_map"][2:], records["defect_mask"][2:])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-12)
    inside = records["object_mask"].numpy()[:, 0]
    if limit == 0.3:  # evaluate's AUPRO is at the default limit
        expected_inside = _reference_aupro(maps, masks, inside)
        assert evaluate(records, ["aupro"])["aupro"] == pytest.approx(expected_inside, abs=1e-12)


def test_pixel_metrics_of_float16_maps_equal_those_of_their_float32_values():
    """Evaluation reads the archived float16 maps as they are (half the memory): the ranks, hence the metrics,
    are those of the same values in float32."""
    records = _pixel_records(seed=3)
    half = records | {"anomaly_map": records["anomaly_map"].half()}
    single = records | {"anomaly_map": half["anomaly_map"].float()}
    assert evaluate(half, ["pixel_auroc", "aupro"]) == evaluate(single, ["pixel_auroc", "aupro"])


def test_aupro_of_a_perfect_map_is_one_and_of_a_map_without_regions_is_nan():
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, 4:8, 4:8] = True
    metric = AUPRO()
    metric.update(masks.double(), masks)
    assert metric.compute().item() == pytest.approx(1.0)
    empty = AUPRO()
    empty.update(torch.rand(1, 1, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    assert math.isnan(empty.compute().item())


def test_ranking_metrics_are_nan_when_labels_hold_one_class():
    records = {"score": torch.rand(5), "label": torch.zeros(5, dtype=torch.long)}
    assert all(math.isnan(v) for v in evaluate(records).values())


def test_metrics_whose_fields_are_missing_are_skipped_and_unknown_names_rejected():
    assert set(evaluate({"score": torch.rand(4), "label": torch.tensor([0, 1, 0, 1])})) == {
        "image_auroc",
        "image_auprc",
    }
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate({}, ["iou"])
    assert {spec.name for spec in METRICS} >= {"image_auroc", "image_auprc", "f1", "f2", "pixel_auroc", "aupro"}
