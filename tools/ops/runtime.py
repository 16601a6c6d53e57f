"""Running one of ops' modules with the runtime virtualenv's python (where MLflow, its auth client
and the serving image's packages live), credentials through its environment only."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from tools.ops.backup import run_process

ROOT = Path(__file__).resolve().parents[2]


class RuntimeCommandError(RuntimeError):
    """The module failed, timed out or printed nothing; the message holds no secret."""


def _masked(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return text


def run_runtime(python: Path, argv: Sequence[str], env: Mapping[str, str], secrets: Sequence[str],
                timeout: float, what: str) -> tuple[int, str, str]:
    """`python ...argv` from the project root, mlflow_image/ on its path: (exit code, stdout, stderr
    with `secrets` masked)."""
    if not Path(python).exists():
        raise RuntimeCommandError(f"{python} does not exist: {what} needs the runtime virtualenv (`make runtime`)")
    with tempfile.TemporaryDirectory(prefix="ops-runtime-") as home:
        full_env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
                    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": str(ROOT / "mlflow_image"),
                    "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **env}
        try:
            code, out, err = run_process([str(python), *argv], full_env, timeout=timeout, cwd=ROOT)
        except RuntimeError as err:
            raise RuntimeCommandError(f"{what}: {_masked(str(err), secrets)}") from None
    return code, out, _masked(err, secrets)


def run_runtime_module(python: Path, argv: Sequence[str], env: Mapping[str, str], secrets: Sequence[str],
                       timeout: float, what: str) -> dict:
    """`run_runtime` that must succeed and print its result as a JSON last line."""
    code, out, err = run_runtime(python, argv, env, secrets, timeout, what)
    if code != 0:
        last = [line for line in err.splitlines() if line.strip()]
        raise RuntimeCommandError(f"{what} failed: {last[-1] if last else f'exit code {code}'}")
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeCommandError(f"{what} printed nothing")
    return json.loads(lines[-1])
