"""Stage-cache keys follow the settings, every data file the stage reads (its stat or, by choice, its content)
and the code that computes the stage, and nothing else: not the evaluate stage's code, nor the loader workers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers.cache import replace_image
from helpers.tiny import compose_tiny
from omegaconf import DictConfig, OmegaConf, open_dict

from polydefect import stage_keys
from polydefect.config import DataConfig
from polydefect.data.splits import DataSplits, make_splits
from polydefect.pipeline.detect import detect_key
from polydefect.pipeline.segment import SegmentResult, segment_key
from polydefect.stage_keys import config_key, data_fingerprint

FILES = ("image_path", "object_mask_path", "defect_mask_path")


def test_key_depends_on_values_not_on_key_order() -> None:
    a = OmegaConf.create({"x": 1, "y": {"z": [1, 2]}})
    b = OmegaConf.create({"y": {"z": [1, 2]}, "x": 1})
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(OmegaConf.create({"x": 2, "y": {"z": [1, 2]}}))


def test_key_resolves_interpolations() -> None:
    a = OmegaConf.create({"size": 3, "tile": "${size}"})
    b = OmegaConf.create({"size": 3, "tile": 3})
    assert config_key(a.tile) == config_key(b.tile)


def thesis_splits(root: Path) -> DataSplits:
    return make_splits(OmegaConf.structured(DataConfig), {"real": root}, seed=0)


@pytest.mark.parametrize("mode", ["stat", "content"])
def test_replacing_an_image_under_the_same_root_changes_the_data_fingerprint(thesis_root: Path, mode: str) -> None:
    splits = thesis_splits(thesis_root)
    before = data_fingerprint(splits, FILES, mode)
    assert data_fingerprint(thesis_splits(thesis_root), FILES, mode) == before
    replace_image(Path(splits.train["image_path"][0]))
    assert data_fingerprint(thesis_splits(thesis_root), FILES, mode) != before


def test_a_file_touched_changes_the_stat_fingerprint_but_not_the_content_one(thesis_root: Path) -> None:
    splits = thesis_splits(thesis_root)
    before = {mode: data_fingerprint(splits, FILES, mode) for mode in ("stat", "content")}
    os.utime(splits.test["defect_mask_path"].dropna().iloc[0], ns=(10**18, 10**18))
    assert data_fingerprint(splits, FILES, "stat") != before["stat"]
    assert data_fingerprint(splits, FILES, "content") == before["content"]


def test_a_row_moved_to_another_split_changes_the_data_fingerprint(thesis_root: Path) -> None:
    splits = thesis_splits(thesis_root)
    moved = DataSplits(train=splits.train.iloc[1:], val=splits.train.iloc[:1], test=splits.test)
    assert data_fingerprint(moved, FILES, "stat") != data_fingerprint(splits, FILES, "stat")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[DictConfig, DataSplits]:
    cfg = compose_tiny(tmp_path_factory.mktemp("keys"))
    return cfg, make_splits(cfg.data, {"real": Path(cfg.data.root), "synthetic": Path(cfg.data.synthetic_root)}, 42)


def with_predicted_masks(splits: DataSplits, folder: Path) -> DataSplits:
    """The splits with a predicted mask per image in `folder`, as the segment stage writes and attaches them."""
    images = splits.all()
    folder.mkdir(parents=True, exist_ok=True)
    masks = {}
    for index, (image, mask) in enumerate(zip(images["image_path"], images["object_mask_path"], strict=True)):
        masks[image] = str(folder / f"{index:06d}.png")
        shutil.copyfile(mask, masks[image])
    return SegmentResult("segment", masks).attach(splits)


def both_keys(cfg: DictConfig, splits: DataSplits) -> tuple[str, str]:
    segment = segment_key(cfg, splits).digest
    return segment, detect_key(cfg, splits, segment).digest


def edited_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Point the code fingerprint at a copy of the package in which each of `modules` gained a function."""
    copy = tmp_path / "polydefect"
    shutil.copytree(stage_keys.SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for module in modules:
        path = copy.joinpath(*module.split(".")[1:]).with_suffix(".py")
        path.write_text(path.read_text() + "\n\ndef _edited() -> int:\n    return 1\n")
    monkeypatch.setattr(stage_keys, "SRC", copy)


def test_editing_the_detectors_code_changes_the_detect_key_and_not_the_segment_key(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = both_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.models.cae")  # named only by the config's _target_
    new_segment, new_detect = both_keys(*tiny)
    assert new_segment == segment and new_detect != detect


def test_editing_a_module_imported_inside_a_function_changes_both_keys(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = both_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.synth.spec")  # pipeline/data.py imports synth when rendering
    new_segment, new_detect = both_keys(*tiny)
    assert new_segment != segment and new_detect != detect


def test_editing_the_evaluate_stage_changes_no_key(
    tiny: tuple[DictConfig, DataSplits], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = both_keys(*tiny)
    edited_source(tmp_path, monkeypatch, "polydefect.pipeline.evaluate")
    assert both_keys(*tiny) == keys


def test_a_replaced_defect_mask_changes_the_detect_key_and_not_the_segment_key(
    tiny: tuple[DictConfig, DataSplits],
) -> None:
    cfg, splits = tiny
    segment, detect = both_keys(cfg, splits)
    replace_image(Path(splits.test["defect_mask_path"].dropna().iloc[0]))  # the detect stage archives it
    new_segment, new_detect = both_keys(cfg, splits)
    assert new_segment == segment and new_detect != detect


def test_a_new_polydefect_version_changes_both_keys(
    tiny: tuple[DictConfig, DataSplits], monkeypatch: pytest.MonkeyPatch
) -> None:
    segment, detect = both_keys(*tiny)
    monkeypatch.setattr(stage_keys, "polydefect_version", lambda: "99.0")
    new_segment, new_detect = both_keys(*tiny)
    assert new_segment != segment and new_detect != detect


def test_a_rewritten_predicted_mask_changes_the_detect_key(tiny: tuple[DictConfig, DataSplits], tmp_path: Path) -> None:
    cfg, splits = tiny
    masked = with_predicted_masks(splits, tmp_path / "masks")  # a segment stage rebuilt under its old key
    key = detect_key(cfg, masked, "segment").digest
    assert detect_key(cfg, masked, "segment").digest == key
    replace_image(Path(masked.train["predicted_mask_path"].iloc[0]))
    assert detect_key(cfg, masked, "segment").digest != key


def test_content_hashing_is_chosen_by_data_fingerprint(tiny: tuple[DictConfig, DataSplits]) -> None:
    cfg, splits = tiny
    hashed = cfg.copy()
    with open_dict(hashed):
        hashed.data.fingerprint = "content"
    assert segment_key(cfg, splits).parts["files"].startswith("stat of ")
    assert segment_key(hashed, splits).parts["files"].startswith("content of ")
