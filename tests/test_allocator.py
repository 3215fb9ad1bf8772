"""The allocator setting behind `retain_freed_mb`: freed activations are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polydefect.allocator import LARGEST_MB, retain_freed_memory

# a few convolutions whose activations (26 MB each) are freed and allocated again at every pass
FAULTS = """
import resource, sys, torch
from polydefect.allocator import retain_freed_memory
applied = retain_freed_memory(int(sys.argv[1]))
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
x = torch.rand(4, 1, 320, 320)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(megabytes: int) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, str(megabytes)], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_instead_of_faulted_in_again() -> None:
    kept, kept_faults = _page_faults(1024)
    default, default_faults = _page_faults(0)
    assert kept and not default
    assert default_faults > 10 * 6000  # each pass faults its activations (26 MB: 6400 pages each) in again
    assert kept_faults < default_faults / 100


def test_zero_leaves_the_allocator_alone_and_out_of_range_values_fail() -> None:
    assert retain_freed_memory(0) is False
    with pytest.raises(ValueError, match="retain_freed_mb"):
        retain_freed_memory(LARGEST_MB + 1)
    with pytest.raises(ValueError, match="retain_freed_mb"):
        retain_freed_memory(-1)
