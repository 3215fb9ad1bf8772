"""Turn a `synth` config node into the render spec the Blender script reads, and the cache key of that spec.

The spec is everything that changes the pixels: the profile's keys resolved at its `size` (width, height,
batches, positions and samples interpolate from `sizes`), minus where and with what the render runs. The key
also covers the render script's own source, so editing the scene builder never reuses stale images.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

RUN_KEYS = (
    "blender",
    "script",
    "cache_dir",
    "size",
    "sizes",
    "ldraw_dir",
    "studs",
)  # how and where, or folded into parts
REQUIRED_KEYS = (
    "profile", "seed", "device", "compute_device_type", "threads", "samples", "denoiser", "width", "height",
    "batches", "positions", "defective_batches", "part", "part_scale", "part_up", "layout", "jitter", "indicator",
    "camera", "light", "material", "holder", "sensor", "defects", "ldraw_colors", "arrangement", "posed",
)  # fmt: skip
ARRANGEMENTS = ("holder", "posed")  # the scanner's holder (thesis layout) | one part per image (MVTec layout)
POSED_KEYS = (
    "train", "test_good", "test_defective", "rests", "elevation_deg", "distance_m", "light_elevation_deg",
    "light_energy_w", "shift_m", "min_defect_px",
)  # fmt: skip
RESTS = ("upright", "upside_down", "on_side", "on_end")
DENOISERS = ("fast", "balanced", "high", "none")
SCRIPT_DIR = Path(__file__).resolve().parents[3] / "blender_scenes"


class SynthConfigError(ValueError):
    """A `synth` config key is missing or has a value the renderer cannot use; the message names the key."""


def render_script(cfg: DictConfig) -> Path:
    """The render script: `synth.script`, else blender_scenes/render.py next to this checkout's src/."""
    script = Path(cfg.script).expanduser() if cfg.get("script") else SCRIPT_DIR / "render.py"
    if not script.is_file():
        raise SynthConfigError(f"synth.script: render script {script} does not exist")
    return script.resolve()


def render_spec(cfg: DictConfig) -> dict:
    """The resolved spec of one profile at its size, as plain JSON-able data."""
    sizes = cfg.get("sizes") or {}
    if cfg.get("size") not in sizes:
        raise SynthConfigError(f"synth.size: {cfg.get('size')!r} is not one of synth.sizes {sorted(sizes)}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    spec = {key: value for key, value in resolved.items() if key not in RUN_KEYS}
    missing = [key for key in REQUIRED_KEYS if key not in spec]
    if missing:
        raise SynthConfigError(f"synth: missing keys {missing}")
    unknown = set(spec) - set(REQUIRED_KEYS)
    if unknown:
        raise SynthConfigError(f"synth: unknown keys {sorted(unknown)}")
    if spec["denoiser"] not in DENOISERS:
        raise SynthConfigError(f"synth.denoiser: {spec['denoiser']!r}; choose one of {list(DENOISERS)}")
    if spec["device"] not in ("CPU", "GPU"):
        raise SynthConfigError(f"synth.device: {spec['device']!r}; choose CPU or GPU")
    for key in ("width", "height", "batches", "positions", "samples"):
        if not isinstance(spec[key], int) or spec[key] < 1:
            raise SynthConfigError(f"synth.{key}: must be a positive integer, got {spec[key]!r}")
    bad = [b for b in spec["defective_batches"] if not 1 <= b <= spec["batches"]]
    if bad:
        raise SynthConfigError(f"synth.defective_batches: {bad} outside batches 1..{spec['batches']}")
    if spec["arrangement"] not in ARRANGEMENTS:
        raise SynthConfigError(f"synth.arrangement: {spec['arrangement']!r}; choose one of {list(ARRANGEMENTS)}")
    if spec["arrangement"] == "posed":
        check_posed(spec["posed"] or {})
    return spec


def check_posed(posed: dict) -> None:
    """The `synth.posed` keys of the posed arrangement: image counts, resting poses, and the ranges drawn."""
    missing = [key for key in POSED_KEYS if key not in posed]
    if missing:
        raise SynthConfigError(f"synth.posed: missing keys {missing}")
    for key in ("train", "test_good", "test_defective"):
        if not isinstance(posed[key], int) or posed[key] < (1 if key == "train" else 0):
            raise SynthConfigError(
                f"synth.posed.{key}: must be a non-negative integer (train: positive), got {posed[key]!r}"
            )
    unknown = sorted(set(posed["rests"]) - set(RESTS))
    if unknown or not posed["rests"]:
        raise SynthConfigError(f"synth.posed.rests: {list(posed['rests'])}; choose from {list(RESTS)}")


def spec_key(spec: dict, script: Path) -> str:
    """A short hash of the spec and of every source file of the render script's folder."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for source in sorted(script.parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def cache_root(cfg: DictConfig) -> Path:
    """`synth.cache_dir`, else $XDG_CACHE_HOME/polydefect/renders, else ~/.cache/polydefect/renders."""
    if cfg.get("cache_dir"):
        return Path(cfg.cache_dir).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "polydefect" / "renders"
