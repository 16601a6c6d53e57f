"""The machine users' grants (mlflow_image/mlflow_serving_user) on an in-memory auth store: each gets exactly
the permission named, whatever it held before, and the drift user's monitoring experiment exists
afterwards whoever made it. The real server's answers to these grants: tests/test_drift_local.py."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

sys.path.insert(0, "mlflow_image")
from mlflow_serving_user import EDIT, READ, grant_experiment_edit, grant_model  # noqa: E402

pytestmark = pytest.mark.unit


class FakeAuth:
    """MLflow's auth client: a second grant on one resource is refused as RESOURCE_ALREADY_EXISTS."""

    def __init__(self, grants=None):
        self.grants: dict[tuple[str, str, str], str] = dict(grants or {})

    def grant_user_permission(self, username, resource_type, resource_id, permission):
        if (username, resource_type, resource_id) in self.grants:
            raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)
        self.grants[(username, resource_type, resource_id)] = permission

    def revoke_user_permission(self, username, resource_type, resource_id):
        del self.grants[(username, resource_type, resource_id)]


class FakeClient:
    def __init__(self, experiments=None, version_runs=()):
        self.experiments = dict(experiments or {})
        self.version_runs = version_runs  # run id -> experiment id

    def get_experiment_by_name(self, name):
        found = self.experiments.get(name)
        return SimpleNamespace(experiment_id=found) if found else None

    def create_experiment(self, name):
        self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments[name]

    def search_model_versions(self, query):
        return [SimpleNamespace(run_id=run_id) for run_id, _ in self.version_runs]

    def get_run(self, run_id):
        return SimpleNamespace(info=SimpleNamespace(experiment_id=dict(self.version_runs)[run_id]))


def test_a_missing_monitoring_experiment_is_created_and_the_drift_user_may_edit_it():
    auth, client = FakeAuth(), FakeClient()
    experiment_id = grant_experiment_edit(auth, client, "mlflow-drift", "platform-monitoring")
    assert client.experiments == {"platform-monitoring": experiment_id}
    assert auth.grants == {("mlflow-drift", "experiment", experiment_id): EDIT}


def test_an_experiment_made_earlier_gets_exactly_edit_whatever_the_user_held():
    # a stack whose job ran as the admin made the experiment; a job that created it itself held MANAGE
    auth = FakeAuth({("mlflow-drift", "experiment", "7"): "MANAGE"})
    client = FakeClient({"platform-monitoring": "7"})
    assert grant_experiment_edit(auth, client, "mlflow-drift", "platform-monitoring") == "7"
    assert auth.grants == {("mlflow-drift", "experiment", "7"): EDIT}
    assert client.experiments == {"platform-monitoring": "7"}


def test_the_model_gets_the_permission_named_and_its_versions_experiments_read():
    auth = FakeAuth({("mlflow-drift", "experiment", "3"): "MANAGE"})
    client = FakeClient(version_runs=(("r1", "3"), ("r2", "5"), ("r3", "3")))
    assert grant_model(auth, client, "mlflow-drift", "iris", EDIT) == ["3", "5"]
    assert auth.grants == {("mlflow-drift", "registered_model", "iris"): EDIT,
                           ("mlflow-drift", "experiment", "3"): READ, ("mlflow-drift", "experiment", "5"): READ}
    grant_model(auth, client, "mlflow-serving", "iris")
    assert auth.grants[("mlflow-serving", "registered_model", "iris")] == READ
