"""What every service starter needs: binaries or a skip, free loopback ports, daemons stopped at exit, waiting."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


def require(*binaries: str, root: bool = False) -> None:
    """Skip with a reason where a binary (or root) is missing; in CI (`CI=true`) fail instead, never skip."""
    missing = [b for b in binaries if shutil.which(b) is None]
    reasons = [f"missing {', '.join(missing)} (install: tests/services/install.sh)"] if missing else []
    if root and os.geteuid() != 0:
        reasons.append("needs root (daemons switch users and run jobs as root)")
    if reasons:
        if os.environ.get("CI") == "true":
            pytest.fail("; ".join(reasons) + ", and CI must run the service tests")
        pytest.skip("; ".join(reasons))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 60, logs: Sequence[Path] = ()) -> None:
    """Poll `ready` until true; on timeout raise, quoting the end of each log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.is_file())
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tails}")


def daemon(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.Popen:
    """Start a foreground daemon in its own session (test signals never reach it), as `user` if given; it is
    stopped when the process exits."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    atexit.register(stop, process)
    return process


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to the daemon's process group (its workers too), then SIGKILL after `grace` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
