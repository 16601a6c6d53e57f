"""`make promote` / `make rotate-secret --target cluster` read everything about the stack from its
outputs, through Pulumi's Automation API; faked here at that API and at the Kubernetes client."""

from __future__ import annotations

import json

import kubernetes
import pytest
from pulumi import automation as auto

from infra.secrets import ADMIN_PASSWORD, SERVING_PASSWORD
from tools.ops.gke import GkeTarget
from tools.ops.interfaces import TargetError
from tools.ops.secret_manager import SecretManagerError, app_secret
from tools.ops.stack import ROOT, StackOutputError, StackOutputs

KUBECONFIGS = {cluster: {"apiVersion": "v1", "kind": "Config", "current-context": cluster}
               for cluster in ("platform", "serving")}
OUTPUTS = {
    "tracking_admin_username": ("admin", False),
    "tracking_deployment": ("mlflow/mlflow-tracking", False),
    "serving_deployment": ("mlflow-serving/mlflow-serving", False),
    "platform_kubeconfig": (json.dumps(KUBECONFIGS["platform"]), True),
    "serving_kubeconfig": (json.dumps(KUBECONFIGS["serving"]), True),
    "app_secrets": ({ADMIN_PASSWORD: "projects/p/secrets/a", SERVING_PASSWORD: "projects/p/secrets/s",
                     "flask-secret-key": "projects/p/secrets/f"}, False),
}


@pytest.fixture
def workspace(monkeypatch):
    """Pulumi's LocalWorkspace, standing in: the outputs of OUTPUTS (or `error`), calls recorded."""
    state = {"calls": [], "outputs": dict(OUTPUTS), "error": None}

    class FakeWorkspace:
        def __init__(self, work_dir):
            state["calls"].append(("workspace", work_dir))

        def stack_outputs(self, stack_name):
            state["calls"].append(("stack_outputs", stack_name))
            if state["error"]:
                raise state["error"]
            return {name: auto.OutputValue(value, secret) for name, (value, secret) in state["outputs"].items()}

    monkeypatch.setattr(auto, "LocalWorkspace", FakeWorkspace)
    return state


@pytest.fixture
def cluster(monkeypatch):
    """The Kubernetes client, standing in: which kubeconfig each client came from, which Deployment was read."""
    reads = []

    class FakeAppsApi:
        def __init__(self, api_client):
            self.context = api_client["current-context"]

        def read_namespaced_deployment(self, name, namespace):
            reads.append((self.context, namespace, name))

    monkeypatch.setattr(kubernetes.config, "new_client_from_config_dict", lambda kubeconfig: kubeconfig)
    monkeypatch.setattr(kubernetes.client, "AppsV1Api", FakeAppsApi)
    return reads


def test_outputs_are_read_once_from_the_project_directory(workspace):
    outputs = StackOutputs.read("prod")
    assert workspace["calls"] == [("workspace", str(ROOT)), ("stack_outputs", "prod")]
    assert outputs.deployment("tracking") == ("mlflow", "mlflow-tracking")
    assert outputs.kubeconfig("serving") == KUBECONFIGS["serving"]
    assert app_secret(outputs, ADMIN_PASSWORD) == "projects/p/secrets/a"


def test_a_missing_or_malformed_output_is_named(workspace):
    del workspace["outputs"]["serving_deployment"]
    workspace["outputs"]["tracking_deployment"] = ("mlflow-tracking", False)
    workspace["outputs"]["app_secrets"] = ({}, False)
    outputs = StackOutputs.read("dev")
    with pytest.raises(StackOutputError, match="stack dev has no output 'serving_deployment'.*`pulumi up`"):
        outputs.deployment("serving")
    with pytest.raises(StackOutputError, match="output tracking_deployment is not NAMESPACE/NAME"):
        outputs.deployment("tracking")
    with pytest.raises(SecretManagerError, match="app_secrets has no 'admin-password'"):
        app_secret(outputs, ADMIN_PASSWORD)


def test_a_failing_pulumi_cli_is_reported_with_its_own_words(workspace):
    workspace["error"] = auto.CommandError(auto.CommandResult("", "error: no stack named 'dev' found", 255))
    with pytest.raises(StackOutputError, match="reading stack dev's outputs failed: error: no stack named 'dev' found"):
        StackOutputs.read("dev")
    workspace["error"] = FileNotFoundError("pulumi")
    with pytest.raises(StackOutputError, match="the Pulumi CLI is not on PATH"):
        StackOutputs.read("dev")


def test_promote_rolls_the_serving_deployment_the_stack_names(workspace, cluster, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    target = GkeTarget("prod", "http://localhost:5000").promotion(60)
    assert cluster == [("serving", "mlflow-serving", "mlflow-serving")]  # checked before anything changes
    assert (target.roller.namespace, target.roller.name) == ("mlflow-serving", "mlflow-serving")
    assert (target.verifier.namespace, target.verifier.deployment) == ("mlflow-serving", "mlflow-serving")


def test_promote_without_the_deployment_output_changes_nothing(workspace, cluster, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    del workspace["outputs"]["serving_deployment"]
    with pytest.raises(TargetError, match="no output 'serving_deployment'"):
        GkeTarget("prod", "http://localhost:5000").promotion(60)
    assert cluster == []


def test_promote_to_a_cluster_needs_a_tracking_url(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TargetError, match="--target cluster needs the tracking URL"):
        GkeTarget("dev", None)


def test_rotation_restarts_each_deployment_the_stack_names_on_its_own_cluster(workspace, cluster, monkeypatch):
    secretmanager = pytest.importorskip("google.cloud.secretmanager")
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", lambda: object())
    target = GkeTarget("prod", "http://localhost:5000").rotation(60)
    assert cluster == [("platform", "mlflow", "mlflow-tracking"), ("serving", "mlflow-serving", "mlflow-serving")]
    assert target.secret_ids[SERVING_PASSWORD] == "projects/p/secrets/s"
