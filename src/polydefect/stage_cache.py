"""Stage outputs cached under a key made from the config that determines them.

A sweep over autoencoder settings then reuses the trained segmenter, and a stopped sweep resumes: a stage's
folder is built under `.<key>.partial` (kept after a crash, so training can resume from its last checkpoint)
and renamed into place only when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
DONE = ".complete"


def config_key(*parts: Any) -> str:
    """A short stable hash of config parts (DictConfigs are resolved first)."""
    plain = [OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p for p in parts]
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:16]


class StageCache:
    """Folders of finished stage outputs, `root/<stage>/<key>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def partial_path(self, stage: str, key: str) -> Path:
        """Where an unfinished stage writes; it survives a crash so the next run can resume."""
        return self.root / stage / f".{key}.partial"

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / DONE).is_file()

    def build(self, stage: str, key: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
        """Return the stage's folder, running `make(folder)` only if no complete one exists.

        Returns:
            (folder, hit): `hit` is True when the cached result was reused.
        """
        final = self.path(stage, key)
        if self.is_complete(stage, key):
            log.info("Stage %s: reusing cached result %s", stage, final)
            return final, True
        work = self.partial_path(stage, key)
        work.parent.mkdir(parents=True, exist_ok=True)
        with open(work.parent / f".{key}.lock", "a") as lock:
            # parallel jobs (joblib, SLURM array tasks) needing the same stage: one builds it, the others wait
            fcntl.lockf(lock, fcntl.LOCK_EX)
            if self.is_complete(stage, key):
                log.info("Stage %s: reusing the result a parallel job built %s", stage, final)
                return final, True
            if work.exists():
                log.info("Stage %s: resuming partial result %s", stage, work)
            work.mkdir(exist_ok=True)
            make(work)
            (work / DONE).write_text(key)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        return final, False
