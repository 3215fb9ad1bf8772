"""Render a synthetic data set once and reuse it: cache folder by spec hash, resumable subprocess, progress bar.

A folder without its completion marker is unfinished; rerunning resumes it, as the script skips views whose
files exist and every file appears by rename, so a half-written image is never read as data.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from polydefect.synth.parts import resolve_parts
from polydefect.synth.spec import cache_root, render_script, render_spec, spec_key

COMPLETE = ".complete"
PROGRESS_PREFIX = "@@progress "


class RenderError(RuntimeError):
    """The renderer failed; the message names the command, the log file and its last lines."""


def _die_with_parent() -> None:
    """Linux: the renderer gets SIGKILL when the Python that started it dies, so no orphan keeps rendering."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def render_command(cfg: DictConfig, script: Path, spec_path: Path, out: Path) -> list[str]:
    """The renderer's command line: a Blender binary gets -b -P, any Python (with bpy) runs the script directly."""
    interpreter = cfg.get("blender") or sys.executable
    args = ["--", "--spec", str(spec_path), "--out", str(out)]
    if Path(interpreter).name.lower().startswith("blender"):
        return [interpreter, "-b", "--factory-startup", "--python-exit-code", "1", "-P", str(script), *args]
    return [interpreter, str(script), *args]


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _expected_files(spec: dict) -> int:
    """Images, object masks and defect masks the spec makes."""
    if spec["arrangement"] == "posed":
        posed = spec["posed"]
        return 2 * (posed["train"] + posed["test_good"] + posed["test_defective"]) + posed["test_defective"]
    views = spec["positions"] * 2
    return spec["batches"] * views * 2 + len(spec["defective_batches"]) * views


def _count_files(root: Path, arrangement: str) -> int:
    pattern = "batch_*/*/*.png" if arrangement == "holder" else "**/[!.]*.png"
    return sum(1 for path in root.glob(pattern))


def _run(command: list[str], log_path: Path, show: bool, title: str) -> None:
    """Run the renderer, log its output, move the progress bar on its "@@progress" lines."""
    tail: deque[str] = deque(maxlen=25)
    columns = (TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with log_path.open("a") as log, Progress(*columns, disable=not show, transient=False) as bar:
        task = bar.add_task(title, total=None)
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        try:
            for line in process.stdout:
                log.write(line)
                tail.append(line.rstrip())
                if line.startswith(PROGRESS_PREFIX):
                    state = json.loads(line.removeprefix(PROGRESS_PREFIX))
                    bar.update(task, completed=state["done"], total=state["total"])
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if returncode != 0:
        lines = "\n".join(tail)
        raise RenderError(f"renderer failed (exit {returncode}): {' '.join(command)}\nlog: {log_path}\n{lines}")


def ensure_rendered(cfg: DictConfig, progress: bool = True) -> Path:
    """Render the data set of a `synth` profile unless the cache has it; return its root (the thesis layout for
    the holder arrangement, the MVTec AD layout for the posed one).

    Args:
        cfg: the composed `synth` node of one profile (conf/synth/*.yaml).
        progress: show a progress bar (rich) while rendering.

    Returns:
        The data set root: batch_NN/{images,object_masks,defect_masks}/pPP_cC.png (holder) or train/, test/,
        ground_truth/ and object_masks/ (posed), and manifest.jsonl.
    """
    script = render_script(cfg)
    spec = resolve_parts(render_spec(cfg), cfg)
    root = cache_root(cfg) / f"{spec['profile']}-{spec_key(spec, script)}"
    if (root / COMPLETE).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "spec.json"
    _write_json_atomic(spec_path, spec)
    started = time.perf_counter()
    title = f"rendering {spec['profile']} ({cfg.size})"
    _run(render_command(cfg, script, spec_path, root), root / "render.log", progress, title)
    found, expected = _count_files(root, spec["arrangement"]), _expected_files(spec)
    if found != expected or not (root / "manifest.jsonl").is_file():
        raise RenderError(f"{root}: renderer finished but left {found} of {expected} images and masks; see render.log")
    _write_json_atomic(root / COMPLETE, {"files": found, "seconds": round(time.perf_counter() - started, 1)})
    return root
