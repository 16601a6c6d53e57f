"""Scaffolding every long-running workload shares (tracking, serving): names, Deployment, Service,
PodDisruptionBudget, PodMonitoring, NetworkPolicy. Pure builders of manifest dicts, plus the one
wiring helper both components call the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.naming import k8s_labels, k8s_selector
from k8s.pods import pod_security_context

ROLLING_UPDATE = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
SPREAD_TOPOLOGY_KEYS = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
REVISION_HISTORY = 5
SCRAPE_INTERVAL = "30s"


@dataclass(frozen=True)
class WorkloadNames:
    """What names one workload's objects: its component's name, its role, the objects' name."""

    instance: str
    """The component's Pulumi name (label app.kubernetes.io/instance)."""
    component: str
    """Role (label app.kubernetes.io/component)."""
    name: str
    """Name of the Deployment, Service, PDB, PodMonitoring and NetworkPolicy."""
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels beside the recommended ones, never in selectors (serving's track)."""

    @property
    def labels(self) -> dict[str, str]:
        return {**k8s_labels(self.instance, self.component), **self.extra_labels}

    @property
    def selector(self) -> dict[str, str]:
        return k8s_selector(self.instance, self.component)

    def metadata(self, namespace: Any, annotations: Optional[dict] = None) -> dict:
        meta = {"name": self.name, "namespace": namespace, "labels": self.labels}
        return {**meta, "annotations": annotations} if annotations is not None else meta


def spread_constraints(selector: dict) -> list[dict]:
    """Replicas spread over zones, then nodes, without blocking scheduling when they cannot be."""
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}} for key in SPREAD_TOPOLOGY_KEYS]


def workload_pod(*, service_account: Any, grace_seconds: int, containers: list[dict], volumes: list[dict],
                 init_containers: Sequence[dict] = ()) -> dict:
    """A restricted pod of the workload's own identity, with no API token."""
    pod = {"serviceAccountName": service_account, "automountServiceAccountToken": False,
           "securityContext": pod_security_context(), "terminationGracePeriodSeconds": grace_seconds}
    if init_containers:
        pod["initContainers"] = list(init_containers)
    return {**pod, "containers": containers, "volumes": volumes}


def deployment_spec(names: WorkloadNames, pod: dict, pod_annotations: dict, replicas: Optional[int]) -> dict:
    """One new pod at a time, none removed before its successor is ready. `replicas=None` leaves the
    count to an autoscaler (Pulumi would otherwise reset it on every update)."""
    spec: dict = {} if replicas is None else {"replicas": replicas}
    return {**spec, "revisionHistoryLimit": REVISION_HISTORY, "selector": {"matchLabels": names.selector},
            "strategy": ROLLING_UPDATE,
            "template": {"metadata": {"labels": names.labels, "annotations": pod_annotations},
                         "spec": {**pod, "topologySpreadConstraints": spread_constraints(names.selector)}}}


def run_once_job_spec(labels: dict, deadline_seconds: int, service_account: Any, *, containers: list[dict],
                      volumes: list[dict], init_containers: Sequence[dict] = (), backoff_limit: int = 3,
                      pod_failure_policy: Optional[dict] = None) -> dict:
    """A Job whose pods run to completion once as `service_account`, within `deadline_seconds`."""
    pod = {"serviceAccountName": service_account, "automountServiceAccountToken": False,
           "securityContext": pod_security_context(), "restartPolicy": "Never"}
    if init_containers:
        pod["initContainers"] = list(init_containers)
    spec = {"backoffLimit": backoff_limit, "activeDeadlineSeconds": deadline_seconds,
            "template": {"metadata": {"labels": labels}, "spec": {**pod, "containers": containers, "volumes": volumes}}}
    return {**spec, "podFailurePolicy": pod_failure_policy} if pod_failure_policy is not None else spec


def cron_job_spec(schedule: str, job_spec: Mapping[str, Any]) -> dict:
    """A Job's pod on `schedule`; one run at a time, a missed run is simply the next one."""
    return {"schedule": schedule, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 3, "jobTemplate": {"spec": dict(job_spec)}}


def fail_job_on_exit(container: str, *exit_codes: int) -> dict:
    """A podFailurePolicy (batch/v1, GA in Kubernetes 1.31; it needs the pods' restartPolicy Never, which
    run_once_job_spec sets) failing the Job at once when `container` exits with one of `exit_codes`: a
    failure no retry can mend is not retried through `backoffLimit`. Restricted to `container` so a
    native sidecar's exit status on shutdown never matches."""
    return {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": container, "operator": "In", "values": sorted(exit_codes)}}]}


def http_service_port(port: int) -> dict:
    return {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}


def cluster_ip_service_spec(selector: dict, port: int) -> dict:
    return {"type": "ClusterIP", "selector": selector, "ports": [http_service_port(port)]}


def in_cluster_url(service: str, namespace: str, port: int) -> str:
    return f"http://{service}.{namespace}.svc.cluster.local:{port}"


def pdb_spec(selector: dict, **extra: Any) -> dict:
    return {"maxUnavailable": 1, "selector": {"matchLabels": selector}, **extra}


def pod_monitoring_spec(selector: dict, ports: Sequence[str], pod_labels: Mapping[str, str] = {}) -> dict:
    """Managed Prometheus scrapes /metrics on each named container port; `pod_labels` maps pod labels
    onto every series as the named Prometheus labels."""
    spec = {"selector": {"matchLabels": selector},
            "endpoints": [{"port": port, "path": "/metrics", "interval": SCRAPE_INTERVAL} for port in ports]}
    if pod_labels:
        spec["targetLabels"] = {"fromPod": [{"from": pod, "to": target} for pod, target in pod_labels.items()]}
    return spec


def tcp_ports(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def ingress_policy_spec(selector: dict, rules: list[dict]) -> dict:
    """Only `rules` admit traffic to the workload's pods."""
    return {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": rules}


# --- wiring (components call this) ---------------------------------------------------------
def pod_monitoring(resource_name: str, metadata: dict, spec: dict,
                   opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(resource_name, api_version="monitoring.googleapis.com/v1",
                                            kind="PodMonitoring", metadata=metadata, spec=spec, opts=opts)


def deployment_ref(deployment: k8s.apps.v1.Deployment) -> pulumi.Output[str]:
    """NAMESPACE/NAME of a Deployment, as `kubectl -n NAMESPACE rollout … deployment/NAME` takes it apart."""
    return pulumi.Output.concat(deployment.metadata["namespace"], "/", deployment.metadata["name"])
