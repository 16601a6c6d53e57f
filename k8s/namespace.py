"""What every workload namespace starts with: restricted pods, default-deny ingress, the logging config."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.naming import k8s_labels
from k8s.logs import LOGGING_FILE, logging_config_json
from k8s.pods import default_deny_ingress

# The workloads' namespaces: their components take them as defaults; Monitoring and NetworkPolicies name them.
TRACKING_NAMESPACE = "mlflow"
SERVING_NAMESPACE = "mlflow-serving"


@dataclass(frozen=True)
class WorkloadNamespace:
    name: pulumi.Output[str]
    """The namespace's name, once it exists."""
    logging_config_map: pulumi.Output[str]
    """The ConfigMap of the pods' logging config, once it exists."""


def restricted_namespace_metadata(namespace: str, instance: str) -> dict:
    """The `restricted` Pod Security Standard, enforced by the API server for every pod."""
    return {"name": namespace, "labels": {
        **k8s_labels(instance, "namespace"),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}


def workload_namespace(name: str, namespace: str, labels: dict, opts: pulumi.ResourceOptions) -> WorkloadNamespace:
    """Namespace, default-deny NetworkPolicy and logging ConfigMap, children of the caller's component."""
    created = k8s.core.v1.Namespace(f"{name}-ns", metadata=restricted_namespace_metadata(namespace, name), opts=opts)
    ns_name = created.metadata["name"]
    k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", **default_deny_ingress(ns_name, labels), opts=opts)
    logging_config = k8s.core.v1.ConfigMap(
        f"{name}-logging",
        metadata={"name": "mlflow-logging", "namespace": ns_name, "labels": labels},
        data={LOGGING_FILE: logging_config_json()},
        opts=opts,
    )
    return WorkloadNamespace(ns_name, logging_config.metadata["name"])
