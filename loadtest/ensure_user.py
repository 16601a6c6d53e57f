"""Create or update the load test's own MLflow user: the one-shot setup Job of the load-test stack
(loadtest/stack/) runs it as the tracking admin, so the Locust pods never hold the admin's password.

Environment: MLFLOW_TRACKING_URI, ADMIN_USERNAME and ADMIN_PASSWORD_FILE (the admin), LOADTEST_USERNAME
and LOADTEST_PASSWORD_FILE (the user it makes). The user is a plain user: it creates the `loadtest`
experiment (and so manages it) or, when that exists already, gets EDIT on it; nothing else.
Idempotent, through MLflow's basic-auth REST API (only `requests`, which Locust's image has).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests

EXPERIMENT = "loadtest"  # where the tracking locustfile writes
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
TIMEOUT_SECONDS = 30


class Tracking:
    """MLflow's REST API, as one user."""

    def __init__(self, url: str, username: str, password: str):
        self.url, self.session = url.rstrip("/"), requests.Session()
        self.session.auth = (username, password)

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.url}/api/{path}", timeout=TIMEOUT_SECONDS, **kwargs)

    def write(self, method: str, path: str, body: dict) -> bool:
        """True when done, False when it existed already; any other answer raises."""
        response = self.call(method, path, json=body)
        if response.status_code == 200:
            return True
        if ALREADY_EXISTS in response.text:
            return False
        raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")


def ensure_user(tracking: Tracking, username: str, password: str) -> str:
    if tracking.write("POST", "2.0/mlflow/users/create", {"username": username, "password": password}):
        return "created"
    tracking.write("PATCH", "2.0/mlflow/users/update-password", {"username": username, "password": password})
    return "updated"


def ensure_edit(tracking: Tracking, username: str, experiment_id: str) -> None:
    """Exactly EDIT on the experiment: an existing grant is replaced."""
    grant = {"username": username, "resource_type": "experiment", "resource_id": experiment_id}
    if not tracking.write("POST", "3.0/mlflow/users/permissions/grant", {**grant, "permission": "EDIT"}):
        tracking.write("POST", "3.0/mlflow/users/permissions/revoke", grant)
        tracking.write("POST", "3.0/mlflow/users/permissions/grant", {**grant, "permission": "EDIT"})


def experiment_id(tracking: Tracking, name: str) -> str | None:
    response = tracking.call("GET", "2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    if response.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in response.text:
        return None
    response.raise_for_status()
    return response.json()["experiment"]["experiment_id"]


def provision(admin: Tracking, username: str, password: str) -> None:
    """The user, with `password`, and EDIT on the load test's experiment where that exists already."""
    print(f"load-test user {username!r}: {ensure_user(admin, username, password)}", flush=True)
    found = experiment_id(admin, EXPERIMENT)
    if found is None:
        print(f"experiment {EXPERIMENT!r} does not exist yet: the user creates it on its first run", flush=True)
    else:
        ensure_edit(admin, username, found)
        print(f"EDIT on experiment {EXPERIMENT!r} ({found})", flush=True)


def main() -> int:
    admin = Tracking(os.environ["MLFLOW_TRACKING_URI"], os.environ["ADMIN_USERNAME"],
                     Path(os.environ["ADMIN_PASSWORD_FILE"]).read_text().strip())
    provision(admin, os.environ["LOADTEST_USERNAME"], Path(os.environ["LOADTEST_PASSWORD_FILE"]).read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
