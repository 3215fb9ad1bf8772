"""LDraw parts for the renders: check a part and everything it references, convert it to glTF once, cache it.

The conversion is `ldraw2mesh` (logo studs, welded vertices, metres); this module only resolves names and
checks references, so a missing part, library or subfile fails here with a message naming all three, before
Blender starts.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from importlib.metadata import version
from pathlib import Path

from polydefect.synth.spec import SynthConfigError

LDRAW_PREFIX = "ldraw:"
LDRAW_SUFFIXES = (".dat", ".ldr", ".mpd")
SEARCH_FOLDERS = ("parts", "p", "models")  # where the LDraw spec looks a subfile name up, in order
STUDS = ("logo", "normal", "none", "high-contrast")


def find_library(ldraw_dir: str | None) -> Path:
    """`synth.ldraw_dir`, else what ldraw2mesh finds ($LDRAW_LIBRARY_PATH, then ~/ldraw and the usual folders)."""
    from ldraw2mesh import LDrawLibraryNotFound
    from ldraw2mesh.library import resolve_library

    try:
        return resolve_library(ldraw_dir)
    except LDrawLibraryNotFound as error:
        raise SynthConfigError(f"synth.ldraw_dir: {error}") from None


@cache
def _library_index(library: Path) -> dict[str, Path]:
    """Lower-case 'folder-relative name' -> file, for the case-insensitive lookups LDraw expects."""
    index: dict[str, Path] = {}
    for folder in SEARCH_FOLDERS:
        root = library / folder
        if not root.is_dir():
            continue
        for directory, _, files in os.walk(root):
            for name in files:
                path = Path(directory) / name
                index.setdefault(f"{folder}/{path.relative_to(root).as_posix().lower()}", path)
    return index


def _lookup(name: str, library: Path, beside: Path) -> Path | None:
    name = name.replace("\\", "/")
    local = beside / name
    if local.is_file():
        return local
    index = _library_index(library)
    for folder in SEARCH_FOLDERS:
        found = index.get(f"{folder}/{name.lower()}")
        if found is not None:
            return found
    return None


def _references(path: Path) -> tuple[list[str], set[str]]:
    """(subfile names of type-1 lines, names of files embedded in an .mpd) of one LDraw file."""
    names, embedded = [], set()
    for line in path.read_text(errors="replace").splitlines():
        tokens = line.split()
        if len(tokens) >= 15 and tokens[0] == "1":
            names.append(" ".join(tokens[14:]))
        elif len(tokens) >= 3 and tokens[:2] == ["0", "FILE"]:
            embedded.add(" ".join(tokens[2:]).replace("\\", "/").lower())
    return names, embedded


def part_file(part: str, library: Path) -> Path:
    """The file of `ldraw:<id>` (looked up in the library) or of a .dat/.ldr/.mpd path."""
    if part.startswith(LDRAW_PREFIX):
        part_id = part.removeprefix(LDRAW_PREFIX)
        name = part_id if part_id.lower().endswith(LDRAW_SUFFIXES) else f"{part_id}.dat"
        found = _lookup(name, library, library / "parts")
        if found is None:
            raise SynthConfigError(
                f"synth.part: unknown LDraw part {part_id!r}: no {name} in parts/, p/ or models/ "
                f"of the LDraw library {library}"
            )
        return found
    path = Path(part).expanduser()
    if not path.is_file():
        raise SynthConfigError(f"synth.part: LDraw file {path.resolve()} does not exist")
    return path.resolve()


def referenced_files(path: Path, library: Path, part: str) -> list[Path]:
    """The file and every subfile it uses, recursively; a missing one is an error naming part, library and name."""
    seen: dict[Path, None] = {}
    pending = [path]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen[current] = None
        names, embedded = _references(current)
        for name in names:
            if name.replace("\\", "/").lower() in embedded:
                continue
            found = _lookup(name, library, current.parent)
            if found is None:
                raise SynthConfigError(
                    f"synth.part: {part}: subfile {name!r} (used by {current.name}) is missing from the LDraw "
                    f"library {library} (searched parts/, p/, models/ and {current.parent})"
                )
            pending.append(found)
    return sorted(seen)


def ldraw_mesh(part: str, ldraw_dir: str | None, studs: str, cache_dir: Path) -> Path:
    """A .glb of the part (metres, glTF y-up), converted once per part, library content, studs and converter.

    Args:
        part: "ldraw:<id>" (e.g. ldraw:3001) or a path to a .dat/.ldr/.mpd file (whole models render as assemblies).
        ldraw_dir: the library folder, or None to let ldraw2mesh find one.
        studs: logo | normal | none | high-contrast.
        cache_dir: folder of the converted meshes.
    """
    from ldraw2mesh import EmptySceneError, convert

    if studs not in STUDS:
        raise SynthConfigError(f"synth.studs: {studs!r}; choose one of {list(STUDS)}")
    library = find_library(ldraw_dir)
    source = part_file(part, library)
    digest = hashlib.sha256(f"{studs}|{version('ldraw2mesh')}|{source.name}".encode())
    for path in referenced_files(source, library, part):
        digest.update(path.name.lower().encode() + path.read_bytes())
    target = cache_dir / f"{source.stem}-{studs}-{digest.hexdigest()[:16]}.glb"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{target.stem}.{os.getpid()}.glb"
    try:
        convert(source, tmp, ldraw_library=library, studs=studs)
        os.replace(tmp, target)
    except EmptySceneError:
        raise SynthConfigError(
            f"synth.part: {part}: {source} has no geometry (no triangles or quads in it or its subfiles; "
            f"LDraw library {library})"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
