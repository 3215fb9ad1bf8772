"""The allocator setting behind `reuse_freed_memory`: freed activations are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny import compose_app

from polydefect.allocator import reuse_freed_memory
from polydefect.pipeline.training import TrainingAllocation, trainer_kwargs

# a two-level CAE whose activations (up to 26 MB each) are freed and allocated again at every pass
FAULTS = """
import resource, sys, torch
from polydefect.allocator import reuse_freed_memory
applied = reuse_freed_memory(sys.argv[1] == 'on')
torch.set_num_threads(1)
from polydefect.models.cae import ConvAutoencoder
net = ConvAutoencoder(widths=(16, 32), bottleneck=(8, 4, 8)).eval()
x = torch.rand(4, 1, 320, 320)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_instead_of_faulted_in_again() -> None:
    kept, kept_faults = _page_faults("on")
    default, default_faults = _page_faults("off")
    assert kept and not default
    assert default_faults > 10 * 6000  # each pass faults its activations (26 MB: 6400 pages each) in again
    assert kept_faults < default_faults / 10  # 0-3200 against ~300 000 on a 2-core Linux machine


def test_disabled_leaves_the_allocator_alone() -> None:
    assert reuse_freed_memory(False) is False


# training steps of a small CAE at batch 8: activations of 52 MB, over the 32 MB that scoring keeps on the heap
TRAINING = """
import os, resource, sys, torch
from polydefect.allocator import hold_freed_memory_for_training, release_training_memory, reuse_freed_memory
reuse_freed_memory(True)
held = hold_freed_memory_for_training() if sys.argv[1] == 'on' else False
torch.set_num_threads(1)
from polydefect.models.cae import ConvAutoencoder
net = ConvAutoencoder(widths=(16, 32), bottleneck=(8, 4, 8))
optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
x = torch.rand(8, 1, 320, 320)
def step():
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(net(x), x).backward()
    optimizer.step()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20
held_mb = rss_mb()
release_training_memory()
print(held, faults, held_mb, rss_mb())
"""


def _training(setting: str) -> tuple[bool, int, int, int]:
    out = subprocess.run([sys.executable, "-c", TRAINING, setting], capture_output=True, text=True, check=True)
    held, faults, held_mb, released_mb = out.stdout.split()
    return held == "True", int(faults), int(held_mb), int(released_mb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_keeps_its_blocks_and_gives_them_back_afterwards() -> None:
    held, held_faults, held_mb, released_mb = _training("on")
    scoring, scoring_faults, _, _ = _training("off")
    assert held and not scoring
    assert scoring_faults > 4 * 12_800  # each step maps its 52 MB activations (12 800 pages) and faults them in
    assert held_faults < scoring_faults / 10
    assert released_mb < held_mb - 50  # the freed heap kept for training goes back to the system


def test_training_allocation_is_a_callback_of_every_trained_stage() -> None:
    on = trainer_kwargs(compose_app(), 1, Path("."))
    off = trainer_kwargs(compose_app("reuse_freed_memory=false"), 1, Path("."))
    assert any(isinstance(c, TrainingAllocation) for c in on["callbacks"])
    assert not any(isinstance(c, TrainingAllocation) for c in off["callbacks"])


# 400 MB of 1 MB tensors from the heap, every other one kept: the freed half lies between live blocks
SCATTERED = """
import re, torch
from polydefect.allocator import return_free_memory, reuse_freed_memory
reuse_freed_memory(True)
rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024
blocks = [torch.ones(1 << 18) for _ in range(400)]
kept = blocks[::2]
del blocks
before = rss()
return_free_memory()
print(before, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_memory_between_live_blocks_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", SCATTERED], capture_output=True, text=True, check=True)
    before_mb, after_mb = map(int, out.stdout.split())
    assert after_mb < before_mb - 150  # most of the 200 MB freed between the kept blocks


# four threads each allocate 100 MB in heap-sized blocks at once and free them (scoring reads a batch on threads)
THREADS = """
import threading, numpy as np
from polydefect.allocator import reuse_freed_memory
assert reuse_freed_memory(True)
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
barrier = threading.Barrier(4)
def read():
    barrier.wait()
    blocks = [np.ones(10 << 20, np.uint8) for _ in range(10)]
    del blocks
before = rss_mb()
threads = [threading.Thread(target=read) for _ in range(4)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_memory_freed_on_threads_is_kept_once_not_once_per_thread() -> None:
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, check=True)
    # one arena keeps at most KEPT_FREE_MB (128) of the 400 MB freed; an arena per thread kept ~360 MB
    assert int(out.stdout) < 200
