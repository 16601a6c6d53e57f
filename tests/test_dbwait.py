"""The migration Job's wait for its first database connection (mlflow_image/mlflow_dbwait):
retries with a bounded backoff, then gives up with a clear error. Fake clock, no database."""

from __future__ import annotations

import sys

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_dbwait import DatabaseUnavailable, Retry, wait_for  # noqa: E402
import mlflow_dbwait.__main__ as command  # noqa: E402


class OperationalError(Exception):
    """What SQLAlchemy raises while the proxy refuses connections."""


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int):
    calls = []

    def connect():
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
                                   "\tIs the server running on that host and accepting TCP/IP connections?")
    return connect, calls


def test_retries_with_doubling_delays_until_the_database_answers():
    clock, lines = Clock(), []
    connect, calls = failing(3)
    assert wait_for(connect, Retry(budget=420), clock=clock, sleep=clock.sleep, log=lines.append) == 4
    assert clock.sleeps == [2, 4, 8] and len(calls) == 4
    assert lines[0] == ('attempt 1 failed: OperationalError: connection to server at "127.0.0.1", port 5432 '
                        "failed: Connection refused; retrying in 2s")
    assert lines[-1] == "connected after 4 attempt(s)"


def test_gives_up_with_the_last_error_once_the_budget_is_spent():
    clock = Clock()
    connect, calls = failing(1000)
    with pytest.raises(DatabaseUnavailable, match=r"no connection after 6 attempts in 60s; last error: "
                                                  r"OperationalError: connection to server .* Connection refused$"):
        wait_for(connect, Retry(budget=60), clock=clock, sleep=clock.sleep, log=lambda line: None)
    assert clock.sleeps == [2, 4, 8, 16, 30] and clock.now == 60  # the delay is capped at 30 s


def test_the_command_exits_1_naming_the_error_never_the_password(monkeypatch, capsys):
    password = "s3cretPassw0rd"
    monkeypatch.setenv("DB_URI", f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:5432/mlflow")

    def refuse(url):
        raise OperationalError(f"could not connect with {url}")

    monkeypatch.setattr(command, "connect_once", refuse)
    assert command.main(["--url-env", "DB_URI", "--timeout", "1"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("wait-for-database: giving up: no connection after 1 attempts in 1s; last error: "
                          "OperationalError: could not connect with postgresql+psycopg2://mlflow:[secret]@")
    assert password not in out + err
