"""LDraw parts (issue 11): conversion with logo studs, Blender import, mesh cache, bad input, renders with masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.renders import NEEDS_BPY, synth_config

from polydefect.data.io import read_mask
from polydefect.data.layout import discover_thesis
from polydefect.synth import SynthConfigError, ensure_rendered
from polydefect.synth.ldraw import ldraw_mesh

LDRAW_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "ldraw"
ON_CI = os.environ.get("CI") == "true"
pytestmark = pytest.mark.skipif(
    not LDRAW_SUBSET.is_dir() and not ON_CI, reason=f"the LDraw subset {LDRAW_SUBSET} is not on this machine"
)
SUBSET_PARTS = ["3001", "3003", "3004", "3010", "3020", "3022", "3039"]


def imported_mesh(glb: Path):
    """(dimensions in metres, face count) of a .glb imported into an empty Blender scene."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    meshes = [obj for obj in bpy.context.scene.objects if obj.type == "MESH"]
    corners = np.array([obj.matrix_world @ vertex.co for obj in meshes for vertex in obj.data.vertices])
    return corners.max(axis=0) - corners.min(axis=0), sum(len(obj.data.polygons) for obj in meshes)


@pytest.mark.render
@NEEDS_BPY
@pytest.mark.parametrize("part", SUBSET_PARTS)
def test_every_part_of_the_subset_converts_and_imports_into_blender(part, tmp_path):
    glb = ldraw_mesh(f"ldraw:{part}", str(LDRAW_SUBSET), "logo", tmp_path)
    size, faces = imported_mesh(glb)
    assert faces > 100 and (size > 0.003).all()  # plates are 4.8 mm high with studs


@pytest.mark.render
@NEEDS_BPY
def test_brick_3001_measures_32_by_16_by_11_2_mm_in_metres(tmp_path):
    size, _ = imported_mesh(ldraw_mesh("ldraw:3001", str(LDRAW_SUBSET), "logo", tmp_path))
    assert np.allclose(size, [0.032, 0.016, 0.0112], atol=2e-5)


@pytest.mark.render
@NEEDS_BPY
def test_logo_studs_add_faces_over_plain_studs(tmp_path):
    _, logo = imported_mesh(ldraw_mesh("ldraw:3001", str(LDRAW_SUBSET), "logo", tmp_path))
    _, plain = imported_mesh(ldraw_mesh("ldraw:3001", str(LDRAW_SUBSET), "normal", tmp_path))
    assert logo > plain * 2


def test_converted_meshes_are_cached_by_part_and_studs(tmp_path, monkeypatch):
    first = ldraw_mesh("ldraw:3003", str(LDRAW_SUBSET), "logo", tmp_path)
    plain = ldraw_mesh("ldraw:3003", str(LDRAW_SUBSET), "normal", tmp_path)
    assert first != plain

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the mesh is cached")

    monkeypatch.setattr("ldraw2mesh.convert", no_conversion)
    assert ldraw_mesh("ldraw:3003", str(LDRAW_SUBSET), "logo", tmp_path) == first


def test_an_unknown_part_id_names_the_part_and_the_library(tmp_path):
    with pytest.raises(SynthConfigError, match=rf"unknown LDraw part '99999'.*{LDRAW_SUBSET}"):
        ldraw_mesh("ldraw:99999", str(LDRAW_SUBSET), "logo", tmp_path)


def test_a_missing_library_names_the_key_and_the_path(tmp_path):
    with pytest.raises(SynthConfigError, match=rf"synth\.ldraw_dir: .*{tmp_path / 'nowhere'}"):
        ldraw_mesh("ldraw:3001", str(tmp_path / "nowhere"), "logo", tmp_path)


def test_a_missing_subfile_names_the_part_the_subfile_and_the_library(tmp_path):
    model = tmp_path / "model.ldr"
    lines = ["0 model", "1 16 0 0 0 1 0 0 0 1 0 0 0 1 3001.dat", "1 16 0 -24 0 1 0 0 0 1 0 0 0 1 no_such_brick.dat"]
    model.write_text("\n".join(lines) + "\n")
    with pytest.raises(SynthConfigError, match=rf"model\.ldr: subfile 'no_such_brick\.dat' .*{LDRAW_SUBSET}"):
        ldraw_mesh(str(model), str(LDRAW_SUBSET), "logo", tmp_path)


def test_a_file_without_geometry_says_so(tmp_path):
    empty = tmp_path / "empty.dat"
    empty.write_text("0 nothing here\n0 BFC CERTIFY CCW\n2 24 0 0 0 1 1 1\n")
    with pytest.raises(SynthConfigError, match=r"empty\.dat has no geometry"):
        ldraw_mesh(str(empty), str(LDRAW_SUBSET), "logo", tmp_path)


def test_an_unknown_studs_option_names_the_key(tmp_path):
    with pytest.raises(SynthConfigError, match=r"synth\.studs: 'shiny'"):
        ldraw_mesh("ldraw:3001", str(LDRAW_SUBSET), "shiny", tmp_path)


@pytest.mark.render
@NEEDS_BPY
def test_a_scene_of_several_ldraw_parts_renders_with_object_and_defect_masks(tmp_path):
    overrides = [
        "synth=scanner",
        "synth.size=tiny",
        "synth.batches=2",
        "synth.part=[ldraw:3001,ldraw:3010,brick2x4]",
        f"synth.ldraw_dir={LDRAW_SUBSET}",
    ]
    root = ensure_rendered(synth_config(tmp_path, *overrides), progress=False)
    table = discover_thesis(root)
    assert len(table) == 2 * 4 and len(list((tmp_path / "meshes").glob("*.glb"))) == 2
    defect_pixels = 0
    for row in table.itertuples():
        object_mask = read_mask(row.object_mask_path)
        assert object_mask.mean() > 0.03
        if isinstance(row.defect_mask_path, str):
            defect = read_mask(row.defect_mask_path)
            assert not (defect & ~object_mask).any()
            defect_pixels += int(defect.sum())
    assert defect_pixels > 0
