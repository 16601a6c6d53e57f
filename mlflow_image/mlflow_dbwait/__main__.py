"""`python -m mlflow_dbwait --url-env MLFLOW_BACKEND_STORE_URI --timeout 420`.

The URI is read from the named environment variable, never from argv, and a password in it never
reaches a log line.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

from mlflow_dbwait import DatabaseUnavailable, Retry, wait_for


def connect_once(url: str) -> None:
    """One connection and `SELECT 1`, as `mlflow db upgrade` will connect (SQLAlchemy, same URI)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    # connect_timeout: a proxy that accepts but never answers must not hang the attempt.
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_dbwait", description=__doc__)
    parser.add_argument("--url-env", required=True, help="environment variable holding the SQLAlchemy URI")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to keep trying")
    args = parser.parse_args(argv)
    url = os.environ.get(args.url_env)
    if not url:
        print(f"wait-for-database: ${args.url_env} is empty", file=sys.stderr, flush=True)
        return 2
    password = urlsplit(url).password

    def redact(message: str) -> str:
        return f"wait-for-database: {message.replace(password, '[secret]') if password else message}"

    try:
        wait_for(lambda: connect_once(url), Retry(budget=args.timeout), log=lambda line: print(redact(line), flush=True))
    except DatabaseUnavailable as err:
        print(redact(f"giving up: {err}"), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
