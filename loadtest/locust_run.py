"""Running Locust headless and bounded: one process, or distributed (a master and workers on this
machine), each run writing CSV (stats, failures, history every second) and JSON results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from loadtest.commands import load_env, master_flags, result_flags, worker_flags
from tools.local.processes import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCUSTFILES = {"serving": HERE / "serving_locust.py", "tracking": HERE / "tracking_locust.py"}
LOCUST = Path(sys.executable).parent / "locust"  # pinned in requirements-dev.txt


@dataclass(frozen=True)
class LoadRun:
    """One bounded Locust run against one Service."""

    name: str
    """serving or tracking (the locustfile)."""
    host: str
    users: int
    seconds: int
    out_dir: Path
    workers: int = 0
    """0: one process; N: a master and N worker processes."""
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / self.name

    @property
    def json_path(self) -> Path:
        return self.out_dir / f"{self.name}.json"


def _common(run: LoadRun) -> list[str]:
    return [str(LOCUST), "-f", str(LOCUSTFILES[run.name]), "--host", run.host]


def master_argv(run: LoadRun, master_port: Optional[int] = None) -> list[str]:
    """The run's size comes from the environment (commands.load_env), as in the cluster's pods."""
    argv = _common(run) + result_flags(str(run.csv_prefix))
    if run.workers:
        argv += master_flags("127.0.0.1", master_port, run.workers, wait_seconds=60)
    return argv


def worker_argv(run: LoadRun, master_port: int) -> list[str]:
    return _common(run) + worker_flags("127.0.0.1", master_port)


class LocustProcesses:
    """The master (or single process) and its workers, started in the background."""

    def __init__(self, run: LoadRun):
        self.run = run
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "LocustProcesses":
        self.run.out_dir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.run.out_dir),
               "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", **load_env(self.run.users, self.run.seconds),
               **self.run.env}
        port = free_port() if self.run.workers else None
        argvs = [master_argv(self.run, port)] + [worker_argv(self.run, port) for _ in range(self.run.workers)]
        for index, argv in enumerate(argvs):
            log = open(self.run.out_dir / f"{self.run.name}-{'master' if index == 0 else f'worker{index}'}.log", "wb")
            self.procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        return self

    def wait(self) -> int:
        """Until the run's time is up (plus the stop timeout); returns the master's exit code."""
        try:
            code = self.procs[0].wait(timeout=self.run.seconds + 90)
            for worker in self.procs[1:]:
                worker.wait(timeout=20)  # the master tells the workers to quit
            return code
        finally:
            self.stop()

    def finish(self) -> int:
        """End the run now, as its time limit would (SIGTERM: Locust stops the users and writes
        its results); returns the master's exit code."""
        os.kill(self.procs[0].pid, signal.SIGTERM)
        return self.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_load(run: LoadRun) -> int:
    return LocustProcesses(run).start().wait()


def wait_for_first_requests(run: LoadRun, timeout: float = 30.0) -> None:
    """Until Locust's history shows requests (the load is on)."""
    from loadtest.results import history

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(second.total_requests for second in history(run.csv_prefix)):
            return
        time.sleep(0.5)
    raise RuntimeError(f"locust {run.name}: no requests within {timeout:.0f}s (see {run.out_dir})")
