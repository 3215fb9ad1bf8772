"""Timing helpers shared by the benchmarks: device synchronisation and best-of-rounds rates."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a timer measures it; nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(work: Callable[[], int], rounds: int, device: torch.device) -> float:
    """Items per second of `work()` (which returns how many items it did), the best of `rounds` calls.

    The best round is the one least disturbed by other processes on a shared machine; every rate in one
    report is taken the same way, so their ratios compare like with like.
    """
    best = 0.0
    for _ in range(rounds):
        synchronize(device)
        started = time.perf_counter()
        items = work()
        synchronize(device)
        best = max(best, items / (time.perf_counter() - started))
    return best
