"""The C allocator's handling of freed memory, which decides how fast PyTorch runs on a CPU.

A convolution's activations are tens of MB per layer, freed and allocated again at every forward pass.
glibc's malloc returns freed heap tops over its trim threshold to the system (twice the last block it
unmapped, so about the size of one activation), and each pass faults its activations in again: on 2 cores
that was 380 000 page faults and a quarter of the thesis CAE's inference time for 48 windows
(benchmarks/README.md). Keeping a bounded amount of freed heap removes it; jemalloc and tcmalloc do the same
by design.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
# Blocks up to 32 MB (glibc's own ceiling for its adaptive threshold on 64-bit; a chunk of 4 CAE windows'
# largest activation is 26 MB) come from the heap, larger ones are mapped and unmapped as before; the heap
# keeps up to 128 MB free at its top. Keeping 1 GB instead made the peak RSS of scoring grow with the number
# of images (1485 -> 1703 MB from 60 to 240 thesis-sized images; 1347 -> 1349 MB with these values).
HEAP_BLOCK_MB, KEPT_FREE_MB = 32, 128


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Let glibc keep freed activations for reuse (`reuse_freed_memory` in the config).

    Returns whether the setting took effect: False when disabled, and off glibc (macOS, Windows, musl),
    where the system allocator is left alone.
    """
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_MB << 20)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEPT_FREE_MB << 20)
    )
    if not applied:
        log.warning("reuse_freed_memory: glibc refused the setting; the allocator keeps its defaults")
    return applied
