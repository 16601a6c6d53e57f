"""Environment variables read from files, then exec: `python -m mlflow_fileenv NAME... -- COMMAND ARGS`.

MLflow takes its credentials (MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY,
MLFLOW_TRACKING_PASSWORD) only from environment variables; the pods get them as files mounted from
Secret Manager. For each NAME, the file named by NAME_FILE (the `_FILE` convention of official
container images) is read, its one trailing newline dropped, and NAME set; NAME_FILE is removed.
Then COMMAND replaces this process (PATH lookup), so signals and the exit code are its own.
Standard library only: both images run it.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

FILE_SUFFIX = "_FILE"


class FileEnvError(ValueError):
    """A named variable has no readable file: the command must not start without its credential."""


def parse(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(names, command) from `NAME... -- COMMAND ARGS`."""
    if "--" not in argv:
        raise FileEnvError("usage: python -m mlflow_fileenv NAME... -- COMMAND [ARGS...]")
    split = list(argv).index("--")
    names, command = list(argv[:split]), list(argv[split + 1:])
    if not names or not command:
        raise FileEnvError("usage: python -m mlflow_fileenv NAME... -- COMMAND [ARGS...] (both parts non-empty)")
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise FileEnvError(f"not environment variable names: {', '.join(bad)}")
    return names, command


def resolve(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the command: each NAME from the file at NAME_FILE."""
    env = dict(environ)
    for name in names:
        path = env.pop(name + FILE_SUFFIX, None)
        if not path:
            raise FileEnvError(f"{name}{FILE_SUFFIX} is not set: it must name the file holding {name}")
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read()
        except OSError as err:
            raise FileEnvError(f"{name}{FILE_SUFFIX}={path}: cannot read it ({err.strerror})") from None
        value = value[:-1] if value.endswith("\n") else value
        if not value:
            raise FileEnvError(f"{name}{FILE_SUFFIX}={path}: the file is empty")
        env[name] = value
    return env
