"""Changing a data file as a user would, and holding a stage's lock from another process as a running job does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2


def replace_image(path: Path) -> None:
    """Write other pixels to `path`, with a modification time a second later than the old one's."""
    before = path.stat().st_mtime_ns
    cv2.imwrite(str(path), 255 - cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    os.utime(path, ns=(before + 10**9, before + 10**9))


@contextmanager
def image_replaced(path: Path) -> Iterator[None]:
    """`path` replaced (`replace_image`) inside the block and put back after it, bytes and modification time, so
    data other tests share leaves the block as it entered it."""
    before, status = path.read_bytes(), path.stat()
    replace_image(path)
    try:
        yield
    finally:
        path.write_bytes(before)
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the fcntl lock on `path` (fcntl locks are per process) until told, by a line on its
    stdin, to delete the file and exit."""
    holder = (
        "import fcntl, os, sys; handle = open(sys.argv[1], 'a'); fcntl.lockf(handle, fcntl.LOCK_EX); print('held',"
        " flush=True); sys.stdin.readline(); os.unlink(sys.argv[1])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "held\n"
    return process
