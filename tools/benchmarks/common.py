"""Helpers shared by both sides of the benchmarks (standard library and psutil).

The orchestrator (`python -m tools.benchmarks`, project virtualenv: it needs `local.LocalPlatform`) talks
to worker processes in the runtime virtualenv (`tools.benchmarks.loadgen`, `tools.benchmarks.tracking_client`:
they need aiohttp / mlflow) over JSON lines (`tools.venvs.Venv.worker` and `tools.venvs.serve`).
Process-tree CPU and memory come from psutil, so both sides can measure a server by pid.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import psutil

# --- statistics ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict:
    """p50/p90/p99/mean/max in milliseconds, rounded, from latencies in seconds."""
    def ms(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value * 1000.0, 2)
    return {"n": len(seconds), "p50_ms": ms(percentile(seconds, 50)), "p90_ms": ms(percentile(seconds, 90)),
            "p99_ms": ms(percentile(seconds, 99)), "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
            "max_ms": ms(max(seconds) if seconds else None)}


# --- processes -----------------------------------------------------------------------------
def _live(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # ended meanwhile
        return False


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return [pid]
    return [pid, *(process.pid for process in below if _live(process))]


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the given processes (including their reaped children)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    return cpu_seconds(pid for root in roots for pid in process_tree(root))


def pin(roots: Iterable[int], cores: Optional[set[int]]) -> None:
    """Every thread of every process under `roots` onto `cores` (None: all of them). Per thread:
    an affinity set by pid binds only the main thread, and threads inherit their creator's."""
    cores = cores or set(range(os.cpu_count() or 1))
    for pid in (pid for root in roots for pid in process_tree(root)):
        try:
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:  # ended meanwhile
            continue
        for tid in threads:
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:
                pass


def tree_memory(root: int) -> dict:
    """RSS and PSS (MiB) summed over a process tree, and its process count. RSS counts pages
    shared between forked workers once per process; PSS splits them (closer to what a cgroup
    memory limit charges)."""
    rss = pss = 0
    pids = process_tree(root)
    for pid in pids:
        try:
            memory = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        rss += memory.rss
        pss += getattr(memory, "pss", 0)  # Linux only
    return {"rss_mib": round(rss / 2**20, 1), "pss_mib": round(pss / 2**20, 1), "processes": len(pids)}


# --- machine -------------------------------------------------------------------------------
def machine() -> dict:
    model = "unknown"
    try:  # psutil does not report the CPU model
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "kernel": os.uname().release}
