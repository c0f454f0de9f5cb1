"""Keep freed host memory for reuse instead of handing it back to the OS (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free. A CPU training loop allocates the same large activations every step, so it
page-faults on every byte of them, every step, a large share of a CPU training step
(docs/results/performance.md, `benchmarks/eval_batched.py --allocator both`). With mmap and trimming
off, freed blocks go back to the heap and the next step reuses them.
Cost: the process keeps its peak heap until it exits. Off by `reuse_host_memory=false`.

`peak_resident_mib` reads that peak for the benchmarks that report host memory.
"""

from __future__ import annotations

import ctypes
import resource
import sys

_M_TRIM_THRESHOLD = -1  # <malloc.h>: return the heap top to the OS above this many free bytes
_M_MMAP_MAX = -4  # <malloc.h>: how many allocations may be mmap-ed at once
_NEVER = -1  # mallopt(3): a trim threshold of -1 disables trimming completely
_GLIBC_DEFAULTS = {_M_MMAP_MAX: 65536, _M_TRIM_THRESHOLD: 128 * 1024}


def reuse_freed_memory(enable: bool = True) -> bool:
    """Tell glibc's malloc to keep and reuse freed memory; True if the C library accepted it.

    `enable=False` puts glibc's default limits back (benchmarks compare both in one process;
    glibc's sliding mmap threshold stays off once mallopt has set these).
    A no-op returning False off Linux or with a C library without glibc's `mallopt`.
    Affects allocations made after the call, process-wide (DataLoader workers forked later
    inherit it).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: _NEVER} if enable else _GLIBC_DEFAULTS
    return all(mallopt(option, value) == 1 for option, value in settings.items())


def peak_resident_mib() -> float:
    """This program's peak resident set in MiB: on Linux VmHWM of /proc/self/status, the high
    water mark of the memory the program has had since it started. Not getrusage's ru_maxrss:
    Linux carries a parent's peak over to a child through fork and exec, so a small child of a
    large process reads the parent's peak. Elsewhere ru_maxrss (bytes on macOS, KiB others)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
