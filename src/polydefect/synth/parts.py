"""Resolve `synth.part` into the part entries the render script loads: procedural bricks, mesh files, LDraw parts.

Each entry carries what makes its pixels (a file's content hash, its scale and up axis), so the cache key of the
render changes whenever a part does. LDraw parts are converted to .glb here (polydefect.synth.ldraw).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import DictConfig

from polydefect.synth.ldraw import LDRAW_PREFIX, LDRAW_SUFFIXES, ldraw_mesh
from polydefect.synth.spec import SynthConfigError, cache_root

PROCEDURAL = re.compile(r"^brick\d+x\d+$")
MESH_SUFFIXES = (".stl", ".obj", ".glb", ".gltf", ".blend")


def _file_entry(path: Path, scale: float, up: str, source: str) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return {"kind": "file", "path": str(path), "scale": scale, "up": up, "sha256": digest, "source": source}


def resolve_part(part: str, cfg: DictConfig) -> dict:
    """The render script's entry for one `synth.part` value."""
    if PROCEDURAL.match(part):
        return {"kind": "procedural", "name": part, "source": part}
    suffix = Path(part).suffix.lower()
    if part.startswith(LDRAW_PREFIX) or suffix in LDRAW_SUFFIXES:
        glb = ldraw_mesh(part, cfg.get("ldraw_dir"), cfg.get("studs", "logo"), cache_root(cfg) / "meshes")
        return _file_entry(glb, 1.0, "z", part)  # ldraw2mesh writes metres; Blender's glTF import turns y-up to z-up
    if suffix not in MESH_SUFFIXES:
        raise SynthConfigError(
            f"synth.part: {part!r} is none of brick<W>x<L>, ldraw:<id>, an LDraw file ({'/'.join(LDRAW_SUFFIXES)}) "
            f"or a mesh file ({'/'.join(MESH_SUFFIXES)})"
        )
    path = Path(part).expanduser().resolve()
    if not path.is_file():
        raise SynthConfigError(f"synth.part: part file {path} does not exist")
    return _file_entry(path, float(cfg.part_scale), str(cfg.part_up), part)


def resolve_parts(spec: dict, cfg: DictConfig) -> dict:
    """The spec with `part` as a list of entries (one per holder slot, repeated in turn)."""
    entries = spec["part"] if isinstance(spec["part"], list) else [spec["part"]]
    if not entries:
        raise SynthConfigError("synth.part: empty list; give at least one part")
    return {**spec, "part": [resolve_part(str(entry), cfg) for entry in entries]}
