"""Build the scanner scene: holder plate, parts placed by hand (jitter), two cameras on a Bezier path, a spotlight.

The rig follows the path (Follow Path, keyframed over the frames) and looks at the parts (Track To); the two
cameras sit on the rig `baseline` apart and both look at the same point, like the ATOS capsule of the thesis.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
from defects import sample_defect
from geometry import brick_mesh, file_mesh, holder_mesh
from materials import Defect, holder_material, plastic_material
from mathutils import Euler, Vector


def link_object(obj: bpy.types.Object) -> bpy.types.Object:
    bpy.context.scene.collection.objects.link(obj)
    return obj


def track_to(obj: bpy.types.Object, target: bpy.types.Object) -> None:
    constraint = obj.constraints.new("TRACK_TO")
    constraint.target = target
    constraint.track_axis = "TRACK_NEGATIVE_Z"
    constraint.up_axis = "UP_Y"


def reset_scene() -> None:
    """An empty scene in metres; factory settings are not assumed (Blender's binary may load a user startup file)."""
    for collection in (
        bpy.data.objects,
        bpy.data.meshes,
        bpy.data.materials,
        bpy.data.curves,
        bpy.data.lights,
        bpy.data.cameras,
    ):
        for item in list(collection):
            collection.remove(item)
    scene = bpy.context.scene
    scene.unit_settings.system = "METRIC"
    scene.unit_settings.scale_length = 1.0


def configure_render(spec: dict) -> None:
    """Cycles settings from the spec: device, samples, denoiser, threads, resolution, linear float output."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = spec["device"]
    if spec["device"] == "GPU":
        preferences = bpy.context.preferences.addons["cycles"].preferences
        preferences.compute_device_type = spec["compute_device_type"]
        preferences.get_devices()
        for device in preferences.devices:
            device.use = device.type != "CPU"
    cycles.use_animated_seed = False
    cycles.use_adaptive_sampling = False
    cycles.max_bounces, cycles.diffuse_bounces, cycles.glossy_bounces = 3, 1, 2
    cycles.transmission_bounces = cycles.volume_bounces = cycles.transparent_max_bounces = 0
    scene.render.threads_mode = "FIXED" if spec["threads"] else "AUTO"
    if spec["threads"]:
        scene.render.threads = spec["threads"]
    scene.render.resolution_x, scene.render.resolution_y = spec["width"], spec["height"]
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"


def set_pass(spec: dict, mask: bool) -> None:
    """Photograph pass (samples, denoiser, soft pixel filter) or mask pass (one sample at the pixel centre)."""
    cycles = bpy.context.scene.cycles
    cycles.samples = 1 if mask else spec["samples"]
    cycles.use_denoising = not mask and spec["denoiser"] != "none"
    if cycles.use_denoising:  # "fast" skips the albedo/normal passes: a tenth of the cost at small sizes
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_quality = spec["denoiser"].upper()
        cycles.denoising_input_passes = "RGB" if spec["denoiser"] == "fast" else "RGB_ALBEDO_NORMAL"
        cycles.denoising_prefilter = "NONE" if spec["denoiser"] == "fast" else "ACCURATE"
    cycles.pixel_filter_type = "BOX" if mask else "BLACKMAN_HARRIS"
    cycles.filter_width = 0.01 if mask else 1.5
    world = bpy.context.scene.world
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0 if mask else spec["light"]["world"]


def set_world(strength: float) -> None:
    scene = bpy.context.scene
    if scene.world is None:
        scene.world = bpy.data.worlds.new("world")
    scene.world.use_nodes = True
    background = scene.world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = strength


def _path_points(path: dict, count: int = 9) -> list[Vector]:
    """Control points of the camera path: an arc around z, elevation waving between its limits."""
    points = []
    for t in np.linspace(0.0, 1.0, count):
        azimuth = math.radians(path["azimuth"][0] + t * (path["azimuth"][1] - path["azimuth"][0]))
        low, high = path["elevation"]
        elevation = math.radians(low + (high - low) * (0.5 - 0.5 * math.cos(2 * math.pi * path["waves"] * t)))
        radius = path["radius"]
        points.append(
            Vector(
                (
                    radius * math.cos(elevation) * math.cos(azimuth),
                    radius * math.cos(elevation) * math.sin(azimuth),
                    radius * math.sin(elevation),
                )
            )
        )
    return points


def build_rig(spec: dict) -> dict:
    """Path, rig, cameras, spotlight and the look-at target; returns them by name."""
    camera_spec, light_spec = spec["camera"], spec["light"]
    target = link_object(bpy.data.objects.new("target", None))
    curve = bpy.data.curves.new("scanner_path", "CURVE")
    curve.dimensions = "3D"
    spline = curve.splines.new("BEZIER")
    points = _path_points(camera_spec["path"])
    spline.bezier_points.add(len(points) - 1)
    for bezier, point in zip(spline.bezier_points, points, strict=True):
        bezier.co = point
        bezier.handle_left_type = bezier.handle_right_type = "AUTO"
    path = link_object(bpy.data.objects.new("scanner_path", curve))
    rig = link_object(bpy.data.objects.new("scanner_rig", None))
    follow = rig.constraints.new("FOLLOW_PATH")
    follow.target = path
    follow.use_fixed_location = True
    track_to(rig, target)
    positions = spec["positions"]
    bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
    for frame, factor in ((1, 0.0), (positions, 1.0)) if positions > 1 else ((1, 0.5),):
        follow.offset_factor = factor
        rig.keyframe_insert(data_path=f'constraints["{follow.name}"].offset_factor', frame=frame)
    cameras = []
    for index in range(2):
        data = bpy.data.cameras.new(f"camera_{index}")
        data.lens = camera_spec["focal_mm"]
        data.sensor_width = camera_spec["sensor_mm"]
        data.clip_start = camera_spec["clip_start_m"]
        data.clip_end = 10.0
        camera = link_object(bpy.data.objects.new(f"camera_{index}", data))
        camera.parent = rig
        camera.location = ((index - 0.5) * camera_spec["baseline_m"], 0.0, 0.0)
        track_to(camera, target)
        cameras.append(camera)
    light_data = bpy.data.lights.new("spot", "SPOT")
    light_data.energy = light_spec["energy_w"]
    light_data.spot_size = math.radians(light_spec["spot_deg"])
    light_data.spot_blend = light_spec["blend"]
    light_data.shadow_soft_size = light_spec["size_m"]
    light = link_object(bpy.data.objects.new("spot", light_data))
    light_target = link_object(bpy.data.objects.new("light_target", None))
    light_target.location = light_spec["aim_m"]
    if light_spec["on_rig"]:
        light.parent = rig
    light.location = light_spec["location_m"]
    track_to(light, light_target)
    set_world(light_spec["world"])
    return {"target": target, "rig": rig, "cameras": cameras, "light": light}


def build_holder(spec: dict) -> bpy.types.Object:
    layout = spec["layout"]
    width = layout["cols"] * layout["pitch_m"][0] + 0.06
    depth = layout["rows"] * layout["pitch_m"][1] + 0.05
    holder = link_object(bpy.data.objects.new("holder", holder_mesh("holder", width, depth, layout["pitch_m"][1])))
    holder.data.materials.append(holder_material("holder", spec["holder"]))
    return holder


def part_mesh(entry: dict, cache: dict) -> tuple[bpy.types.Mesh, tuple | None]:
    """Mesh and own colour (None: use the material's) of a part entry, built once per run.

    Entries come from polydefect.synth.parts: {"kind": "procedural", "name": "brick<W>x<L>"} or
    {"kind": "file", "path", "scale", "up"}.
    """
    key = entry.get("path") or entry["name"]
    if key not in cache:
        if entry["kind"] == "procedural":
            width, length = (int(n) for n in entry["name"].removeprefix("brick").split("x"))
            cache[key] = brick_mesh(entry["name"], length, width), None  # long side along x
        else:
            cache[key] = file_mesh(Path(key).stem, Path(key), entry["scale"], entry["up"])
    return cache[key]


def indicator_knobs(spec: dict, defective: bool) -> int:
    """Knobs of the indicator brick beside a batch: 2 for a defective batch, 1 for a good one, 0 without one."""
    return (2 if defective else 1) if spec["indicator"] else 0


def clear_parts() -> None:
    """Remove the parts placed before (objects tagged `polydefect_part`), their meshes and materials."""
    for obj in [o for o in bpy.data.objects if o.get("polydefect_part") is not None]:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
    for material in [m for m in bpy.data.materials if m.get("polydefect_part")]:
        bpy.data.materials.remove(material)


def place_parts(spec: dict, batch: int, defective: bool, cache: dict) -> list[dict]:
    """Put this batch's parts and the indicator brick on the holder; return the parts' records.

    The indicator stands beside every batch, as on the thesis' bench (figure 1.3): one knob beside a good
    batch, two beside a defective one. It is background in the object masks, so a segmenter trained on any
    batch learns to leave it out, and a detector cannot tell a defective batch by its indicator alone.

    The jitter of each part and its defects are drawn from a generator seeded by (seed, batch) only, so a
    resumed render rebuilds exactly the same batch.
    """
    clear_parts()
    rng = np.random.default_rng([spec["seed"], batch, 7])
    layout, jitter = spec["layout"], spec["jitter"]
    parts = spec["part"]
    records = []
    for slot in range(layout["rows"] * layout["cols"]):
        row, col = divmod(slot, layout["cols"])
        part = parts[slot % len(parts)]
        source_mesh, own_color = part_mesh(part, cache)
        mesh = source_mesh.copy()
        mesh.name = f"part_{slot}"
        offset = rng.normal(0.0, jitter["position_mm"] / 1000, 2)
        angle = rng.normal(0.0, jitter["rotation_deg"]) + layout["angle_deg"]
        defects: list[Defect] = []
        if defective:
            count = int(rng.integers(spec["defects"]["per_part"][0], spec["defects"]["per_part"][1] + 1))
            kinds = rng.choice(spec["defects"]["kinds"], size=count)
            defects = [sample_defect(str(kind), mesh, rng, spec["defects"]["size_mm"]) for kind in kinds]
        look = spec["material"]
        if spec["ldraw_colors"] and own_color is not None:
            look = {
                **look,
                "color": float(sum(w * c for w, c in zip((0.2126, 0.7152, 0.0722), own_color, strict=True))),
            }
        material = plastic_material(f"part_{slot}", look, defects, is_part=True)
        material["polydefect_part"] = True
        mesh.materials.clear()
        mesh.materials.append(material)
        obj = link_object(bpy.data.objects.new(f"part_{slot}", mesh))
        obj["polydefect_part"] = slot
        x = (col - (layout["cols"] - 1) / 2) * layout["pitch_m"][0] + offset[0]
        y = (row - (layout["rows"] - 1) / 2) * layout["pitch_m"][1] + offset[1]
        obj.location = (x, y, 0.0)
        obj.rotation_euler = Euler((0.0, 0.0, math.radians(angle)))
        records.append(
            {
                "slot": slot,
                "part": part["source"],
                "location_m": [round(x, 6), round(y, 6), 0.0],
                "rotation_deg": round(float(angle), 4),
                "defects": [
                    {
                        "kind": d.kind,
                        "a_m": [round(v, 6) for v in d.a],
                        "b_m": [round(v, 6) for v in d.b],
                        "radius_m": round(d.radius, 6),
                    }
                    for d in defects
                ],
            }
        )
    if spec["indicator"]:
        mesh = brick_mesh("indicator", 1, indicator_knobs(spec, defective))
        material = plastic_material("indicator", spec["material"], [], is_part=False)
        material["polydefect_part"] = True
        mesh.materials.append(material)
        obj = link_object(bpy.data.objects.new("indicator", mesh))
        obj["polydefect_part"] = -1
        obj.location = ((layout["cols"] / 2) * layout["pitch_m"][0] + 0.012, 0.0, 0.0)
    return records
