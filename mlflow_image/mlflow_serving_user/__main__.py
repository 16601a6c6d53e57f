"""`python -m mlflow_serving_user`: create or update the serving user (and the drift user, when the stack
has one), then grant each what it needs on the served model.

Idempotent: run by a Job on every change of model, alias, image or password, and by `make local`.
Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD (an admin),
SERVING_USERNAME, SERVING_PASSWORD, MODEL_NAME; with drift: DRIFT_USERNAME, DRIFT_PASSWORD,
MONITORING_EXPERIMENT.
"""

from __future__ import annotations

import os
import sys

from mlflow import MlflowClient
from mlflow.server import get_app_client

from mlflow_serving_user import (
    DRIFT_MODEL_PERMISSION, READ, ensure_user, grant_experiment_edit, grant_model, is_registered,
)


def main() -> int:
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    model_name = os.environ["MODEL_NAME"]
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    users = {os.environ["SERVING_USERNAME"]: (os.environ["SERVING_PASSWORD"], READ)}
    drift_user = os.environ.get("DRIFT_USERNAME")
    if drift_user:
        users[drift_user] = (os.environ["DRIFT_PASSWORD"], DRIFT_MODEL_PERMISSION)
    for username, (password, _) in users.items():
        print(f"user {username!r}: {ensure_user(auth, username, password)}", flush=True)
    if drift_user:
        experiment = os.environ["MONITORING_EXPERIMENT"]
        experiment_id = grant_experiment_edit(auth, client, drift_user, experiment)
        print(f"EDIT for {drift_user!r} on experiment {experiment!r} ({experiment_id})", flush=True)

    if not is_registered(client, model_name):
        print(f"model {model_name!r} is not registered yet; grant it when it is (rerun or `make promote`)")
        return 0
    for username, (_, permission) in users.items():
        experiments = grant_model(auth, client, username, model_name, permission)
        print(f"{username!r}: {permission} on model {model_name!r}, READ on experiments {experiments}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
