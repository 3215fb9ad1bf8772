"""Anomaly maps, image scores and thresholds, checked against hand-computed values."""

import json

import pytest
import torch

from polydefect.scoring.maps import error_map, smooth
from polydefect.scoring.scores import image_score, local_peaks
from polydefect.scoring.thresholds import Threshold, fit_f1_threshold, fit_threshold, fit_view_stats


def test_squared_and_absolute_errors_sum_over_channels():
    x = torch.tensor([[[[0.5]], [[0.2]]]])  # (1, 2, 1, 1)
    x_hat = torch.tensor([[[[0.1]], [[0.5]]]])
    assert error_map(x, x_hat).item() == pytest.approx(0.4**2 + 0.3**2)
    assert error_map(x, x_hat, "absolute").item() == pytest.approx(0.4 + 0.3)
    with pytest.raises(ValueError, match=r"scoring\.error"):
        error_map(x, x_hat, "cubic")


def test_smoothing_keeps_a_constant_map_and_spreads_a_spike():
    assert smooth(torch.full((1, 1, 9, 9), 2.0), 1.5).allclose(torch.full((1, 1, 9, 9), 2.0))
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = smooth(spike, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 7, 7] < 1.0 and blurred[0, 0, 7, 8] > 0


# one 2x3 map; the mask keeps the values 1, 5, 2, 8
MAP = torch.tensor([[[[1.0, 5.0, 9.0], [2.0, 8.0, 0.0]]]])
MASK = torch.tensor([[[[True, True, False], [True, True, False]]]])


@pytest.mark.parametrize(
    ("reduction", "k", "expected"),
    [("mean", 0.0, 4.0), ("max", 0.0, 8.0), ("sum", 0.0, 16.0), ("topk_mean", 0.5, 6.5), ("topk_mean", 0.01, 8.0)],
)
def test_image_scores_reduce_only_the_masked_pixels(reduction, k, expected):
    assert image_score(MAP, MASK, reduction, k).item() == pytest.approx(expected)


def test_image_scores_without_a_mask_use_the_whole_frame():
    assert image_score(MAP, None, "mean").item() == pytest.approx(25 / 6)


def test_an_empty_object_mask_or_an_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="empty object mask"):
        image_score(MAP, torch.zeros_like(MASK))
    with pytest.raises(ValueError, match=r"scoring\.reduction"):
        image_score(MAP, MASK, "median")


def bump(centre: tuple[int, int], width: float, height: float) -> torch.Tensor:
    """(1, 1, 64, 64) Gaussian bump: anomaly maps are smooth (the detectors blur them)."""
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return height * torch.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * width**2))[None, None]


def part_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Two maps of a part on a 64 px frame: one with a broad rise over a face (a pose the memory has not seen),
    one with a small peak (a defect) on a level face; and the part's mask, with background that stays at 0."""
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    mask[..., 8:56, 8:56] = True
    face = 1 + bump((24, 32), 10.0, 2.0)
    peak = 1 + bump((40, 36), 1.5, 1.5)
    return torch.cat([face, peak]) * mask, torch.cat([mask, mask])


def test_peak_scores_rank_a_small_peak_above_a_raised_face_that_topk_ranks_first():
    maps, mask = part_maps()
    top = image_score(maps, mask, "topk_mean", 0.01)
    peaks = image_score(maps, mask, "peak_topk_mean", 0.01, baseline=0.05)
    assert top[0] > top[1]  # the raised face wins the plain top-k mean
    assert peaks[1] > 2 * peaks[0]  # above the local level, the defect wins
    # the level is the part's own: the background's zeros do not raise the part's edge
    level = local_peaks(maps[1:], mask[1:], 0.05)
    assert level[0, 0, 8:56, 8].abs().max() < 0.05


def test_a_constant_map_has_no_peaks_and_a_bad_width_is_refused_naming_the_key():
    assert local_peaks(torch.full((1, 1, 32, 32), 4.0), None, 0.1).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r"scoring\.peak_baseline"):
        local_peaks(torch.ones(1, 1, 32, 32), None, 0.5)


TRAIN = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0]
VIEWS = ["a", "a", "a", "a", "b", "b", "b"]


def test_a_global_threshold_is_the_max_or_a_quantile_of_training_scores():
    assert fit_threshold(TRAIN).values == {"*": 30.0}
    # linear interpolation: position 0.5 * 6 = 3 -> the fourth sorted score
    assert fit_threshold(TRAIN, method="quantile", quantile=0.5).values == {"*": 4.0}
    assert fit_threshold(TRAIN, method="quantile", quantile=0.9).values["*"] == pytest.approx(20 + 0.4 * 10)


def test_per_view_thresholds_come_from_that_views_training_scores():
    assert fit_threshold(TRAIN, VIEWS, by="view", method="median").values == {"a": 2.5, "b": 20.0}
    threshold = fit_threshold(TRAIN, VIEWS, by="view", method="max")
    assert threshold.values == {"a": 4.0, "b": 30.0}
    # a score equal to the threshold is not anomalous; above it is
    assert threshold.predict([4.0, 4.5, 25.0, 31.0], ["a", "a", "b", "b"]).tolist() == [False, True, False, True]


def test_a_per_view_threshold_refuses_views_it_never_saw():
    threshold = fit_threshold(TRAIN, VIEWS, by="view")
    with pytest.raises(KeyError, match="'c'"):
        threshold.predict([1.0], ["c"])
    with pytest.raises(ValueError, match="view of every image"):
        threshold.predict([1.0])
    with pytest.raises(ValueError, match=r"fit_threshold\(by=.camera.\): unknown choice"):
        fit_threshold(TRAIN, VIEWS, by="camera")


def test_fitted_thresholds_survive_a_json_round_trip():
    threshold = fit_threshold(TRAIN, VIEWS, by="view", method="quantile", quantile=0.75)
    assert Threshold.from_dict(json.loads(json.dumps(threshold.to_dict()))) == threshold
    assert threshold.method == "quantile:0.75"


def test_view_normalisation_uses_each_views_training_mean_and_population_std():
    stats = fit_view_stats(TRAIN, VIEWS)
    # view a: mean 2.5, population std sqrt(1.25); view b: mean 20, std sqrt(200 / 3)
    assert stats.mean == pytest.approx({"a": 2.5, "b": 20.0})
    expected = [(5.0 - 2.5) / 1.25**0.5, (10.0 - 20.0) / (200 / 3) ** 0.5]
    assert stats.normalise([5.0, 10.0], ["a", "b"]).tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="view 'c'"):
        fit_view_stats([1.0, 1.0], ["c", "c"])


def test_the_best_f1_threshold_falls_between_the_scores_of_the_best_cut():
    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
    labels = [0, 0, 1, 1, 1, 0]
    # F1 = 2 TP / (flagged + 3) when flagging the top 1..6: 2/4, 4/5, 4/6, 6/7, 6/8, 6/9: the top 4 win
    threshold = fit_f1_threshold(scores, labels)
    assert threshold.kind == "val_f1"
    assert threshold.values["*"] == pytest.approx((0.35 + 0.2) / 2)


def test_the_best_f1_threshold_never_splits_tied_scores():
    threshold = fit_f1_threshold([0.5, 0.5, 0.1], [1, 0, 0])
    assert threshold.values["*"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no defective images"):
        fit_f1_threshold([0.5, 0.1], [0, 0])
