"""The documented team set-up on loopback: `mlflow server` with a PostgreSQL backend store and an artifact root
it serves itself, so clients need only its HTTP address."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from services.postgres import database
from services.processes import daemon, free_port, wait_for


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@functools.cache
def server(workers: int = 2) -> str:
    """Start (once per process) PostgreSQL and an MLflow server on a free loopback port; returns its URL."""
    backend = database()
    root = Path(tempfile.mkdtemp(prefix="polydefect-mlflow-server-"))
    atexit.register(shutil.rmtree, root, True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    args += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    daemon(args, root / "server.log", env)
    wait_for(lambda: _healthy(url), "mlflow server", 120, [root / "server.log"])
    return url
