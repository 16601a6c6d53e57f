"""`python -m mlflow_fileenv NAME... -- COMMAND ARGS` (see the package docstring)."""

from __future__ import annotations

import os
import sys

from mlflow_fileenv import FileEnvError, parse, resolve


def main(argv: list[str]) -> int:
    try:
        names, command = parse(argv)
        env = resolve(names, os.environ)
    except FileEnvError as err:  # the message names files and variables, never a value
        print(f"mlflow_fileenv: {err}", file=sys.stderr, flush=True)
        return 2
    os.execvpe(command[0], command, env)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
