"""The posed arrangement (`synth=posed_bricks`): one brick per image in random resting poses, written in the MVTec
AD layout with object masks and defect masks, which the data layer reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.renders import NEEDS_BPY, synth_config

from polydefect.data.io import read_image, read_mask
from polydefect.data.layout import discover_mvtec
from polydefect.synth import SynthConfigError, ensure_rendered, render_spec

pytestmark = [pytest.mark.render, NEEDS_BPY]
TINY = ["synth=posed_bricks", "synth.size=tiny", "synth.part=[brick2x4,brick2x2]"]  # no LDraw library needed


@pytest.fixture(scope="module")
def posed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_rendered(synth_config(tmp_path_factory.mktemp("posed"), *TINY), progress=False)


def test_the_render_is_an_mvtec_folder_with_object_and_defect_masks(posed: Path) -> None:
    table = discover_mvtec(posed)
    assert (table["split"] == "train").sum() == 6 and (table["label"] == 0).sum() == 8
    defective = table[table["label"] == 1]
    assert sorted(defective["defect_type"]) == ["black_speck", "flow_lines", "scratch", "sink_mark"]
    assert table["object_mask_path"].notna().all()
    for row in table.itertuples():
        image = read_image(row.image_path)
        part = read_mask(row.object_mask_path, image.shape[:2])
        assert image.shape[:2] == (96, 96) and 0.02 < part.mean() < 0.6, row.row_id  # a part, not the frame
        if row.label:
            defect = read_mask(row.defect_mask_path, image.shape[:2])
            assert defect.sum() >= 2 and (defect & ~part).sum() <= 1, row.row_id  # seen, and on the part


def test_poses_cameras_and_lights_vary_from_image_to_image(posed: Path) -> None:
    records = [json.loads(line) for line in (posed / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 12 and len({r["rest"] for r in records}) >= 3
    distances = [r["camera_distance_m"] for r in records]
    assert all(0.08 <= d <= 0.12 for d in distances) and np.std(distances) > 0.005
    assert len({round(r["light_azimuth_deg"]) for r in records}) == 12
    images = [read_image(posed / r["files"]["image"]) for r in records[:6]]
    assert all(not np.array_equal(a, b) for a, b in zip(images, images[1:], strict=False))


def test_a_posed_profile_without_its_counts_names_the_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(SynthConfigError, match=r"synth\.posed: missing keys \['train'"):
        render_spec(synth_config(tmp_path, *TINY, "~synth.posed.train"))
