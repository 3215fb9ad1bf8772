"""Pixel segmentation metrics against scikit-learn, per view and overall; ROC curves, plots and overlays."""

import cv2
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score, roc_auc_score, roc_curve

from polydefect.evaluation import segmentation_metrics as sm

pytestmark = pytest.mark.usefixtures("one_thread")


def random_set(seed: int, count: int = 6, levels: int = 200):
    """Masks, and scores at the centres between the metric's `levels` thresholds, where the binned AUC is exact."""
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(5, 30)), int(rng.integers(5, 30))) for _ in range(count)]
    truths = [rng.random(shape) < 0.4 for shape in shapes]
    bins = [np.minimum((0.3 * t + 0.7 * rng.random(t.shape)) * (levels - 1), levels - 2).astype(int) for t in truths]
    scores = [((b + 0.5) / (levels - 1)).astype(np.float32) for b in bins]
    preds = [s > 0.5 for s in scores]
    return preds, truths, scores


def flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


def sklearn_figures(preds, truths, scores):
    y, p, s = flat(truths), flat(preds), flat(scores)
    return {
        "precision": precision_score(y, p),
        "recall": recall_score(y, p),
        "f1": f1_score(y, p),
        "iou": jaccard_score(y, p),
        "auc": roc_auc_score(y, s),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overall_metrics_agree_with_scikit_learn_on_random_masks(seed):
    preds, truths, scores = random_set(seed)
    result = sm.segmentation_metrics(preds, truths, scores)
    expected = sklearn_figures(preds, truths, scores)
    assert result["overall"] == pytest.approx(expected, abs=1e-5)
    assert result["per_view"] == {}


def test_per_view_metrics_agree_with_scikit_learn_on_each_views_images():
    preds, truths, scores = random_set(3, count=7)
    views = ["p01_c1", "p02_c1", "p01_c1", "p03_c2", "p02_c1", "p01_c1", "p03_c2"]
    result = sm.segmentation_metrics(preds, truths, scores, views)
    assert sorted(result["per_view"]) == ["p01_c1", "p02_c1", "p03_c2"]
    for view, figures in result["per_view"].items():
        idx = [i for i, v in enumerate(views) if v == view]
        expected = sklearn_figures([preds[i] for i in idx], [truths[i] for i in idx], [scores[i] for i in idx])
        assert figures == pytest.approx(expected, abs=1e-5)


def test_without_scores_there_is_no_auc():
    preds, truths, _ = random_set(4)
    assert set(sm.segmentation_metrics(preds, truths)["overall"]) == {"precision", "recall", "f1", "iou"}


def test_hard_masks_as_scores_give_the_exact_auc_with_any_number_of_thresholds():
    preds, truths, _ = random_set(5)
    scores = [p.astype(np.float32) for p in preds]
    expected = roc_auc_score(flat(truths), flat(scores))
    for thresholds in (2, 7, 200):
        result = sm.segmentation_metrics(preds, truths, scores, roc_thresholds=thresholds)
        assert result["overall"]["auc"] == pytest.approx(expected, abs=1e-6)


def test_roc_curve_passes_through_the_points_scikit_learn_finds():
    _, truths, scores = random_set(6, levels=11)
    fpr, tpr, cuts = sm.roc_curve(scores, truths, thresholds=11)
    ref_fpr, ref_tpr, _ = roc_curve(flat(truths), flat(scores))
    assert fpr.shape == tpr.shape == cuts.shape
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    for x, y in zip(ref_fpr, ref_tpr, strict=True):
        assert np.isclose(fpr, x, atol=1e-6)[np.isclose(tpr, y, atol=1e-6)].any()


def test_mismatched_shapes_and_counts_name_the_image():
    preds, truths, _ = random_set(7, count=2)
    with pytest.raises(ValueError, match="image 1"):
        sm.segmentation_metrics([preds[0], preds[0][:2]], truths)
    with pytest.raises(ValueError, match="must match"):
        sm.segmentation_metrics(preds[:1], truths)


def test_roc_plot_is_written_as_a_png(tmp_path):
    _, truths, scores = random_set(8)
    curve = sm.roc_curve(scores, truths)[:2]
    path = tmp_path / "figures" / "roc.png"
    sm.save_roc_plot({"U-Net real": curve, "Otsu": curve}, path, title="Figure 4.1")
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 100


def test_overlay_shows_the_image_the_truth_and_the_errors_in_colour(tmp_path):
    image = np.full((4, 4), 100, np.uint8)
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True
    picture = sm.overlay(image, truth, pred)
    assert picture.shape == (4, 12, 3)
    assert (picture[:, :4] == 100).all()
    assert (picture[:2, 4:8] == 255).all() and (picture[2:, 4:8] == 0).all()
    errors = picture[:, 8:].astype(int)
    assert errors[0, 0].tolist() == [177, 50, 50]  # false negative: blue
    assert errors[1, 0].tolist() == [50, 150, 50]  # true positive: green
    assert errors[2, 0].tolist() == [50, 50, 177]  # false positive: red
    assert errors[3, 0].tolist() == [100, 100, 100]
    sm.save_overlay(tmp_path / "overlay.png", image, truth, pred)
    assert np.array_equal(cv2.imread(str(tmp_path / "overlay.png")), picture)
