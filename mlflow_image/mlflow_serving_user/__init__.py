"""The platform's machine users on the served model, and exactly the permissions each needs.

The serving user reads: READ on the registered model and on the experiment of every version's run
(artifact download), so it cannot write. The drift user (k8s/drift.py) reads the same experiments (the
versions' runs and their logged datasets), has EDIT on the model (it stores each version's reference
profile as a version tag) and EDIT on the monitoring experiment it logs its runs to, which the setup
creates as the admin when it is missing. The serving-user Job runs `python -m mlflow_serving_user`;
`tools/ops/grants.py` reuses the grants for a model promoted after the Job ran.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

READ = "READ"
EDIT = "EDIT"
# What the drift job does on the served model: reads versions and writes their `drift.reference` tag.
DRIFT_MODEL_PERMISSION = EDIT


def _exists(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_ALREADY_EXISTS"


def _missing(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_DOES_NOT_EXIST"


def ensure_user(auth, username: str, password: str) -> str:
    try:
        auth.create_user(username, password)
        return "created"
    except MlflowException as err:
        if not _exists(err):
            raise
    auth.update_user_password(username, password)
    return "updated"


def user_exists(auth, username: str) -> bool:
    try:
        auth.get_user(username)
    except MlflowException as err:
        if not _missing(err):
            raise
        return False
    return True


def ensure_permission(auth, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Exactly `permission`: an existing grant (perhaps higher, as a creator's MANAGE) is replaced."""
    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as err:
        if not _exists(err):
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def is_registered(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except MlflowException as err:
        if not _missing(err):
            raise
        return False
    return True


def model_experiments(client: MlflowClient, model_name: str) -> set[str]:
    experiments = set()
    for version in client.search_model_versions(f"name='{model_name}'"):
        if version.run_id:
            experiments.add(client.get_run(version.run_id).info.experiment_id)
    return experiments


def grant_model(auth, client: MlflowClient, username: str, model_name: str, permission: str = READ) -> list[str]:
    """`permission` on a registered model, READ on its versions' experiments: the experiments, sorted."""
    ensure_permission(auth, username, "registered_model", model_name, permission)
    experiments = sorted(model_experiments(client, model_name))
    for experiment_id in experiments:
        ensure_permission(auth, username, "experiment", experiment_id, READ)
    return experiments


def grant_experiment_edit(auth, client: MlflowClient, username: str, experiment_name: str) -> str:
    """EDIT on the named experiment, created (by the caller, the admin) if missing: its id."""
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    ensure_permission(auth, username, "experiment", experiment_id, EDIT)
    return experiment_id
