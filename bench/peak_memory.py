"""Peak memory of one call, above what was in use before it: CUDA from the caching allocator's counters, CPU
from the kernel's resident-set high-water mark.

On the CPU, tracemalloc cannot see torch's allocations and ``ru_maxrss`` only ever grows (a call that stays below
an earlier peak reads 0). Linux resets the high-water mark ``VmHWM`` when "5" is written to
``/proc/self/clear_refs``, so ``VmHWM`` after the call minus ``VmRSS`` before it is this call's own peak. Where
that file cannot be written the ``ru_maxrss`` growth is reported instead, and the method says it is a lower bound.
Pages that malloc keeps after a free would be reused without raising the RSS (a 25 MB output then reads 0), so
glibc's ``malloc_trim(0)`` hands them back to the kernel first. Still approximate from below: the RSS counts pages
touched, not bytes allocated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
from typing import Callable

import torch


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # e.g. "VmHWM:   734360 kB"
    raise KeyError(field)


def _release_free_heap() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_memory(call: Callable[[], object], device: str) -> tuple[int, str]:
    """Runs ``call`` once; returns (peak bytes above the starting point, how they were measured)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        return torch.cuda.max_memory_allocated() - before, "torch.cuda.max_memory_allocated"
    _release_free_heap()
    if _reset_cpu_peak():
        before = _status_kib("VmRSS")
        call()
        return (_status_kib("VmHWM") - before) * 1024, "VmHWM after - VmRSS before (clear_refs reset)"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    call()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) * 1024, "ru_maxrss growth (lower bound)"
