"""Stage outputs cached under a key made from everything that determines them, so a reused stage is never stale.

A sweep over autoencoder settings then reuses the trained segmenter, and a stopped sweep resumes: a stage's
folder is built under `.<key>.partial` (kept after a crash, so training can resume from its last checkpoint)
and renamed into place only when complete, with a `provenance.json` saying which run built it, when, and from
which key parts.

A key (`StageKey`) hashes named parts of three kinds:

- **settings**: the config values the stage reads;
- **data** (`data_fingerprint`): every row of the sample tables the stage reads and, for each file they list
  (images, object and defect masks), its path, size and modification time (`data.fingerprint=stat`, a stat
  call per file) or a hash of its bytes (`content`, streamed in a thread pool: data extracted again in place
  keeps its keys, a file rewritten with its old time does not). Replacing an image under the same `data.root`
  changes the key;
- **code** (`code_fingerprint`): polydefect's version and the source bytes of the stage's module, of the
  polydefect classes its config names (`_target_`: Hydra imports them by name, so no import statement leads
  to them) and of every polydefect module those import, transitively, found by walking their `import`
  statements with `ast`, the ones inside functions included (`pipeline/data.py` imports `polydefect.synth` only
  when rendering). `ast`, not `sys.modules`: a key must not depend on what the process happened to import
  before; the stage's import closure, not the whole package: editing the evaluate stage must not retrain the
  U-Net. Hashing bytes, a comment change invalidates too, as does every change to the code the stage runs.
  Not hashed: third-party packages (torch, Lightning) and modules imported by a computed name (polydefect has
  none).
"""

from __future__ import annotations

import ast
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    from polydefect.data.splits import DataSplits

log = logging.getLogger(__name__)
DONE = ".complete"
PROVENANCE = "provenance.json"
FINGERPRINTS = ("stat", "content")  # `data.fingerprint`: how a data file enters a key
ROLES = ("train", "val", "test")
SRC = Path(__file__).resolve().parent  # the polydefect package, whose modules the code fingerprint reads
BUILT_BY_TAG = "stage_cache_built_by"


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

    `predicted_mask_path` is left out: it is the segment stage's output, which the segment key covers.
    """
    digest, paths = hashlib.sha256(), set()
    for role in ROLES:
        table = getattr(splits, role).drop(columns="predicted_mask_path", errors="ignore")
        digest.update(json.dumps([role, table.to_dict("records")], sort_keys=True, default=str).encode())
        paths.update(p for column in columns for p in table[column] if isinstance(p, str) and p)
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


def read_provenance(folder: Path) -> dict[str, Any]:
    """Who built a stage folder, or {} for one built before provenance was recorded."""
    path = folder / PROVENANCE
    return json.loads(path.read_text()) if path.is_file() else {}


def _tag_built_by(run_id: str) -> None:
    """Name the run that built a stage's folder on the active MLflow run, if any. mlflow is imported here and in
    `_provenance`: `python -m polydefect.cache` lists folders without loading it (a second to import)."""
    import mlflow

    if mlflow.active_run():
        mlflow.set_tag(BUILT_BY_TAG, run_id)


def _provenance(stage: str, key: StageKey) -> dict[str, Any]:
    import mlflow

    run = mlflow.active_run()
    return {
        "stage": stage,
        "key": key.digest,
        "run_id": run.info.run_id if run else None,
        "parent_run_id": run.data.tags.get("mlflow.parentRunId") if run else None,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "polydefect": polydefect_version(),
        "parts": key.summary(),
    }


def _lock(handle: Any, wait: bool) -> bool:
    """Lock the open file exclusively; False where another process holds it and `wait` is False."""
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        return False
    return True


def _still_at(path: Path, handle: Any) -> bool:
    """Whether the open file `handle` is still the file at `path` (not deleted, nor replaced)."""
    try:
        return os.path.samefile(path, handle.fileno())
    except FileNotFoundError:
        return False


class StageCache:
    """Folders of finished stage outputs, `root/<stage>/<key>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def partial_path(self, stage: str, key: str) -> Path:
        """Where an unfinished stage writes; it survives a crash so the next run can resume."""
        return self.root / stage / f".{key}.partial"

    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f".{key}.lock"

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / DONE).is_file()

    @contextmanager
    def locked(self, stage: str, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the key's lock (fcntl: it also holds across a cluster's hosts on NFS); yields False at once if
        another process holds it and `wait` is False.

        The lock file is checked to still be the one at its path once locked: `cache clear` deletes the lock files
        it holds, and a job that opened one before must not build under a lock no later job can see.
        """
        path = self.lock_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            with open(path, "a") as handle:
                held = _lock(handle, wait)
                if not held or _still_at(path, handle):
                    yield held
                    return

    def _reuse(self, stage: str, folder: Path, how: str) -> tuple[Path, bool]:
        """Report which run built the reused folder, in the log and as a tag of the active MLflow run."""
        built = read_provenance(folder)
        run_id, built_at = built.get("run_id") or "unknown", built.get("built_at", "an unknown time")
        log.info("Stage %s: %s %s built by run %s at %s", stage, how, folder, run_id, built_at)
        _tag_built_by(run_id)
        return folder, True

    def build(self, stage: str, key: StageKey, make: Callable[[Path], None]) -> tuple[Path, bool]:
        """Return the stage's folder, running `make(folder)` only if no complete one exists.

        Returns:
            (folder, hit): `hit` is True when the cached result was reused.
        """
        digest = key.digest
        final = self.path(stage, digest)
        if self.is_complete(stage, digest):
            return self._reuse(stage, final, "reusing cached result")
        work = self.partial_path(stage, digest)
        # parallel jobs (joblib, SLURM array tasks) needing the same stage: one builds it, the others wait
        with self.locked(stage, digest):
            if self.is_complete(stage, digest):
                return self._reuse(stage, final, "reusing the result a parallel job built")
            if work.exists():
                log.info("Stage %s: resuming partial result %s", stage, work)
            work.mkdir(exist_ok=True)
            make(work)
            provenance = _provenance(stage, key)
            (work / PROVENANCE).write_text(json.dumps(provenance, indent=2))
            (work / DONE).write_text(digest)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        _tag_built_by(provenance["run_id"])
        return final, False
