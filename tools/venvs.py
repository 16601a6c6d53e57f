"""The project's virtualenvs besides `.venv`, and the one way to run code in one of them.

`.venv` runs the Pulumi program, the tests and the tooling; it pins protobuf 5 (the Pulumi SDK).
Code that needs another set of packages runs as a child process of another virtualenv's python:

- `runtime()`: `.venv-runtime`, what the images install (protobuf 7) plus the GCS emulator: the
  local platform's clients, ops' MLflow auth calls and rehearsals, the benchmark workers;
- `TOOLS`: programs the tests run whose pins clash with the Pulumi SDK's: checkov, and the last
  MLflow 2.x for the upgrade rehearsal (pip resolves the two together);
- `MLSERVER`: MLServer, which pins FastAPI and uvloop below what the pods run.

`Venv.run` runs a command to its end; `Venv.worker` starts a module that answers JSON lines (`serve`
is its other half). Either way the child inherits nothing from the caller's environment and runs in its
own process group, killed on timeout. In the runtime virtualenv, as in the images, the image's own
packages (mlflow_image/: mlflow_serving, ...) are importable.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_VENV_ENV = "MLFLOW_LOCAL_RUNTIME_VENV"  # another runtime virtualenv, e.g. to rehearse an MLflow upgrade


class VenvError(RuntimeError):
    """A virtualenv is missing, or a command in it failed or timed out; the message holds no secret."""


def _masked(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    return text


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(argv: Sequence[str], env: Mapping[str, str], *, timeout: float, cwd: Optional[Path] = None,
                log_path: Optional[Path] = None) -> tuple[int, str, str]:
    """Run a command to its end in its own process group (killed as a group on timeout, VenvError,
    and once it ends: nothing it started outlives it): (exit code, stdout, stderr). With `log_path`,
    stderr is appended there instead (and returned empty)."""
    log = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        log.write(f"\n=== run {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log.flush()
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log or subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.communicate(timeout=10)
            raise VenvError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s"
                            + (f"; log {log_path}" if log_path else "")) from None
        finally:
            _killpg(proc.pid)
    finally:
        if log is not None:
            log.close()
    return proc.returncode, out.decode(errors="replace"), (err or b"").decode(errors="replace")


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str
    """Secrets masked; empty when it went to a log file."""

    def check(self, what: str) -> "Finished":
        """This, if it exited 0; VenvError with the last line of stderr otherwise."""
        if self.code != 0:
            last = [line for line in self.stderr.splitlines() if line.strip()]
            raise VenvError(f"{what} failed: {last[-1] if last else f'exit code {self.code}'}")
        return self

    def json(self) -> Any:
        """The result a module printed as its last line of JSON."""
        lines = self.stdout.strip().splitlines()
        if not lines:
            raise VenvError("it printed nothing")
        return json.loads(lines[-1])


@dataclass(frozen=True)
class Venv:
    path: Path
    make_target: str
    """The make target that builds it, for the message when it is missing."""
    pythonpath: tuple[Path, ...] = ()

    def bin(self, name: str = "python") -> Path:
        return self.path / "bin" / name

    def require(self, *names: str) -> None:
        missing = [name for name in names or ("python",) if not self.bin(name).exists()]
        if missing:
            raise VenvError(f"virtualenv {self.path} lacks {', '.join(missing)}: `make {self.make_target}`")

    def env(self, home: Path, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        """Nothing inherited from the caller, no credentials unless `extra` brings them."""
        env = {"PATH": f"{self.path / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
               "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        if self.pythonpath:
            env["PYTHONPATH"] = ":".join(map(str, self.pythonpath))
        return env | dict(extra or {})

    def run(self, args: Sequence[str], *, timeout: float, home: Optional[Path] = None,
            env: Optional[Mapping[str, str]] = None, cwd: Path = ROOT, log_path: Optional[Path] = None,
            secrets: Sequence[str] = ()) -> Finished:
        """`python ARGS` to its end; HOME is `home`, or a directory removed afterwards. `secrets` are
        masked in what it returns or raises."""
        self.require()
        with tempfile.TemporaryDirectory(prefix="venv-run-") as scratch:
            home = Path(home or scratch)
            home.mkdir(parents=True, exist_ok=True)
            try:
                code, out, err = run_process([str(self.bin()), *args], self.env(home, env), timeout=timeout,
                                             cwd=cwd, log_path=log_path)
            except VenvError as failed:
                raise VenvError(_masked(str(failed), secrets)) from None
        return Finished(code, out, _masked(err, secrets))

    def worker(self, module: str, *, home: Path, log_path: Path, env: Optional[Mapping[str, str]] = None,
               cwd: Path = ROOT) -> "Worker":
        """`python -m module`, answering `Worker.call`s until closed (its side: `serve`)."""
        self.require()
        home.mkdir(parents=True, exist_ok=True)
        return Worker(self.bin(), module, env=self.env(home, env), cwd=cwd, log_path=log_path)


def runtime(path: Optional[Path] = None) -> Venv:
    """The runtime virtualenv: `path`, else $MLFLOW_LOCAL_RUNTIME_VENV, else .venv-runtime."""
    return Venv(Path(path or os.environ.get(RUNTIME_VENV_ENV) or ROOT / ".venv-runtime"), "runtime",
                (ROOT / "mlflow_image",))


TOOLS = Venv(ROOT / ".venv-tools", "tools-venv")
TOOLS_REQUIREMENTS = (ROOT / "tools" / "requirements-checkov.txt", ROOT / "tools" / "requirements-upgrade.txt")
MLSERVER = Venv(ROOT / ".venv-mlserver", "mlserver-venv")


# --- a worker answering JSON lines ------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Worker:
    """Caller side: a module run by another interpreter, in its own process group, stderr to a log
    file; every call bounded in time."""

    def __init__(self, python: Path, module: str, *, env: Mapping[str, str], cwd: Path, log_path: Path):
        self.module = module
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([str(python), "-m", module], env=dict(env), cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        self._buffer = b""

    def call(self, op: str, timeout: float, **args) -> Any:
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
            _killpg(self.proc.pid)
            self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(handlers: Mapping[str, Callable[..., Any]]) -> None:
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
        except Exception as err:  # reported to the caller, which fails its run
            traceback.print_exc(file=sys.stderr)
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
