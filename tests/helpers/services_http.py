"""A server started for a test as its own process on loopback: up once its /health answers, stopped after."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def http_server(command: list[str], port: int, log: Path, name: str, timeout: float) -> Iterator[str]:
    """Run `command` (a server on 127.0.0.1:`port`) with its output in `log`; yield its URL once GET /health
    answers 200, and stop it (SIGTERM, then SIGKILL after 20 s) afterwards."""
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"{name} exited with {server.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} on {url} not up after {timeout} s") from None
                    time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
