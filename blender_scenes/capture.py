"""Capture one view of the scene: the mask pass and the photograph through the grey camera model, and its record.

Shared by the holder arrangement (render.py) and the posed one (posed.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
from materials import set_mask_mode
from pngio import write_grey_png_atomic
from scene import set_pass

LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)


def render_pixels(path: Path) -> np.ndarray:
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


def sensor_response(linear: np.ndarray, sensor: dict, rng: np.random.Generator) -> np.ndarray:
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


def camera_pose(camera: bpy.types.Object) -> dict:
    matrix = camera.matrix_world
    return {
        "location_m": [round(v, 6) for v in matrix.translation],
        "rotation_euler_rad": [round(v, 6) for v in matrix.to_euler()],
        "focal_mm": camera.data.lens,
        "sensor_mm": camera.data.sensor_width,
    }


def progress(**fields) -> None:
    print("@@progress " + json.dumps(fields), flush=True)


def render_masks(spec: dict, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """The object and defect masks (H, W) uint8 0/255 of the active camera: one sample at each pixel centre."""
    set_mask_mode(True)
    set_pass(spec, mask=True)
    masks = render_pixels(scratch / "mask.exr")  # red = part, green = defect
    set_mask_mode(False)
    return tuple(np.where(masks[:, :, channel] > 0.5, 255, 0).astype(np.uint8) for channel in (0, 1))


def render_photo(spec: dict, scratch: Path, seed: int) -> np.ndarray:
    """The photograph of the active camera through the grey camera model, (H, W) uint8."""
    set_pass(spec, mask=False)
    return sensor_response(render_pixels(scratch / "image.exr"), spec["sensor"], np.random.default_rng(seed))


def render_view(spec: dict, scratch: Path, files: dict[str, Path], seed: int) -> None:
    """Render the mask pass and the photograph of the active camera and write the view's files."""
    bpy.context.scene.cycles.seed = seed
    object_mask, defect_mask = render_masks(spec, scratch)
    image = render_photo(spec, scratch, seed)
    if "defect_mask" in files:
        write_grey_png_atomic(files["defect_mask"], defect_mask)
    write_grey_png_atomic(files["object_mask"], object_mask)
    write_grey_png_atomic(files["image"], image)


def view_record(
    spec: dict, out: Path, files: dict[str, Path], camera: bpy.types.Object, light: bpy.types.Object
) -> dict:
    """The manifest fields that depend on the camera and the files (the caller adds the view keys)."""
    return {
        "profile": spec["profile"],
        "files": {key: str(path.relative_to(out)) for key, path in files.items()},
        "camera_pose": camera_pose(camera),
        "light": {"location_m": [round(v, 6) for v in light.matrix_world.translation], "energy_w": light.data.energy},
        "samples": spec["samples"],
        "resolution": [spec["width"], spec["height"]],
    }
