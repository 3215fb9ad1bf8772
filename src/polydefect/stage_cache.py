"""Stage outputs cached under a key made from everything that determines them (`stage_keys`).

A sweep over autoencoder settings then reuses the trained segmenter, and a stopped sweep resumes: a stage's
folder is built under `.<key>.partial` (kept after a crash, so training can resume from its last checkpoint)
and renamed into place only when complete, with a `provenance.json` saying which run built it, when, and from
which key parts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polydefect.stage_keys import StageKey, polydefect_version

log = logging.getLogger(__name__)
DONE = ".complete"
PROVENANCE = "provenance.json"
BUILT_BY_TAG = "stage_cache_built_by"


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
