"""The posed arrangement: one part per image, resting in a random pose on a plain floor, seen by a camera at a
random azimuth, height and distance and lit by a spotlight from a random direction; the MVTec AD layout:

    train/good/NNN.png, test/good/NNN.png, test/<kind>/NNN.png, ground_truth/<kind>/NNN_mask.png,
    object_masks/<split>/<kind>/NNN.png, manifest.jsonl

A defective image carries defects of one kind (its folder's). Its pose is drawn again until the camera sees
them (at least `posed.min_defect_px` defect pixels), so no defective image hides its defect. Every image's
draws come from (seed, its index) alone: a killed render resumes where it stopped and makes the same images.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import bpy
import numpy as np
from capture import progress, render_masks, render_photo, view_record
from defects import sample_defect
from materials import holder_material, plastic_material
from mathutils import Euler, Vector
from pngio import write_grey_png_atomic
from scene import clear_parts, link_object, part_mesh, set_world, track_to

RESTS = {  # resting poses of a brick on the floor: rotations applied before the turn about z
    "upright": (0.0, 0.0, 0.0),
    "upside_down": (math.pi, 0.0, 0.0),
    "on_side": (math.pi / 2, 0.0, 0.0),
    "on_end": (0.0, math.pi / 2, 0.0),
}
DRAWS = 25  # poses tried for a defective image before the render gives up


def items(spec: dict) -> list[tuple[str, str, int]]:
    """(split, kind, index) of every image: the good training and test images, then the defective ones, the
    kinds in turn."""
    posed, kinds = spec["posed"], spec["defects"]["kinds"]
    listed = [("train", "good", i) for i in range(posed["train"])]
    listed += [("test", "good", i) for i in range(posed["test_good"])]
    counts = dict.fromkeys(kinds, 0)
    for i in range(posed["test_defective"]):
        kind = kinds[i % len(kinds)]
        listed.append(("test", kind, counts[kind]))
        counts[kind] += 1
    return listed


def files_of(out: Path, split: str, kind: str, index: int) -> dict[str, Path]:
    stem = f"{index:03d}"
    files = {
        "image": out / split / kind / f"{stem}.png",
        "object_mask": out / "object_masks" / split / kind / f"{stem}.png",
    }
    if kind != "good":
        files["defect_mask"] = out / "ground_truth" / kind / f"{stem}_mask.png"
    return files


def build_stage(spec: dict) -> dict:
    """Floor, camera, spotlight and the look-at target, placed anew for every image by `pose_stage`."""
    floor_data = bpy.data.meshes.new("floor")
    half = 1.0
    floor_data.from_pydata([(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)])
    floor = link_object(bpy.data.objects.new("floor", floor_data))
    floor.data.materials.append(holder_material("floor", spec["holder"]))
    target = link_object(bpy.data.objects.new("target", None))
    data = bpy.data.cameras.new("camera")
    data.lens, data.sensor_width = spec["camera"]["focal_mm"], spec["camera"]["sensor_mm"]
    data.clip_start, data.clip_end = spec["camera"]["clip_start_m"], 10.0
    camera = link_object(bpy.data.objects.new("camera", data))
    track_to(camera, target)
    bpy.context.scene.camera = camera
    light_data = bpy.data.lights.new("spot", "SPOT")
    light_data.spot_size = math.radians(spec["light"]["spot_deg"])
    light_data.spot_blend = spec["light"]["blend"]
    light_data.shadow_soft_size = spec["light"]["size_m"]
    light = link_object(bpy.data.objects.new("spot", light_data))
    track_to(light, target)
    set_world(spec["light"]["world"])
    return {"target": target, "camera": camera, "light": light}


def _on_sphere(azimuth_deg: float, elevation_deg: float, distance: float) -> Vector:
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * Vector(
        (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    )


def pose_stage(stage: dict, spec: dict, centre: Vector, rng: np.random.Generator) -> dict:
    """Aim the camera and the light at the part from random directions; returns what was drawn."""
    posed = spec["posed"]
    view = {
        "camera_azimuth_deg": float(rng.uniform(0, 360)),
        "camera_elevation_deg": float(rng.uniform(*posed["elevation_deg"])),
        "camera_distance_m": float(rng.uniform(*posed["distance_m"])),
        "light_azimuth_deg": float(rng.uniform(0, 360)),
        "light_elevation_deg": float(rng.uniform(*posed["light_elevation_deg"])),
        "light_energy_w": float(rng.uniform(*posed["light_energy_w"])),
    }
    stage["target"].location = centre
    stage["camera"].location = centre + _on_sphere(
        view["camera_azimuth_deg"], view["camera_elevation_deg"], view["camera_distance_m"]
    )
    stage["light"].location = centre + _on_sphere(view["light_azimuth_deg"], view["light_elevation_deg"], 0.3)
    stage["light"].data.energy = view["light_energy_w"]
    bpy.context.view_layer.update()
    return view


def place_part(spec: dict, kind: str, index: int, rng: np.random.Generator, cache: dict) -> tuple[Vector, dict]:
    """One part in a random resting pose on the floor, with defects of `kind` unless it is "good" (drawn on
    the faces that look up or sideways in this pose); returns its centre and its record."""
    clear_parts()
    entry = spec["part"][index % len(spec["part"])]
    source_mesh, _ = part_mesh(entry, cache)
    mesh = source_mesh.copy()
    mesh.name = "posed_part"
    rest = str(rng.choice(spec["posed"]["rests"]))
    turn = float(rng.uniform(0, 360))
    rotation = Euler((0.0, 0.0, math.radians(turn))).to_matrix() @ Euler(RESTS[rest]).to_matrix()
    up = tuple(rotation.transposed() @ Vector((0.0, 0.0, 1.0)))  # the world's up in the part's own frame
    defects = []
    if kind != "good":
        count = int(rng.integers(spec["defects"]["per_part"][0], spec["defects"]["per_part"][1] + 1))
        defects = [sample_defect(kind, mesh, rng, spec["defects"]["size_mm"], up) for _ in range(count)]
    material = plastic_material("posed_part", spec["material"], defects, is_part=True)
    material["polydefect_part"] = True
    mesh.materials.clear()
    mesh.materials.append(material)
    obj = link_object(bpy.data.objects.new("posed_part", mesh))
    obj["polydefect_part"] = 0
    obj.matrix_world = rotation.to_4x4()
    bpy.context.view_layer.update()
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    low = min(c.z for c in corners)
    shift = rng.uniform(-spec["posed"]["shift_m"], spec["posed"]["shift_m"], 2)
    obj.location = (float(shift[0]), float(shift[1]), -low)
    bpy.context.view_layer.update()
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    centre = sum(corners, Vector()) / len(corners)
    record = {"part": entry["source"], "rest": rest, "turn_deg": round(turn, 4), "defects": len(defects)}
    return centre, record


def render_item(spec: dict, studio: dict, item: tuple[str, str, int], number: int) -> dict:
    """Draw, check and render one image; write its files and return its manifest record. `studio` holds the
    stage (`build_stage`), the output folder `out`, a `scratch` folder and the mesh `cache`."""
    split, kind, index = item
    rng = np.random.default_rng([spec["seed"], number])
    draws = 0
    while True:
        draws += 1
        centre, part = place_part(spec, kind, number, rng, studio["cache"])
        view = pose_stage(studio, spec, centre, rng)
        bpy.context.scene.cycles.seed = number
        object_mask, defect_mask = render_masks(spec, studio["scratch"])
        if kind == "good" or int((defect_mask > 0).sum()) >= spec["posed"]["min_defect_px"]:
            break
        if draws == DRAWS:
            raise RuntimeError(f"{split}/{kind}/{index:03d}: no pose of {DRAWS} shows its defect to the camera")
    image = render_photo(spec, studio["scratch"], number)
    files = files_of(studio["out"], split, kind, index)
    if "defect_mask" in files:
        write_grey_png_atomic(files["defect_mask"], defect_mask)
    write_grey_png_atomic(files["object_mask"], object_mask)
    write_grey_png_atomic(files["image"], image)
    record = {"split": split, "kind": kind, "index": index, "draws": draws, "seed": number, **part, **view}
    return record | view_record(spec, studio["out"], files, studio["camera"], studio["light"])


def render_posed(spec: dict, out: Path, scratch: Path) -> None:
    """Render every image of the posed set that is not there yet, then write the manifest."""
    studio = {**build_stage(spec), "out": out, "scratch": scratch, "cache": {}}
    listed = items(spec)
    records_dir = out / ".records"  # one record per finished image, so a resumed render keeps the manifest
    records_dir.mkdir(parents=True, exist_ok=True)
    rendered = 0
    progress(done=0, total=len(listed), rendered=0)
    for number, item in enumerate(listed):
        record_path = records_dir / f"{number:05d}.json"
        files = files_of(out, *item)
        if not (record_path.is_file() and all(path.exists() for path in files.values())):
            record = render_item(spec, studio, item, number)
            tmp = record_path.with_name(f".{record_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record, sort_keys=True))
            os.replace(tmp, record_path)
            rendered += 1
        progress(done=number + 1, total=len(listed), rendered=rendered, view="/".join(map(str, item)))
    lines = [records_dir / f"{number:05d}.json" for number in range(len(listed))]
    text = "".join(path.read_text() + "\n" for path in lines)
    tmp = out / f".manifest.jsonl.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "manifest.jsonl")
