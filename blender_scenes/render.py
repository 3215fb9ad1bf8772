"""Render a data set from a JSON spec; runs under a Python with `bpy` or Blender's binary.

    python blender_scenes/render.py -- --spec spec.json --out DIR
    blender -b --factory-startup -P blender_scenes/render.py -- --spec spec.json --out DIR

The holder arrangement writes DIR/batch_NN/{images,object_masks,defect_masks}/pPP_cC.png (the thesis layout), the
posed one the MVTec AD layout (blender_scenes/posed.py); both write DIR/manifest.jsonl. Views whose files
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
from capture import progress, render_view, view_record
from posed import render_posed
from scene import build_holder, build_rig, configure_render, indicator_knobs, place_parts, reset_scene

FOLDERS = {"image": "images", "object_mask": "object_masks", "defect_mask": "defect_masks"}  # thesis layout


def _arguments() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON render spec (written by polydefect.synth)")
    parser.add_argument("--out", type=Path, required=True, help="data set root")
    return parser.parse_args(argv)


def render_holder(spec: dict, out: Path) -> None:
    """The holder arrangement: every batch's parts on the holder, every view of the scanner path."""
    rig = build_rig(spec)
    build_holder(spec)
    scene = bpy.context.scene
    views = [(position, camera) for position in range(1, spec["positions"] + 1) for camera in range(2)]
    total, done, rendered = spec["batches"] * len(views), 0, 0
    manifest, mesh_cache = [], {}
    progress(done=0, total=total, rendered=0)
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
                    render_view(spec, Path(scratch), files, seed)
                    rendered += 1
                    print(f"rendered {files['image']} in {time.perf_counter() - started:.2f} s", flush=True)
                done += 1
                progress(done=done, total=total, rendered=rendered, view=f"batch_{batch:02d}/{view}")
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
                        **view_record(spec, out, files, scene.camera, rig["light"]),
                    }
                )
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in manifest)
    tmp = out / f".manifest.jsonl.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "manifest.jsonl")


def main() -> None:
    args = _arguments()
    spec = json.loads(args.spec.read_text())
    out: Path = args.out
    for stale in out.glob("**/.*.tmp"):  # left by a killed run; never data, as their names start with a dot
        stale.unlink()
    reset_scene()
    configure_render(spec)
    if spec["arrangement"] == "posed":
        with tempfile.TemporaryDirectory(prefix="polydefect-render-") as scratch:
            render_posed(spec, out, Path(scratch))
    else:
        render_holder(spec, out)


if __name__ == "__main__":
    main()
