"""Render a data set in the thesis layout from a JSON spec; runs under a Python with `bpy` or Blender's binary.

    python blender_scenes/render.py -- --spec spec.json --out DIR
    blender -b --factory-startup -P blender_scenes/render.py -- --spec spec.json --out DIR

Writes DIR/batch_NN/{images,object_masks,defect_masks}/pPP_cC.png and DIR/manifest.jsonl. Views whose files
all exist are skipped, so a killed render resumes; each file appears by rename. Progress goes to stdout as
lines "@@progress <json>" for the caller to parse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpy
import numpy as np
from materials import set_mask_mode
from pngio import write_grey_png_atomic
from scene import build_holder, build_rig, configure_render, indicator_knobs, place_parts, reset_scene, set_pass

LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)
FOLDERS = {"image": "images", "object_mask": "object_masks", "defect_mask": "defect_masks"}  # thesis layout


def _arguments() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON render spec (written by polydefect.synth)")
    parser.add_argument("--out", type=Path, required=True, help="data set root")
    return parser.parse_args(argv)


def _render_pixels(path: Path) -> np.ndarray:
    """Render the active camera to an EXR and read it back as linear (H, W, 3) float32, top row first."""
    scene = bpy.context.scene
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    path.unlink()
    return pixels.reshape(height, width, 4)[::-1, :, :3]


def _smooth(value: np.ndarray, sigma_range: float, radius: int = 2) -> np.ndarray:
    """Edge-preserving (bilateral) smoothing of render noise in plain numpy, (H, W) -> (H, W).

    Used instead of OpenImageDenoise where images must be bit-reproducible: OIDN's results differ in the last
    bit between runs, which flips a few 8-bit pixels.
    """
    padded = np.pad(value, radius, mode="edge")
    total = np.zeros_like(value)
    weights = np.zeros_like(value)
    height, width = value.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[radius + dy : radius + dy + height, radius + dx : radius + dx + width]
            weight = np.exp(-(dx * dx + dy * dy) / (2 * 1.5**2) - (shifted - value) ** 2 / (2 * sigma_range**2))
            total += weight * shifted
            weights += weight
    return total / weights


def _sensor(linear: np.ndarray, sensor: dict, rng: np.random.Generator) -> np.ndarray:
    """Grey camera response: exposure, gamma, optional smoothing, shot and read noise, 8-bit quantisation.

    (H, W, 3) linear float -> (H, W) uint8.
    """
    grey = np.clip(linear @ LUMINANCE * sensor["exposure"], 0.0, 1.0)
    value = grey ** (1.0 / sensor["gamma"])
    if sensor["smooth"] > 0:
        value = _smooth(value, sensor["smooth"])
    sigma = np.sqrt(sensor["read_noise"] ** 2 + sensor["shot_noise"] ** 2 * value)
    value = value + sigma * rng.standard_normal(value.shape)
    return np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)


def _pose(camera: bpy.types.Object) -> dict:
    matrix = camera.matrix_world
    return {
        "location_m": [round(v, 6) for v in matrix.translation],
        "rotation_euler_rad": [round(v, 6) for v in matrix.to_euler()],
        "focal_mm": camera.data.lens,
        "sensor_mm": camera.data.sensor_width,
    }


def _progress(**fields) -> None:
    print("@@progress " + json.dumps(fields), flush=True)


def _render_view(spec: dict, scratch: Path, files: dict[str, Path], seed: int) -> None:
    """Render the mask pass and the photograph of the active camera and write the view's files."""
    bpy.context.scene.cycles.seed = seed
    set_mask_mode(True)
    set_pass(spec, mask=True)
    masks = _render_pixels(scratch / "mask.exr")  # red = part, green = defect
    set_mask_mode(False)
    set_pass(spec, mask=False)
    image = _sensor(_render_pixels(scratch / "image.exr"), spec["sensor"], np.random.default_rng(seed))
    if "defect_mask" in files:
        write_grey_png_atomic(files["defect_mask"], np.where(masks[:, :, 1] > 0.5, 255, 0).astype(np.uint8))
    write_grey_png_atomic(files["object_mask"], np.where(masks[:, :, 0] > 0.5, 255, 0).astype(np.uint8))
    write_grey_png_atomic(files["image"], image)


def _record(spec: dict, out: Path, files: dict[str, Path], camera: bpy.types.Object, light: bpy.types.Object) -> dict:
    """The manifest fields that depend on the camera and the files (the caller adds the view keys)."""
    return {
        "profile": spec["profile"],
        "files": {key: str(path.relative_to(out)) for key, path in files.items()},
        "camera_pose": _pose(camera),
        "light": {"location_m": [round(v, 6) for v in light.matrix_world.translation], "energy_w": light.data.energy},
        "samples": spec["samples"],
        "resolution": [spec["width"], spec["height"]],
    }


def main() -> None:
    args = _arguments()
    spec = json.loads(args.spec.read_text())
    out: Path = args.out
    for stale in out.glob("**/.*.tmp"):  # left by a killed run; never data, as their names start with a dot
        stale.unlink()
    reset_scene()
    configure_render(spec)
    rig = build_rig(spec)
    build_holder(spec)
    scene = bpy.context.scene
    views = [(position, camera) for position in range(1, spec["positions"] + 1) for camera in range(2)]
    total, done, rendered = spec["batches"] * len(views), 0, 0
    manifest, mesh_cache = [], {}
    _progress(done=0, total=total, rendered=0)
    with tempfile.TemporaryDirectory(prefix="polydefect-render-") as scratch:
        for batch in range(1, spec["batches"] + 1):
            defective = batch in spec["defective_batches"]
            parts = place_parts(spec, batch, defective, mesh_cache)
            for position, camera_index in views:
                view = f"p{position:02d}_c{camera_index}"
                kinds = FOLDERS if defective else ["image", "object_mask"]
                files = {kind: out / f"batch_{batch:02d}" / FOLDERS[kind] / f"{view}.png" for kind in kinds}
                scene.frame_set(position)
                scene.camera = rig["cameras"][camera_index]
                seed = int(np.random.default_rng([spec["seed"], batch, position, camera_index]).integers(0, 2**31 - 1))
                if not all(path.exists() for path in files.values()):
                    started = time.perf_counter()
                    _render_view(spec, Path(scratch), files, seed)
                    rendered += 1
                    print(f"rendered {files['image']} in {time.perf_counter() - started:.2f} s", flush=True)
                done += 1
                _progress(done=done, total=total, rendered=rendered, view=f"batch_{batch:02d}/{view}")
                manifest.append(
                    {
                        "batch": batch,
                        "view": view,
                        "position": position,
                        "camera": camera_index,
                        "frame": position,
                        "defective": defective,
                        "seed": seed,
                        "parts": parts,
                        "indicator_knobs": indicator_knobs(spec, defective),
                        **_record(spec, out, files, scene.camera, rig["light"]),
                    }
                )
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in manifest)
    tmp = out / f".manifest.jsonl.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "manifest.jsonl")


if __name__ == "__main__":
    main()
