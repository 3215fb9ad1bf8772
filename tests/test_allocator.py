"""The allocator setting behind `reuse_freed_memory`: freed activations are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polydefect.allocator import reuse_freed_memory

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
