"""reuse_freed_memory: a freed large block comes back without page faults (glibc only)."""

import resource

import pytest
import torch

from dmcondense.hostmem import reuse_freed_memory

PAGES = 64 * 2**20 // 4096  # a 64 MiB tensor: above glibc's largest mmap threshold (32 MiB)


def faults_per_allocation(rounds: int = 8) -> float:
    """Minor page faults of allocating, writing and freeing a 64 MiB tensor, per round."""
    for _ in range(8):  # warm-up: the heap grows until a freed 64 MiB hole is there to reuse
        torch.ones(PAGES * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(PAGES * 1024)  # 4-byte floats: 1024 per 4 KiB page
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


def test_reuse_keeps_freed_memory_and_default_returns_it():
    if not reuse_freed_memory(False):
        pytest.skip("the C library has no glibc mallopt")
    try:
        default = faults_per_allocation()
        assert reuse_freed_memory(True)
        reused = faults_per_allocation()
    finally:
        reuse_freed_memory(True)  # the state every job puts the process in
    assert default > 0.5 * PAGES, f"glibc default: {default:.0f} faults of {PAGES} pages"
    assert reused < 0.25 * PAGES, f"reuse: {reused:.0f} faults of {PAGES} pages"
