"""``CpuShare``: the CPU this process and the other processes took while a block ran, from ``getrusage`` and
``/proc/stat``; the benchmark records it for every case (``conftest.py``) and the report flags the cases that ran
beside more than ``QUIET_LIMIT`` cores of other processes' CPU (``report.py``). Notebook 06 measures with it too.
"""

from __future__ import annotations

import os
import resource
import time

QUIET_LIMIT = 0.2  # cores of neighbours' CPU above which a case is flagged as timed on a busy machine


class CpuShare:
    """The CPU time this process (``own``: every thread, torch's and TensorFlow's pools included, from
    ``getrusage``), other processes (``neighbour``: machine-wide busy time from ``/proc/stat`` minus our own) and the
    hypervisor (``steal``) took while the rounds ran, in cores (CPU seconds over wall seconds). ``own`` is the
    parallelism a backend really gets (a kernel that runs on one thread reads ~1 whatever ``threads`` says); a quiet
    machine reads ``neighbour`` ~0. On a 2-core machine a neighbour using one core slows a call that synchronizes
    its two threads often (``vectorized``: ~1400 torch ops per P2 call, each a parallel region) several times over
    (bench/results/vm-2026-11-26-vectorized-stability.md), so the report flags cases that ran beside one. None
    where ``/proc/stat`` cannot be read. ``children=True`` counts this process's finished child processes as its own
    (``notebooks/execute.py``: the notebook's kernel is a child, shut down before the block ends)."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, children: bool = False):
        self.children = children

    def _snapshot(self):
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]  # user nice system idle iowait irq softirq steal
        except (OSError, ValueError):
            return None
        usages = [resource.getrusage(resource.RUSAGE_SELF)]
        if self.children:
            usages.append(resource.getrusage(resource.RUSAGE_CHILDREN))
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        steal = fields[7] if len(fields) > 7 else 0
        own = sum(u.ru_utime + u.ru_stime for u in usages)
        return time.perf_counter(), busy / CpuShare.TICK, steal / CpuShare.TICK, own

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.neighbour = self.steal = self.own = None
        if self.start is not None and end is not None and end[0] > self.start[0]:
            wall = end[0] - self.start[0]
            self.own = (end[3] - self.start[3]) / wall
            self.neighbour = max(0.0, ((end[1] - self.start[1]) - (end[3] - self.start[3])) / wall)
            self.steal = (end[2] - self.start[2]) / wall
        return False
