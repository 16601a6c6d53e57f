"""Child processes of the local platform: each in its own process group, logging to a file,
stopped as a group, every wait bounded in time."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import psutil


class LocalPlatformError(RuntimeError):
    """Something the local platform started did not come up or did not succeed."""


# Below Linux's ephemeral range (32768-60999): no outgoing connection takes a port between our check
# and the server's bind, as one could with a port the kernel picked.
PORT_RANGE = range(20000, 32768)
PORT_CLAIMS = Path(tempfile.gettempdir()) / "mlflow-local-ports"
# A claim older than this belongs to a platform long gone.
PORT_CLAIM_SECONDS = 3600


def _claim(port: int) -> bool:
    """Claim a port for this machine's platforms: two test processes starting platforms at once
    must not both pick it before either server binds it."""
    PORT_CLAIMS.mkdir(exist_ok=True)
    path = PORT_CLAIMS / str(port)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        if time.time() - path.stat().st_mtime < PORT_CLAIM_SECONDS:
            return False
        path.touch()
        return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, claimed so no other local platform picks it."""
    for port in random.sample(PORT_RANGE, len(PORT_RANGE)):
        if not _claim(port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalPlatformError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1} (claims in {PORT_CLAIMS})")


class Redactor:
    """Masks known secret values in text that may reach the console."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "[secret]")
        return text


def log_tail(path: Path, redact: Callable[[str], str], lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = "\n".join(text.splitlines()[-lines:])
    return redact(tail)


@dataclass
class RunAs:
    """An unprivileged user to run a process as (Postgres refuses root)."""

    uid: int
    gid: int


class ManagedProcess:
    """A long-running child: own session and process group, output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path,
                 redact: Callable[[str], str], stop_signal: int = signal.SIGTERM, run_as: Optional[RunAs] = None):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.redact = redact
        self.stop_signal = stop_signal
        self.run_as = run_as
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        if self.running:
            raise LocalPlatformError(f"{self.name} is already running (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, **_user_kwargs(self.run_as))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def check_alive(self) -> None:
        if self.proc is None:
            raise LocalPlatformError(f"{self.name} was never started")
        if self.proc.poll() is not None:
            raise LocalPlatformError(
                f"{self.name} exited with code {self.proc.returncode}; log {self.log_path}:\n"
                f"{log_tail(self.log_path, self.redact)}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until true; fail early if the process dies, and after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise LocalPlatformError(f"{self.name}: {what} not within {timeout:.0f}s; log {self.log_path}:\n"
                                         f"{log_tail(self.log_path, self.redact)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Signal the whole group, wait for the leader, then kill whatever of the group is left,
        and any descendant that left the group (Postgres backends call setsid)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        strays = descendants(pgid)
        if self.proc.poll() is None:
            _killpg(pgid, self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _killpg(pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise LocalPlatformError(f"{self.name} (pid {pgid}) did not die after SIGKILL") from None
        wait_group_gone(pgid, timeout=10)
        wait_pids_gone(strays, timeout=10)


def _user_kwargs(run_as: Optional[RunAs]) -> dict:
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _live(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # ended meanwhile
        return False


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    return {process.pid for process in below if _live(process)}


def pids_alive(pids: Iterable[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.Error:
            continue
        if _live(process):
            alive.append(pid)
    return sorted(alive)


def wait_pids_gone(pids: set[int], timeout: float) -> None:
    """Wait for processes to end; SIGKILL those still there halfway through."""
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        alive = pids_alive(pids)
        if not alive:
            return
        if not killed and time.monotonic() > deadline - timeout / 2:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            killed = True
        if time.monotonic() > deadline:
            raise LocalPlatformError(f"processes {alive} still alive {timeout:.0f}s after their parent stopped")
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and _live(process):
                return True
        except OSError:  # ended meanwhile
            continue
    return False


def wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            raise LocalPlatformError(f"process group {pgid} still has processes {timeout:.0f}s after SIGKILL")
        time.sleep(0.1)


def run_to_completion(name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path,
                      timeout: float, run_as: Optional[RunAs] = None, stdin_text: Optional[str] = None,
                      capture_stdout: bool = False) -> subprocess.CompletedProcess:
    """Run a command to its end in its own process group (killed as a group on timeout).
    stderr (and stdout unless captured) goes to the log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== run {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else log, stderr=log, start_new_session=True,
            **_user_kwargs(run_as))
        try:
            stdout, _ = proc.communicate(stdin_text.encode() if stdin_text is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise LocalPlatformError(f"{name} did not finish within {timeout:.0f}s; log {log_path}") from None
        finally:
            _killpg(proc.pid, signal.SIGKILL)  # nothing it started outlives it
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       stdout.decode(errors="replace") if capture_stdout else None, None)


# --- HTTP -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, *, json_body=None, auth: Optional[tuple[str, str]] = None,
         headers: Optional[dict] = None, timeout: float = 30.0) -> HttpResponse:
    """One HTTP request; any status is returned (not raised); connection errors raise OSError."""
    data = None
    all_headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"
    if auth is not None:
        all_headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.read())
    except urllib.error.HTTPError as err:
        return HttpResponse(err.code, err.read())


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """GET url answers 200 (connection errors and other statuses are False)."""
    try:
        return http("GET", url, timeout=timeout).status == 200
    except OSError:
        return False
