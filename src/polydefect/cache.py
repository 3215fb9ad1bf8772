"""`python -m polydefect.cache list|clear`: what the stage cache holds and who built it, and removing it safely.

    python -m polydefect.cache list [--root DIR]
    python -m polydefect.cache clear [--stage S] [--key K] [--partial] [--root DIR]

`clear` removes every entry unless told which, printing each first. It takes each key's build lock before
removing its folder, so a job building that key is never cut short: its entry is skipped, with a message.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polydefect.stage_cache import StageCache, read_provenance

PARTIAL = ".partial"


def default_root() -> Path:
    """`paths.cache_dir`'s default (config.py), without importing the config (and torch with it)."""
    return Path(os.environ.get("XDG_CACHE_HOME", f"{os.environ['HOME']}/.cache")) / "polydefect" / "stages"


@dataclass
class Entry:
    """One folder of the cache: a finished stage (`<stage>/<key>/`) or an unfinished one (`<stage>/.<key>.partial/`)."""

    stage: str
    key: str
    folder: Path
    complete: bool

    def size(self) -> int:
        return sum(path.stat().st_size for path in self.folder.rglob("*") if path.is_file())


def entries(cache: StageCache) -> list[Entry]:
    """Every stage folder under the cache's root, by stage and key."""
    found = []
    stages = sorted(path for path in cache.root.iterdir() if path.is_dir()) if cache.root.is_dir() else []
    for stage in stages:
        for folder in sorted(path for path in stage.iterdir() if path.is_dir()):
            if folder.name.startswith(".") and folder.name.endswith(PARTIAL):
                found.append(Entry(stage.name, folder.name[1 : -len(PARTIAL)], folder, complete=False))
            elif not folder.name.startswith("."):
                found.append(Entry(stage.name, folder.name, folder, cache.is_complete(stage.name, folder.name)))
    return found


def state(cache: StageCache, entry: Entry) -> str:
    """complete, building (a job holds its key's lock) or partial (left by a stopped job: the next run resumes it)."""
    if entry.complete:
        return "complete"
    if not cache.lock_path(entry.stage, entry.key).exists():
        return "partial"
    with cache.locked(entry.stage, entry.key, wait=False) as free:
        return "partial" if free else "building"


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def list_entries(cache: StageCache) -> None:
    found = entries(cache)
    if not found:
        print(f"no cached stages in {cache.root}")
        return
    rows = [("stage", "key", "size", "built", "by run", "state")]
    sizes = [entry.size() for entry in found]  # one walk per entry: a segment entry holds a mask per image
    for entry, size in zip(found, sizes, strict=True):
        built = read_provenance(entry.folder)
        rows.append(
            (
                entry.stage,
                entry.key,
                human_size(size),
                built.get("built_at", "-"),
                built.get("run_id") or "-",
                state(cache, entry),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"{len(found)} entries, {human_size(sum(sizes))} in {cache.root}")


def clear(cache: StageCache, stage: str | None, key: str | None, partial: bool) -> None:
    """Remove the entries of `stage`, whose key starts with `key`, only unfinished ones if `partial` (None: all)."""
    chosen = [
        entry
        for entry in entries(cache)
        if (stage is None or entry.stage == stage)
        and (key is None or entry.key.startswith(key))
        and not (partial and entry.complete)
    ]
    if not chosen:
        print(f"nothing to remove in {cache.root}")
    for entry in chosen:
        with cache.locked(entry.stage, entry.key, wait=False) as free:
            if not free:
                print(f"skipping {entry.folder}: a job is building it (it holds the key's lock)")
                continue
            # not `state`: probing the lock from a second handle would release this one (fcntl locks are per process)
            print(
                f"removing {entry.folder} ({human_size(entry.size())}, {'complete' if entry.complete else 'partial'})"
            )
            shutil.rmtree(entry.folder)
            if (
                not cache.path(entry.stage, entry.key).exists()
                and not cache.partial_path(entry.stage, entry.key).exists()
            ):
                cache.lock_path(entry.stage, entry.key).unlink()  # a job waiting on it retries (StageCache.locked)


def main(argv: Sequence[str] | None = None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=default_root(), help="the cache (default: %(default)s)")
    parser = argparse.ArgumentParser(prog="python -m polydefect.cache", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="each entry: stage, key, size, built when, by which run")
    remove = commands.add_parser("clear", parents=[common], help="remove entries (all unless told which)")
    remove.add_argument("--stage", help="only this stage's entries (segment, detect)")
    remove.add_argument("--key", help="only the entries whose key starts with this")
    remove.add_argument("--partial", action="store_true", help="only unfinished entries")
    args = parser.parse_args(argv)
    cache = StageCache(args.root)
    if args.command == "list":
        list_entries(cache)
    else:
        clear(cache, args.stage, args.key, args.partial)


if __name__ == "__main__":
    main()
