"""The drift job as the stacks declare it: its schedule and arguments, its own least-privilege identity
(in GCP and in MLflow, where it is its own user, created by the serving-user Job), and its scores' metric
and alert policy."""

from __future__ import annotations

import json

import pytest
import yaml

from infra.secrets import ADMIN_PASSWORD, DRIFT_PASSWORD
from k8s.drift import DRIFT_USERNAME
from k8s.tracking import ADMIN_USERNAME
from tests.helpers import container, containers, env_of, pod_spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_drift_job_reads_the_payload_dataset_as_its_own_identity(stack_runs, stack):
    run = stack_runs[stack]
    cron = run.named("mlflow-drift-schedule")
    spec = pod_spec(cron)
    assert cron.inputs["spec"]["schedule"] == "0 * * * *" and spec["serviceAccountName"] == "mlflow-drift"
    args = spec["containers"][0]["args"]
    assert args[args.index("--source") + 1] == f"bigquery://{run.named('mlflow-payloads-dataset').inputs['project']}" \
        f".mlflow_payloads_{stack}"
    assert args[args.index("--threshold") + 1] == "0.2"
    project_roles = [g.inputs["role"] for g in run.of_type("gcp:projects/iAMMember:IAMMember")
                     if g.name.startswith("mlflow-drift-identity")]
    assert project_roles == ["roles/bigquery.jobUser"]  # runs queries; reads no data project-wide
    [dataset_grant] = [g for g in run.of_type("gcp:bigquery/datasetIamMember:DatasetIamMember")
                       if g.name.startswith("mlflow-drift")]
    assert dataset_grant.inputs["role"] == "roles/bigquery.dataViewer"
    assert dataset_grant.inputs["datasetId"] == f"mlflow_payloads_{stack}"


def test_redacted_columns_are_never_scored(run_stack_with):
    run = run_stack_with("dev", {"serving.payloadLog.redact.drop": ["ssn"], "serving.payloadLog.redact.hash": ["email"]})
    args = pod_spec(run.named("mlflow-drift-schedule"))["containers"][0]["args"]
    assert args[args.index("--redacted") + 1:] == ["email", "ssn"]


def test_no_payload_log_no_drift_job(run_stack_with):
    run = run_stack_with("dev", {"serving.payloadLog.sampleRate": "0"})
    assert not [r for r in run.resources if r.type.startswith("mlflow:drift")]
    assert "mlflow-monitoring-drift" not in {r.name for r in run.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}


def test_scores_are_a_log_based_distribution_with_the_threshold_as_a_bound(run_stack_with):
    run = run_stack_with("dev", {"monitoring.drift.psiThreshold": "0.25"})
    metric = run.named("mlflow-monitoring-drift-psi").inputs
    assert metric["valueExtractor"] == "EXTRACT(jsonPayload.psi)"
    assert 0.25 in metric["bucketOptions"]["explicitBuckets"]["bounds"]
    condition = run.named("mlflow-monitoring-drift").inputs["conditions"][0]["conditionThreshold"]
    assert condition["thresholdValue"] == 0.25 and condition["comparison"] == "COMPARISON_GT"


def _secret_id(run, logical: str) -> str:
    return next(s.inputs["secretId"] for s in run.of_type("gcp:secretmanager/secret:Secret")
                if s.inputs["labels"]["secret"] == logical)


def _mounted_files(run, record) -> set[str]:
    """The file names of the SecretProviderClass a workload mounts."""
    volume = next(v for v in pod_spec(record)["volumes"] if "csi" in v)
    name = volume["csi"]["volumeAttributes"]["secretProviderClass"]
    [spc] = [c for c in run.of_type("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass")
             if c.inputs["metadata"]["name"] == name]
    return {entry["path"] for entry in yaml.safe_load(spc.inputs["spec"]["parameters"]["secrets"])}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_drift_job_logs_in_as_its_own_user_and_never_holds_the_admin_password(stack_runs, stack):
    run = stack_runs[stack]
    cron = run.named("mlflow-drift-schedule")
    [job] = containers(cron)
    env = env_of(job)
    assert env["MLFLOW_TRACKING_USERNAME"]["value"] == DRIFT_USERNAME != ADMIN_USERNAME
    assert env["MLFLOW_TRACKING_PASSWORD_FILE"]["value"] == f"/etc/mlflow-secrets/{DRIFT_PASSWORD}"
    assert _mounted_files(run, cron) == {DRIFT_PASSWORD}
    assert ADMIN_PASSWORD not in json.dumps(cron.inputs)
    # its password is readable by the job's identity and the Job that sets it, no one else
    readers = {g.inputs["member"] for g in run.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
               if g.inputs["secretId"].endswith("/" + _secret_id(run, DRIFT_PASSWORD))}
    assert len(readers) == 3 and all("/sa/mlflow-drift" in m or m.startswith("serviceAccount:mlflow-drift")
                                     or "/sa/mlflow-serving-setup" in m for m in readers), readers


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_serving_user_job_creates_the_drift_user_for_the_experiment_the_job_logs_to(stack_runs, stack):
    run = stack_runs[stack]
    cron, setup = run.named("mlflow-drift-schedule"), run.named("mlflow-serving-setup")
    env = env_of(container(setup, "ensure-serving-user"))
    assert env["DRIFT_USERNAME"]["value"] == env_of(containers(cron)[0])["MLFLOW_TRACKING_USERNAME"]["value"]
    args = containers(cron)[0]["args"]
    assert env["MONITORING_EXPERIMENT"]["value"] == args[args.index("--experiment") + 1]
    assert env["DRIFT_PASSWORD_FILE"]["value"] == f"/etc/mlflow-secrets/{DRIFT_PASSWORD}"
    assert DRIFT_PASSWORD in _mounted_files(run, setup)
    assert setup.urn in cron.dependencies, "the first run must find its user"


def basic_auth_users(run) -> list[str]:
    """Who the IAP stack's tracking server still takes a password from (they call it inside the cluster)."""
    tracking = env_of(container(run.named("mlflow-deployment"), "mlflow"))
    return tracking["MLFLOW_IAP_BASIC_AUTH_USERS"]["value"].split(",")


def test_behind_iap_the_drift_user_still_logs_in_by_password(stack_runs):
    assert DRIFT_USERNAME in basic_auth_users(stack_runs["prod"])


def test_without_the_drift_job_there_is_no_drift_user(run_stack_with):
    run = run_stack_with("prod", {"serving.payloadLog.sampleRate": "0"})
    setup = run.named("mlflow-serving-setup")
    assert not {"DRIFT_USERNAME", "DRIFT_PASSWORD_FILE"} & set(env_of(container(setup, "ensure-serving-user")))
    assert DRIFT_PASSWORD not in _mounted_files(run, setup)
    assert DRIFT_USERNAME not in basic_auth_users(run)
