"""The C allocator's handling of freed memory, which decides how fast PyTorch runs on a CPU.

A convolution's activations are tens of MB per layer, freed and allocated again at every forward pass.
glibc's malloc serves blocks above its mmap threshold with fresh pages and returns freed heap tops to the
system, so each pass faults its activations in again: on 2 cores that was 380 000 page faults and a quarter
of the thesis CAE's inference time for 48 windows, and a sixth of a training step (benchmarks/README.md).
Keeping freed blocks for reuse removes both; jemalloc and tcmalloc do the same by design.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
LARGEST_MB = 1024  # mallopt takes a C int: 1 GB is the largest power of two it holds


def retain_freed_memory(megabytes: int) -> bool:
    """Let glibc keep freed blocks of up to `megabytes` MB for reuse instead of unmapping them.

    Peak memory is unchanged (the blocks are reused, not added to); the process keeps its peak until it exits.
    0 leaves the allocator as it is. Returns whether the setting took effect: False off glibc (macOS,
    Windows, musl), where the system allocator is left alone.
    """
    if not 0 <= megabytes <= LARGEST_MB:
        raise ValueError(f"retain_freed_mb must be in [0, {LARGEST_MB}], got {megabytes}")
    if megabytes == 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = megabytes << 20
    applied = bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
    if not applied:
        log.warning("retain_freed_mb=%d: glibc refused the setting; the allocator keeps its defaults", megabytes)
    return applied
