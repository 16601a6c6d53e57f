"""Helpers shared by both sides of the benchmarks (standard library and psutil).

The orchestrator (`python -m tools.benchmarks`, project virtualenv: it needs `local.LocalPlatform`) talks
to worker processes in the runtime virtualenv (`tools.benchmarks.loadgen`, `tools.benchmarks.tracking_client`:
they need aiohttp / mlflow) over JSON lines: one request on stdin, one answer on stdout.
Process-tree CPU and memory come from psutil, so both sides can measure a server by pid.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

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


# --- JSON-lines worker protocol --------------------------------------------------------------
def serve_ops(handlers: Mapping[str, Callable[..., dict]]) -> None:
    """Worker side: answer `{"op": NAME, ...args}` lines with `{"ok": true, "result": ...}` or
    `{"ok": false, "error": ...}` until stdin closes. Anything else a library prints goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            handler = handlers[request.pop("op")]
            answer = {"ok": True, "result": handler(**request)}
        except Exception as err:  # reported to the orchestrator, which fails the benchmark
            traceback.print_exc(file=sys.stderr)
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


class WorkerError(RuntimeError):
    pass


class RuntimeWorker:
    """Orchestrator side: a worker module run by another interpreter, in its own process group,
    stderr to a log file; every call bounded in time."""

    def __init__(self, python: Path, module: str, *, env: Mapping[str, str], cwd: Path, log_path: Path):
        self.module = module
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([str(python), "-m", module], env=dict(env), cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        self._buffer = b""

    def call(self, op: str, timeout: float, **args) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(f"{self.module} exited with code {self.proc.returncode}; log {self.log_path}")
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise WorkerError(f"{self.module} {op}: no answer within {timeout:.0f}s; log {self.log_path}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise WorkerError(f"{self.module} {op}: exited (code {self.proc.wait(5)}); log {self.log_path}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer["ok"]:
            raise WorkerError(f"{self.module} {op}: {answer['error']}; log {self.log_path}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "RuntimeWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
