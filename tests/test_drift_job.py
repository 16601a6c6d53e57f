"""The drift job as the stacks declare it: its schedule and arguments, its own least-privilege identity,
and its scores' metric and alert policy."""

from __future__ import annotations

import pytest

from tests.helpers import pod_spec

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
