"""Layout discovery: the thesis layout (generated) and the MVTec layout (real magnetic-tile data), and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from polydefect.data.layout import COLUMNS, DataLayoutError, discover, discover_mvtec, discover_thesis


def test_thesis_layout_gives_one_row_per_image_with_keys_and_labels(thesis_root: Path) -> None:
    table = discover_thesis(thesis_root)
    assert list(table.columns) == COLUMNS
    assert len(table) == 4 * 4
    assert sorted(table["batch"].unique()) == [1, 2, 3, 4]
    assert set(table["view"]) == {"p01_c0", "p01_c1", "p02_c0", "p02_c1"}
    first = table[(table["batch"] == 1) & (table["view"] == "p02_c1")].iloc[0]
    assert (first["position"], first["camera"], first["label"]) == (2, 1, 1)
    assert first["defect_mask_path"].endswith("batch_01/defect_masks/p02_c1.png")
    assert table[table["batch"] != 1]["label"].eq(0).all()
    assert table["object_mask_path"].notna().all()


def test_labels_csv_marks_a_whole_batch_defective_without_pixel_masks(thesis_root: Path) -> None:
    (thesis_root / "labels.csv").write_text("batch,label\n3,1\n")
    table = discover_thesis(thesis_root)
    assert table[table["batch"] == 3]["label"].eq(1).all()
    assert table[table["batch"] == 3]["defect_mask_path"].isna().all()


def test_views_without_the_scanner_pattern_keep_their_stem_as_view(tmp_path: Path, thesis_root: Path) -> None:
    images = thesis_root / "batch_02" / "images"
    (images / "p01_c0.png").rename(images / "front.png")
    (thesis_root / "batch_02" / "object_masks" / "p01_c0.png").rename(thesis_root / "batch_02/object_masks/front.png")
    row = discover_thesis(thesis_root).query("view == 'front'").iloc[0]
    assert (row["position"], row["camera"]) == (-1, -1)


def test_auto_layout_reads_the_real_magnetic_tile_folder(magnetic_tile: Path) -> None:
    table = discover(magnetic_tile)
    counts = table.groupby(["split", "defect_type"]).size().to_dict()
    assert counts[("train", "good")] == 700
    assert counts[("test", "good")] == 252
    assert counts[("test", "crack")] == 57
    defective = table[table["label"] == 1]
    assert defective["defect_mask_path"].notna().all()
    assert all(Path(p).is_file() for p in defective["defect_mask_path"].head(5))
    assert table["object_mask_path"].isna().all()


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="does not exist"):
        discover_thesis(tmp_path / "nope")


def test_empty_folder_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="no batch folders"):
        discover_thesis(tmp_path)


def test_empty_image_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "batch_01" / "images").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match=r"batch_01/images: empty image folder"):
        discover_thesis(tmp_path)


def test_missing_object_mask_names_the_image(thesis_root: Path) -> None:
    (thesis_root / "batch_03" / "object_masks" / "p02_c0.png").unlink()
    with pytest.raises(DataLayoutError, match=r"batch_03/images/p02_c0.png: missing object mask"):
        discover_thesis(thesis_root)


def test_unknown_file_type_is_named(thesis_root: Path) -> None:
    (thesis_root / "batch_02" / "images" / "notes.txt").write_text("hello")
    with pytest.raises(DataLayoutError, match=r"notes.txt: unknown file type '.txt'"):
        discover_thesis(thesis_root)


def test_mvtec_folder_without_good_training_images_is_refused(tmp_path: Path, magnetic_tile: Path) -> None:
    root = tmp_path / "mvtec"
    (root / "train" / "good").mkdir(parents=True)
    shutil.copytree(magnetic_tile / "test" / "fray", root / "test" / "fray")
    with pytest.raises(DataLayoutError, match="no good training images"):
        discover_mvtec(root)


def test_unknown_layout_names_the_config_key(thesis_root: Path) -> None:
    with pytest.raises(DataLayoutError, match="data.layout"):
        discover(thesis_root, layout="coco")
