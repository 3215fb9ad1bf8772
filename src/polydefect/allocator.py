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
import functools
import gc
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8  # mallopt parameters, <malloc.h>
GLIBC_MMAP_MAX = 65536  # glibc's default for M_MMAP_MAX: how many blocks may be mapped at once
# Blocks up to 32 MB (glibc's own ceiling for its adaptive threshold on 64-bit; a chunk of 4 CAE windows'
# largest activation is 26 MB) come from the heap, larger ones are mapped and unmapped as before; the heap
# keeps up to 128 MB free at its top. Keeping 1 GB instead made the peak RSS of scoring grow with the number
# of images (1485 -> 1703 MB from 60 to 240 thesis-sized images; 1347 -> 1349 MB with these values).
HEAP_BLOCK_MB, KEPT_FREE_MB = 32, 128
# While training, a batch's activations and their gradients are over the 32 MB ceiling (8 thesis windows:
# 105 MB per CAE layer), so they were mapped and faulted in at every step: no block is mapped then, and up
# to 1 GB of freed heap is kept (CAE training 3.9 -> 4.7 windows/s, benchmarks/README.md).
TRAINING_KEPT_FREE_MB = 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library on Linux, with mallopt's signature declared; None elsewhere or where it cannot load."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply (parameter, value) pairs with glibc's mallopt; False off glibc or when glibc refuses one."""
    libc = _glibc()
    if libc is None:
        return False
    return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])  # a list: try every one


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Let glibc keep freed activations for reuse (`reuse_freed_memory` in the config).

    Returns whether the setting took effect: False when disabled, and off glibc (macOS, Windows, musl),
    where the system allocator is left alone.
    """
    if not enabled:
        return False
    # one arena: each thread's arena would keep its own KEPT_FREE_MB (scoring reads a batch on threads: +250 MB)
    applied = _mallopt(
        (M_MMAP_THRESHOLD, HEAP_BLOCK_MB << 20), (M_TRIM_THRESHOLD, KEPT_FREE_MB << 20), (M_ARENA_MAX, 1)
    )
    if not applied and sys.platform.startswith("linux"):
        log.warning("reuse_freed_memory: glibc refused the setting; the allocator keeps its defaults")
    return applied


def hold_freed_memory_for_training() -> bool:
    """Training's setting: every block from the heap, up to 1 GB of it kept free; True where it took effect."""
    return _mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRAINING_KEPT_FREE_MB << 20))


def release_training_memory() -> None:
    """Back to `reuse_freed_memory`'s setting after training, and hand the heap's free pages to the system."""
    if _mallopt((M_MMAP_MAX, GLIBC_MMAP_MAX), (M_TRIM_THRESHOLD, KEPT_FREE_MB << 20)):
        _hand_back_free_pages()  # no collection: the trainer and its data are still alive here


def return_free_memory() -> None:
    """Free what the last stage left in reference cycles, then hand the heap's free pages back to the system
    (glibc's malloc_trim) between stages. A trained detector and its trainer refer to each other, and the trainer
    to the training data, so they wait for Python's cyclic collector, which may not run for minutes (model=auto on
    the magnetic tiles: each candidate began with the last one's 300-800 MB still held). The blocks a stage freed,
    scattered among the ones still alive, are of sizes the next stage does not ask for, yet the RSS would count
    them to the end of the run."""
    gc.collect()
    _hand_back_free_pages()


def _hand_back_free_pages() -> None:
    """glibc's malloc_trim: the heap's free pages back to the system (nothing off glibc)."""
    glibc = _glibc()
    if glibc is not None:
        glibc.malloc_trim(0)
