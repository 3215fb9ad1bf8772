"""A throw-away PostgreSQL server on loopback for the MLflow backend store (Debian's postgresql package).

The cluster lives in a temp folder owned by the `postgres` user (initdb refuses root), trusts local
connections and skips fsync: it holds test runs only.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from services.processes import daemon, free_port, require, wait_for

USER = "postgres"


def bindir() -> Path:
    """Where initdb and postgres are: on PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return versions[-1] if versions else Path("/nonexistent")


@functools.cache
def database(name: str = "mlflow") -> str:
    """Start (once per process) PostgreSQL on a free loopback port with database `name`; returns its URL."""
    bin_ = bindir()
    require(str(bin_ / "initdb"), str(bin_ / "postgres"), "psql", root=True)
    root = Path(tempfile.mkdtemp(prefix="polydefect-postgres-"))
    atexit.register(shutil.rmtree, root, True)  # registered first, so it runs after the server stopped
    user = pwd.getpwnam(USER)
    os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    subprocess.run(
        [str(bin_ / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync"],
        user=USER,
        group=USER,
        extra_groups=[],
        check=True,
        capture_output=True,
        cwd=root,
    )
    args = [str(bin_ / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root)]
    args += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
    daemon(args, root / "postgres.log", user=USER)
    psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", "postgres", "-tAc"]

    def accepting() -> bool:
        return subprocess.run([*psql, "SELECT 1"], capture_output=True).returncode == 0

    wait_for(accepting, "PostgreSQL", 60, [root / "postgres.log"])
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{name}"
