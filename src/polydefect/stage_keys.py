"""Stage-cache keys made from everything that determines a stage's output, so a reused stage is never stale.

A key (`StageKey`, built by `stage_key`) hashes named parts of three kinds:

- **settings**: the config values the stage reads;
- **data** (`data_fingerprint`): every row of the sample tables the stage reads and, for each file they list
  (images, object and defect masks, and for the detect stage the segment stage's predicted masks), its path,
  size and modification time (`data.fingerprint=stat`, a stat call per file) or a hash of its bytes
  (`content`, streamed in a thread pool: data extracted again in place keeps its keys, a file rewritten with its
  old time does not). Replacing an image under the same `data.root` changes the key, and so does a segment
  stage rebuilt under its old key (after `cache clear`) for the detect stage that reads its masks;
- **code** (`code_fingerprint`): polydefect's version and the source bytes of the stage's module, of the
  polydefect classes its settings name (`_target_`: Hydra imports them by name, so no import statement leads
  to them) and of every polydefect module those import, transitively, found by walking their `import`
  statements with `ast`, the ones inside functions included (`pipeline/data.py` imports `polydefect.synth` only
  when rendering). `ast`, not `sys.modules`: a key must not depend on what the process happened to import
  before; the stage's import closure, not the whole package: editing the evaluate stage must not retrain the
  U-Net. Hashing bytes, a comment change invalidates too, as does every change to the code the stage runs.
  Not hashed: third-party packages (torch, Lightning, the backbones' weight packages) and modules imported by a
  computed name (polydefect has none).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    from polydefect.data.splits import DataSplits

FINGERPRINTS = ("stat", "content")  # `data.fingerprint`: how a data file enters a key
ROLES = ("train", "val", "test")
SRC = Path(__file__).resolve().parent  # the polydefect package, whose modules the code fingerprint reads


def _plain(part: Any) -> Any:
    return OmegaConf.to_container(part, resolve=True) if isinstance(part, DictConfig | ListConfig) else part


def config_key(*parts: Any) -> str:
    """A short stable hash of config parts (DictConfigs are resolved first)."""
    plain = [_plain(p) for p in parts]
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class StageKey:
    """The named parts that determine a stage's output; `digest` is the cache key they hash to."""

    parts: dict[str, Any]

    @cached_property
    def digest(self) -> str:
        return config_key(*self.parts.values())

    def summary(self) -> dict[str, Any]:
        """Short parts as they are and the others as their own hash: two builds' provenance shows which differed."""
        short = (str, int, float, bool)
        return {k: v if isinstance(v, short) and len(str(v)) <= 80 else config_key(v) for k, v in self.parts.items()}


def _file_stat(path: str) -> str:
    status = os.stat(path)
    return f"{status.st_size} {status.st_mtime_ns}"


def _file_content(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_fingerprint(splits: DataSplits, columns: Sequence[str], mode: str) -> str:
    """What a stage reads of the data: the rows of each split and the files in `columns` (`mode`: stat or content).

    A column a table lacks is skipped: `predicted_mask_path` exists only once a segmenter has written masks.
    """
    digest, paths = hashlib.sha256(), set()
    for role in ROLES:
        table = getattr(splits, role)
        digest.update(json.dumps([role, table.to_dict("records")], sort_keys=True, default=str).encode())
        paths.update(p for column in columns if column in table for p in table[column] if isinstance(p, str) and p)
    ordered = sorted(paths)
    if mode == "content":
        with ThreadPoolExecutor() as pool:  # hashlib and file reads release the GIL
            seen = list(pool.map(_file_content, ordered))
    else:
        seen = [_file_stat(p) for p in ordered]
    for path, state in zip(ordered, seen, strict=True):
        digest.update(f"{path}\0{state}\n".encode())
    return f"{mode} of {len(ordered)} files {digest.hexdigest()[:16]}"


def polydefect_version() -> str:
    return metadata.version("polydefect")


def _module_file(name: str) -> Path | None:
    """The source of polydefect module `name`; None where `name` is no polydefect module (a class, a function)."""
    parts = name.split(".")
    if parts[0] != "polydefect":
        return None
    base = SRC.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(name: str, source: Path) -> Iterator[str]:
    """Every module name `source` imports (or may: `from a import b` names both a and a.b), anywhere in it."""
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source.read_bytes(), str(source))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package.rsplit('.', node.level - 1)[0]}.{base}".rstrip(".")
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _with_packages(name: str) -> Iterator[str]:
    """`name` and the packages above it, whose `__init__` runs when it is imported."""
    parts = name.split(".")
    yield from (".".join(parts[:end]) for end in range(1, len(parts) + 1))


def _dotted_names(config: Any) -> Iterator[str]:
    """The `polydefect.` strings in a config: the classes and functions Hydra instantiates by name."""
    plain = _plain(config)
    if isinstance(plain, dict):
        plain = list(plain.values())
    if isinstance(plain, list):
        for value in plain:
            yield from _dotted_names(value)
    elif isinstance(plain, str) and plain.startswith("polydefect."):
        yield plain


def _import_closure(roots: Iterable[str]) -> dict[str, Path]:
    """Each polydefect module the roots need, by name: the roots (or the modules defining them) and their imports."""
    found: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        while name and _module_file(name) is None:  # polydefect.models.cae.ConvAutoencoder -> polydefect.models.cae
            name = name.rpartition(".")[0]
        for module in _with_packages(name) if name else ():
            if module not in found and (source := _module_file(module)):
                found[module] = source
                pending.extend(_imported_names(module, source))
    return found


def code_fingerprint(module: str, *configs: Any) -> str:
    """polydefect's version and a hash of the source of `module`, of the classes `configs` name, and of all the
    polydefect modules they import."""
    sources = _import_closure([module, *(name for config in configs for name in _dotted_names(config))])
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(f"{name}\0".encode() + sources[name].read_bytes() + b"\0")
    return f"polydefect {polydefect_version()}, {len(sources)} modules {digest.hexdigest()[:16]}"


def stage_key(module: str, settings: dict[str, Any], files: str) -> StageKey:
    """The key of the stage computed in `module`: its settings, the fingerprint of its data `files`, and the code
    of `module` and of every polydefect class the settings name."""
    return StageKey({**settings, "files": files, "code": code_fingerprint(module, *settings.values())})
