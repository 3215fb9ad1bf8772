"""Which images a run's thresholds are fitted on, and that refitting them (or loading data with more workers)
never retrains a stage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.tiny import compose_app, compose_tiny
from omegaconf import DictConfig, open_dict

from polydefect.data.splits import DataSplits, make_splits
from polydefect.pipeline.detect import detect_key, scored_roles
from polydefect.pipeline.evaluate import fit_thresholds
from polydefect.pipeline.segment import segment_key


def scores_table() -> pd.DataFrame:
    """Good training scores up to 1.0, good validation scores up to 3.0, and a test set."""
    rows = [("train", 0, s) for s in (0.2, 0.5, 1.0)] + [("val", 0, s) for s in (0.4, 3.0)]
    rows += [("test", 0, 0.5), ("test", 1, 2.0), ("test", 1, 4.0)]
    table = pd.DataFrame(rows, columns=["role", "label", "score"])
    table["view"] = "v0"
    return table


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    return compose_tiny(tmp_path_factory.mktemp("thresholds"))


@pytest.fixture(scope="module")
def splits(cfg: DictConfig) -> DataSplits:
    return make_splits(cfg.data, {"real": Path(cfg.data.root), "synthetic": Path(cfg.data.synthetic_root)}, cfg.seed)


def with_threshold(cfg: DictConfig, **values: object) -> DictConfig:
    changed = cfg.copy()
    with open_dict(changed):
        changed.scoring.threshold.update(values)
    return changed


def test_thresholds_come_from_the_good_training_images_by_default(cfg: DictConfig) -> None:
    fitted = fit_thresholds(cfg, scores_table())
    assert fitted["global"].values["*"] == pytest.approx(1.0)
    assert set(fitted) == {"global", "per_view"}  # validation has no defects: no best-F1 threshold


def test_fit_on_val_uses_the_held_out_good_images(cfg: DictConfig) -> None:
    fitted = fit_thresholds(with_threshold(cfg, fit_on="val"), scores_table())
    assert fitted["global"].values["*"] == pytest.approx(3.0)


def test_fit_on_a_split_without_good_images_names_the_key(cfg: DictConfig) -> None:
    no_val = scores_table().query("role != 'val'")
    with pytest.raises(ValueError, match=r"scoring\.threshold\.fit_on=val"):
        fit_thresholds(with_threshold(cfg, fit_on="val"), no_val)
    with pytest.raises(ValueError, match=r"scoring\.threshold\.fit_on"):
        fit_thresholds(with_threshold(cfg, fit_on="test"), scores_table())


def test_threshold_settings_do_not_change_the_detect_cache_key(cfg: DictConfig, splits: DataSplits) -> None:
    key = detect_key(cfg, splits, "masks").digest
    assert detect_key(with_threshold(cfg, fit_on="val", method="quantile"), splits, "masks").digest == key
    changed = cfg.copy()
    with open_dict(changed):
        changed.scoring.reduction = "max"
    assert detect_key(changed, splits, "masks").digest != key


def test_data_loader_workers_do_not_change_the_cache_keys(cfg: DictConfig, splits: DataSplits) -> None:
    more_workers = cfg.copy()
    with open_dict(more_workers):
        more_workers.data.num_workers = 3
    assert segment_key(more_workers, splits).digest == segment_key(cfg, splits).digest
    assert detect_key(more_workers, splits, "masks").digest == detect_key(cfg, splits, "masks").digest


def test_mvtec_data_fits_thresholds_on_validation_images_and_chooses_its_detector_on_them(tmp_path: Path) -> None:
    cfg = compose_app("data=mvtec", f"data.root={tmp_path}")
    assert cfg.scoring.threshold.fit_on == "val"
    assert cfg.model.metric == "synthetic_image_auroc"  # model=auto: chosen on the validation signal
    assert "ensemble" in cfg.model.choose_from


def test_training_images_are_scored_only_where_the_evaluation_reads_their_scores(
    cfg: DictConfig, splits: DataSplits
) -> None:
    assert scored_roles(cfg, splits) == ("train", "val")  # the thresholds are fitted on them
    fit_on_val = with_threshold(cfg, fit_on="val")
    assert scored_roles(fit_on_val, splits) == ("train", "val")  # batches of views: the SPC limits need them
    one_view = splits.map(lambda table: table.assign(view="all"))  # the MVTec layout: one view of many images
    assert scored_roles(fit_on_val, one_view) == ("val",)
    assert scored_roles(cfg, one_view) == ("train", "val")
