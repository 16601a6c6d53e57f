"""Workload scaffolding shared by tracking and serving: pure builders, then the stacks' Deployments."""

from __future__ import annotations

import pytest

from k8s.workload import (
    WorkloadNames, deployment_spec, in_cluster_url, pdb_spec, pod_monitoring_spec, run_once_job_spec, workload_pod,
)

NAMES = WorkloadNames("mlflow", "tracking", "mlflow-tracking")


def pod() -> dict:
    return workload_pod(service_account="ksa", grace_seconds=30, containers=[{"name": "app"}], volumes=[])


def test_a_deployment_without_replicas_leaves_the_count_to_its_autoscaler():
    assert "replicas" not in deployment_spec(NAMES, pod(), {}, replicas=None)
    assert deployment_spec(NAMES, pod(), {}, replicas=2)["replicas"] == 2


def test_a_rollout_adds_a_pod_before_it_removes_one():
    strategy = deployment_spec(NAMES, pod(), {}, replicas=2)["strategy"]
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_pods_spread_over_zones_then_nodes_by_the_workloads_selector():
    constraints = deployment_spec(NAMES, pod(), {}, replicas=2)["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"] == NAMES.selector for c in constraints)


def test_the_selector_is_a_subset_of_the_pod_labels():
    template = deployment_spec(NAMES, pod(), {}, replicas=1)["template"]
    assert NAMES.selector.items() <= template["metadata"]["labels"].items()


def test_workload_pods_get_no_api_token():
    assert pod()["automountServiceAccountToken"] is False
    assert run_once_job_spec({}, 60, "ksa", containers=[], volumes=[])["template"]["spec"][
        "automountServiceAccountToken"] is False


def test_a_run_once_job_never_restarts_its_pods_and_has_a_deadline():
    spec = run_once_job_spec({}, 600, "ksa", containers=[], volumes=[], backoff_limit=6)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (600, 6)


def test_a_disruption_budget_lets_one_pod_go_at_a_time():
    assert pdb_spec(NAMES.selector)["maxUnavailable"] == 1


def test_pod_monitoring_scrapes_each_named_port():
    spec = pod_monitoring_spec(NAMES.selector, ("metrics", "proxy-http"))
    assert [e["port"] for e in spec["endpoints"]] == ["metrics", "proxy-http"]


def test_in_cluster_url_is_the_services_full_dns_name():
    assert in_cluster_url("mlflow-tracking", "mlflow", 5000) == "http://mlflow-tracking.mlflow.svc.cluster.local:5000"


# --- as declared by the stacks --------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("output, resource", [("tracking_deployment", "mlflow-deployment"),
                                              ("serving_deployment", "mlflow-serving-deployment")])
def test_deployment_outputs_name_the_declared_deployments(stack_runs, stack, output, resource):
    metadata = stack_runs[stack].named(resource).inputs["metadata"]
    assert stack_runs[stack].outputs[output] == f"{metadata['namespace']}/{metadata['name']}", f"{stack}: {output}"
