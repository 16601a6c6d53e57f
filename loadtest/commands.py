"""Locust's command-line flags for one bounded, headless run, shared by the local target (processes
on this machine) and the cluster target (loadtest/stack/templates.py renders them into the pods), so both
runs write the same results. Pure: the pods import it too."""

from __future__ import annotations

MASTER_PORT = 5557  # Locust's default port for worker connections


def result_flags(csv_prefix: str) -> list[str]:
    """Headless, results as CSV (with the per-second history) and JSON at `csv_prefix`."""
    return ["--headless", "--stop-timeout", "10", "--csv", csv_prefix, "--csv-full-history",
            "--json-file", csv_prefix, "--only-summary", "--exit-code-on-error", "0"]


def master_flags(bind_host: str, port: int, workers: int, wait_seconds: int) -> list[str]:
    """Distributed: start once `workers` have connected, or give up after `wait_seconds`."""
    return ["--master", "--expect-workers", str(workers), "--expect-workers-max-wait", str(wait_seconds),
            "--master-bind-host", bind_host, "--master-bind-port", str(port)]


def worker_flags(master_host: str, port: int) -> list[str]:
    return ["--worker", "--master-host", master_host, "--master-port", str(port)]


def load_env(users: int, seconds: int) -> dict[str, str]:
    """The run's size, as the environment variables Locust reads (`-u`, `-r`, `-t`): every user
    starts at once, as the local target's runs do."""
    return {"LOCUST_USERS": str(users), "LOCUST_SPAWN_RATE": str(users), "LOCUST_RUN_TIME": f"{seconds}s"}
