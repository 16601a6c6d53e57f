"""The read-only serving user and its READ grants: what `mlflow models serve` needs, never more.

Grants READ on the registered model and on the experiment of every version's run (artifact
download), so the user cannot write. The serving-user Job runs `python -m mlflow_serving_user`;
`tools/ops/grants.py` reuses the grants for a model promoted after the Job ran.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

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


def is_registered(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def model_experiments(client: MlflowClient, model_name: str) -> set[str]:
    experiments = set()
    for version in client.search_model_versions(f"name='{model_name}'"):
        if version.run_id:
            experiments.add(client.get_run(version.run_id).info.experiment_id)
    return experiments


def grant_model_read(auth, client: MlflowClient, username: str, model_name: str) -> list[str]:
    """READ on a registered model and its versions' experiments: the experiments, sorted."""
    ensure_read(auth, username, "registered_model", model_name)
    experiments = sorted(model_experiments(client, model_name))
    for experiment_id in experiments:
        ensure_read(auth, username, "experiment", experiment_id)
    return experiments
