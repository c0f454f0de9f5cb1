"""reuse_freed_memory: a freed large block comes back without page faults (glibc only).

Measured in a fresh interpreter: in the test process, jobs run in process earlier leave freed
holes in the heap that serve a large allocation without faults even under glibc's defaults.
"""

import subprocess
import sys

import pytest

MEASURE = r"""
import resource, sys
import torch
from dmcondense.hostmem import reuse_freed_memory

PAGES = 64 * 2**20 // 4096  # a 64 MiB tensor: above glibc's largest mmap threshold (32 MiB)

def faults_per_allocation(rounds=8):
    for _ in range(8):  # warm-up: the heap grows until a freed 64 MiB hole is there to reuse
        torch.ones(PAGES * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(PAGES * 1024)  # 4-byte floats: 1024 per 4 KiB page
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

if not reuse_freed_memory(False):
    print("skip")
    sys.exit()
default = faults_per_allocation()
assert reuse_freed_memory(True)
print(PAGES, default, faults_per_allocation())
"""


def test_reuse_keeps_freed_memory_and_default_returns_it():
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True
    ).stdout.split()
    if out == ["skip"]:
        pytest.skip("the C library has no glibc mallopt")
    pages, default, reused = int(out[0]), float(out[1]), float(out[2])
    assert default > 0.5 * pages, f"glibc default: {default:.0f} faults of {pages} pages"
    assert reused < 0.25 * pages, f"reuse: {reused:.0f} faults of {pages} pages"


CHILD_PEAK = "from dmcondense.hostmem import peak_resident_mib; print(peak_resident_mib())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the carry-over is Linux's")
def test_peak_resident_memory_is_the_childs_own_not_its_parents():
    held = bytearray(512 * 2**20)  # this process's peak: at least 512 MiB, every page touched
    held[::4096] = b"\x01" * len(held[::4096])
    child = subprocess.run(
        [sys.executable, "-c", CHILD_PEAK], capture_output=True, text=True, check=True
    )
    del held
    # a bare interpreter importing one small module: tens of MiB, whatever its parent held
    assert 0 < float(child.stdout) < 256
