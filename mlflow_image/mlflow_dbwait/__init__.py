"""Waits until the database accepts a connection: the migration Job's first step.

On a new project the Cloud SQL Auth Proxy refuses connections until the IAM bindings it needs
(roles/cloudsql.client, Workload Identity) have propagated, which takes minutes. `mlflow db
upgrade` retries its connection for only ~100 s (an MLflow internal, MAX_RETRY_COUNT), so the
Job's few pods may all fail meanwhile. This waits for a budget the manifest states, logs each
attempt, and exits 0 once connected, or 1 with the last error when the budget is spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


class DatabaseUnavailable(RuntimeError):
    """No connection within the budget."""


@dataclass(frozen=True)
class Retry:
    budget: float
    """Seconds to keep trying."""
    first: float = 2.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2 ** (failures - 1))


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def wait_for(connect: Callable[[], None], retry: Retry, *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print) -> int:
    """Call `connect` until it returns; the number of attempts it took. Raises DatabaseUnavailable
    once the next attempt would start after `retry.budget` seconds."""
    deadline = clock() + retry.budget
    failures = 0
    while True:
        try:
            connect()
        except Exception as err:
            failures += 1
            delay = retry.delay(failures)
            if clock() + delay > deadline:
                raise DatabaseUnavailable(f"no connection after {failures} attempts in {retry.budget:.0f}s; "
                                          f"last error: {first_line(err)}") from None
            log(f"attempt {failures} failed: {first_line(err)}; retrying in {delay:.0f}s")
            sleep(delay)
            continue
        log(f"connected after {failures + 1} attempt(s)")
        return failures + 1
