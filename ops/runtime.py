"""Running one of ops' MLflow-client modules with the runtime virtualenv's python (where MLflow and
its auth client live), credentials through its environment only, its last stdout line as JSON."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from ops.backup import run

ROOT = Path(__file__).resolve().parent.parent


class RuntimeCommandError(RuntimeError):
    """The module failed, timed out or printed nothing; the message holds no secret."""


def run_runtime_module(python: Path, argv: Sequence[str], env: Mapping[str, str], secrets: Sequence[str],
                       timeout: float, what: str) -> dict:
    """`python -m ...argv` from the project root; `secrets` are masked in any error message."""
    if not Path(python).exists():
        raise RuntimeCommandError(f"{python} does not exist: {what} needs the runtime virtualenv (`make runtime`)")
    with tempfile.TemporaryDirectory(prefix="ops-runtime-") as home:
        full_env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
                    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                    "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **env}
        try:
            out = run([str(python), *argv], full_env, timeout=timeout, cwd=ROOT)
        except RuntimeError as err:
            message = str(err)
            for secret in secrets:
                message = message.replace(secret, "[secret]")
            last = [line for line in message.splitlines() if line.strip()]
            raise RuntimeCommandError(f"{what} failed: {last[-1] if last else message}") from None
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeCommandError(f"{what} printed nothing")
    return json.loads(lines[-1])
