"""The Blender renderer really renders tiny data sets: masks, defects, determinism, manifest, cache, profiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.renders import NEEDS_BPY, synth_config

from polydefect.data.io import read_image, read_mask
from polydefect.data.layout import discover_thesis
from polydefect.synth import SynthConfigError, ensure_rendered, render_spec
from polydefect.synth.runner import render_command


@pytest.fixture(scope="module")
def scanner_tiny(tmp_path_factory) -> Path:
    cfg = synth_config(tmp_path_factory.mktemp("cache"), "synth=scanner", "synth.size=tiny")
    return ensure_rendered(cfg, progress=False)


def read_view(row) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image = read_image(row.image_path)
    object_mask = read_mask(row.object_mask_path, image.shape)
    defect = read_mask(row.defect_mask_path, image.shape) if isinstance(row.defect_mask_path, str) else None
    return image, object_mask, defect


@pytest.mark.render
@NEEDS_BPY
def test_tiny_scanner_set_is_read_by_discover_thesis_with_all_views(scanner_tiny):
    table = discover_thesis(scanner_tiny)
    assert len(table) == 4 * 4
    assert sorted(table["batch"].unique()) == [1, 2, 3, 4]
    assert sorted(table["view"].unique()) == ["p01_c0", "p01_c1", "p02_c0", "p02_c1"]
    assert set(table.loc[table["label"] == 1, "batch"]) == {1}
    image = read_image(table.iloc[0].image_path)
    assert image.shape == (96, 128) and image.dtype == np.uint8


@pytest.mark.render
@NEEDS_BPY
def test_object_masks_cover_the_bright_parts_and_leave_the_dark_holder_out(scanner_tiny):
    for row in discover_thesis(scanner_tiny).itertuples():
        image, object_mask, _ = read_view(row)
        assert 0.05 < object_mask.mean() < 0.6, row.image_path
        assert image[object_mask].mean() > image[~object_mask].mean() + 40, row.image_path


@pytest.mark.render
@NEEDS_BPY
def test_defect_masks_lie_inside_object_masks_and_exist_only_in_the_defective_batch(scanner_tiny):
    table = discover_thesis(scanner_tiny)
    defect_pixels = 0
    for row in table.itertuples():
        _, object_mask, defect = read_view(row)
        assert (defect is not None) == (row.batch == 1)
        if defect is not None:
            assert not (defect & ~object_mask).any(), row.defect_mask_path
            defect_pixels += int(defect.sum())
    assert defect_pixels > 0


@pytest.mark.render
@NEEDS_BPY
def test_manifest_has_one_record_per_image_with_pose_light_seed_and_parts(scanner_tiny):
    records = [json.loads(line) for line in (scanner_tiny / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 16
    for record in records:
        assert (scanner_tiny / record["files"]["image"]).is_file()
        assert record["view"] == f"p{record['position']:02d}_c{record['camera']}"
        assert record["frame"] == record["position"]
        assert len(record["camera_pose"]["location_m"]) == 3 and record["light"]["energy_w"] > 0
        assert isinstance(record["seed"], int) and len(record["parts"]) == 6
        assert record["indicator_knobs"] == (2 if record["batch"] == 1 else 1)  # beside every batch
    left = {(r["batch"], r["position"]): r["camera_pose"]["location_m"] for r in records if r["camera"] == 0}
    right = {(r["batch"], r["position"]): r["camera_pose"]["location_m"] for r in records if r["camera"] == 1}
    baselines = [np.linalg.norm(np.subtract(left[key], right[key])) for key in left]
    assert np.allclose(baselines, 0.05, atol=1e-4)  # the two scanner cameras are 5 cm apart


@pytest.mark.render
@NEEDS_BPY
def test_same_config_and_seed_give_byte_identical_pngs(scanner_tiny, tmp_path):
    # seeds depend on (seed, batch, view) only, so the first two batches of a 2-batch render must equal the 4-batch one
    cfg = synth_config(tmp_path, "synth=scanner", "synth.size=tiny", "synth.batches=2")
    again = ensure_rendered(cfg, progress=False)
    names = sorted(p.relative_to(again) for p in again.glob("batch_*/*/*.png"))
    assert len(names) == 2 * 4 * 2 + 4
    for name in names:
        assert (scanner_tiny / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.render
@NEEDS_BPY
def test_a_second_call_reuses_the_cache_without_starting_the_renderer(scanner_tiny, monkeypatch):
    def no_renderer(*args, **kwargs):
        raise AssertionError("the renderer was started although the cache is complete")

    monkeypatch.setattr(subprocess, "Popen", no_renderer)
    cfg = synth_config(scanner_tiny.parent, "synth=scanner", "synth.size=tiny")
    assert ensure_rendered(cfg, progress=False) == scanner_tiny


@pytest.mark.render
@NEEDS_BPY
def test_clean_profile_is_all_good_and_brighter_than_the_scanner(scanner_tiny, tmp_path):
    clean = ensure_rendered(synth_config(tmp_path, "synth=clean", "synth.size=tiny", "synth.batches=2"), progress=False)
    table = discover_thesis(clean)
    assert len(table) == 2 * 4 and (table["label"] == 0).all()
    assert table["defect_mask_path"].isna().all()

    def part_brightness(root: Path) -> float:
        return float(np.mean([read_view(r)[0][read_view(r)[1]].mean() for r in discover_thesis(root).itertuples()]))

    assert part_brightness(clean) > part_brightness(scanner_tiny) + 10


def test_an_unknown_size_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(SynthConfigError, match=r"synth\.size: 'huge'"):
        render_spec(synth_config(tmp_path, "synth=scanner", "synth.size=huge"))


def test_a_defective_batch_outside_the_batches_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(SynthConfigError, match=r"synth\.defective_batches: \[7\]"):
        render_spec(synth_config(tmp_path, "synth=scanner", "synth.size=tiny", "synth.defective_batches=[7]"))


def test_a_missing_part_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(SynthConfigError, match="nothing.stl does not exist"):
        ensure_rendered(synth_config(tmp_path, "synth=scanner", f"synth.part={tmp_path}/nothing.stl"), progress=False)


def test_the_size_sets_its_keys_and_an_explicit_key_wins(tmp_path):
    spec = render_spec(synth_config(tmp_path, "synth=clean", "synth.size=tiny", "synth.samples=7"))
    assert (spec["width"], spec["height"], spec["batches"], spec["samples"], spec["profile"]) == (
        128,
        96,
        3,
        7,
        "clean",
    )
    assert spec["defective_batches"] == [] and spec["material"]["texture_m"] == 0.0
    assert not {"cache_dir", "blender", "sizes", "size"} & set(spec)


def test_a_blender_binary_runs_the_script_in_background_and_a_python_runs_it_directly(tmp_path):
    script, spec, out = Path("render.py"), tmp_path / "spec.json", tmp_path / "out"
    blender = render_command(synth_config(tmp_path, "synth.blender=/opt/blender/blender"), script, spec, out)
    assert blender[:2] == ["/opt/blender/blender", "-b"] and blender[blender.index("-P") + 1] == "render.py"
    assert blender[blender.index("--") :] == ["--", "--spec", str(spec), "--out", str(out)]
    python = render_command(synth_config(tmp_path), script, spec, out)
    assert python[:2] == [sys.executable, "render.py"]


def write_box_stl(path: Path, size_mm: tuple[float, float, float]) -> None:
    """An ASCII STL of a box in millimetres (12 triangles)."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * size_mm
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = ["solid box"]
    for a, b, c, d in quads:
        for tri in ((a, b, c), (a, c, d)):
            lines += ["facet normal 0 0 0", "outer loop", *(f"vertex {' '.join(map(str, corners[i]))}" for i in tri)]
            lines += ["endloop", "endfacet"]
    path.write_text("\n".join([*lines, "endsolid box"]) + "\n")


@pytest.mark.render
@NEEDS_BPY
def test_a_user_stl_part_in_millimetres_renders_with_masks(tmp_path):
    stl = tmp_path / "box.stl"
    write_box_stl(stl, (24.0, 12.0, 8.0))
    cfg = synth_config(tmp_path, "synth=scanner", "synth.size=tiny", "synth.batches=1", f"synth.part={stl}")
    root = ensure_rendered(cfg, progress=False)
    for row in discover_thesis(root).itertuples():
        image, object_mask, defect = read_view(row)
        assert object_mask.mean() > 0.03 and image[object_mask].mean() > image[~object_mask].mean()
        assert not (defect & ~object_mask).any()
