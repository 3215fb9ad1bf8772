"""The machine's matrix-multiply rate: the ceiling a convolutional model's FLOP rate is compared with."""

from __future__ import annotations

import time

import torch
from timing import synchronize


def gemm_gflops(device: torch.device, size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best of `repeats` square `size` x `size` matrix multiplies, in GFLOP/s (2 n^3 FLOP each)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: first call allocates and picks kernels
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9
