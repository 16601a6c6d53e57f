"""Create or update the read-only serving user and grant it what `mlflow models serve` needs.

Idempotent: run by a Job on every change of model, alias or password, and by `make local`.
Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD (an admin),
SERVING_USERNAME, SERVING_PASSWORD, MODEL_NAME. Grants READ on the registered model and on the
experiment of every version's run (artifact download); never more, so the user cannot write.
"""

from __future__ import annotations

import os
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

READ = "READ"


def _exists(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_ALREADY_EXISTS"


def ensure_user(auth, username: str, password: str) -> str:
    try:
        auth.create_user(username, password)
        return "created"
    except MlflowException as err:
        if not _exists(err):
            raise
    auth.update_user_password(username, password)
    return "updated"


def ensure_read(auth, username: str, resource_type: str, resource_id: str) -> None:
    """Exactly READ: an existing grant (perhaps higher) is replaced."""
    try:
        auth.grant_user_permission(username, resource_type, resource_id, READ)
    except MlflowException as err:
        if not _exists(err):
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, READ)


def model_experiments(client: MlflowClient, model_name: str) -> set[str]:
    experiments = set()
    for version in client.search_model_versions(f"name='{model_name}'"):
        if version.run_id:
            experiments.add(client.get_run(version.run_id).info.experiment_id)
    return experiments


def main() -> int:
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    username, password = os.environ["SERVING_USERNAME"], os.environ["SERVING_PASSWORD"]
    model_name = os.environ["MODEL_NAME"]
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    print(f"serving user {username!r}: {ensure_user(auth, username, password)}", flush=True)

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        print(f"model {model_name!r} is not registered yet; grant READ when it is (rerun or `make promote`)")
        return 0
    ensure_read(auth, username, "registered_model", model_name)
    experiments = model_experiments(client, model_name)
    for experiment_id in sorted(experiments):
        ensure_read(auth, username, "experiment", experiment_id)
    print(f"READ on model {model_name!r} and experiments {sorted(experiments)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
