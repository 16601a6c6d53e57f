"""Asking a running `make local` (python -m tools.local) to roll serving (a promotion), the challenger
(its alias moved) or tracking (a secret rotation), as `kubectl rollout restart` would.

The protocol, both halves here:

- the requester (`request_rollout`, used by `python -m tools.ops.promote --target local` and
  `python -m tools.ops.rotate_secret --target local`) reads the pid from WORKDIR/local.pid, checks it is
  a `python -m tools.local`, writes the component to roll to WORKDIR/rollout-request.json, notes the
  generation in WORKDIR/serving-rollout.json, sends SIGUSR1 and waits (bounded) for a newer generation;
- `python -m tools.local` (`Rollouts`) only sets a flag in the signal handler; its main loop rolls the
  requested component (serving by default: the new process loads whatever version the alias points
  to now) and writes {"generation", "component", "ready", "error", "serving_pid", "finished"} to
  WORKDIR/serving-rollout.json.

SIGUSR1, not SIGHUP: SIGHUP (terminal closed) keeps stopping `make local`. Nothing else is
accepted: neither file holds a secret and the signal carries no data.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import psutil

ROLLOUT_SIGNAL = signal.SIGUSR1
STATUS_FILE = "serving-rollout.json"
REQUEST_FILE = "rollout-request.json"
PID_FILE = "local.pid"
COMPONENTS = ("serving", "tracking", "challenger")


class RolloutRequestError(RuntimeError):
    """No running `make local` to ask, or it did not roll serving in time."""


def read_status(workdir: Path) -> dict:
    try:
        return json.loads((workdir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def write_pid_file(workdir: Path) -> Path:
    """WORKDIR/local.pid naming this process, written whole (a reader never sees it half-written)."""
    path, partial = workdir / PID_FILE, workdir / f"{PID_FILE}.partial"
    partial.write_text(f"{os.getpid()}\n")
    os.replace(partial, path)
    return path


def is_local_instance(pid: int) -> bool:
    """Whether `pid` runs `python -m tools.local` (a pid file outlives its process, and pids are reused)."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "tools.local" in cmdline and any(part.endswith("python") or "python3" in part for part in cmdline)


def local_pid(workdir: Path) -> Optional[int]:
    """The pid of the `python -m tools.local` using `workdir`, if one runs (the check `make local` itself
    does before starting)."""
    try:
        pid = int((workdir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_local_instance(pid) else None


def request_rollout(workdir: Path, timeout: float = 300.0, poll: float = 0.2, component: str = "serving") -> dict:
    """Ask the running `make local` to roll `component` and wait until it answered; returns the
    status (raises if there is no such process, it did not answer in time, or the new pod failed)."""
    if component not in COMPONENTS:
        raise ValueError(f"component={component!r}: allowed {', '.join(COMPONENTS)}")
    workdir = Path(workdir)
    pid = local_pid(workdir)
    if pid is None:
        raise RolloutRequestError(f"no running `make local` uses {workdir} (no live pid in {workdir / PID_FILE})")
    before = read_status(workdir).get("generation", 0)
    _write_json(workdir / REQUEST_FILE, {"component": component})
    os.kill(pid, ROLLOUT_SIGNAL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(workdir)
        if status.get("generation", 0) > before:
            if not status.get("ready"):
                raise RolloutRequestError(f"`make local` rolled {component} but it is not ready: {status.get('error')}")
            return status
        if local_pid(workdir) != pid:
            raise RolloutRequestError(f"`make local` (pid {pid}) stopped before {component} was rolled")
        time.sleep(poll)
    raise RolloutRequestError(f"`make local` (pid {pid}) did not roll {component} within {timeout:.0f}s")


class Rollouts:
    """The `python -m tools.local` half: `install()` once (before the platform starts, so an early
    request is not fatal: SIGUSR1's default action ends the process), `poll(platform)` in the main loop."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.pending = False
        self.generation = 0

    def install(self) -> None:
        for name in (STATUS_FILE, REQUEST_FILE):  # generations restart with this process
            (self.workdir / name).unlink(missing_ok=True)
        signal.signal(ROLLOUT_SIGNAL, self._on_signal)

    def _on_signal(self, _signum, _frame) -> None:
        self.pending = True  # nothing else in a handler: the loop does the work

    def poll(self, platform, progress: Callable[[str], None] = lambda message: None) -> Optional[dict]:
        """Roll what was asked if asked; a failed rollout is reported, not raised (the requester moves
        the alias back and asks again): the new pod is gone and the old one still serves."""
        if not self.pending:
            return None
        self.pending = False
        try:
            component = json.loads((self.workdir / REQUEST_FILE).read_text()).get("component", "serving")
        except (OSError, ValueError):
            component = "serving"
        progress(f"{component}: rolling (requested by SIGUSR1)")
        error = None
        try:
            {"tracking": platform.roll_tracking, "challenger": platform.restart_challenger}.get(
                component, platform.restart_serving)()
        except Exception as err:  # reported to the requester; `make local` stays up
            error = str(err).splitlines()[0] if str(err) else type(err).__name__
        self.generation += 1
        status = {"generation": self.generation, "component": component, "ready": error is None, "error": error,
                  "serving_pid": platform.serving.pid if platform.serving else None,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_json(self.workdir / STATUS_FILE, status)
        progress(f"{component}: rolled" if error is None else f"{component}: roll failed: {error}")
        return status
