"""The serving traffic split: an internal Gateway and an HTTPRoute weighting the champion and challenger
Services (or mirroring to the challenger), and the health checks GKE's load balancer runs on each.

GKE's Gateway controller turns these into a regional internal Application Load Balancer
(https://cloud.google.com/kubernetes-engine/docs/how-to/deploying-gateways): it needs a proxy-only subnet
in the region and the cluster's Gateway API (both declared in infra/), and it does not infer health checks
from readiness probes as Ingress does, hence a HealthCheckPolicy per Service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.naming import job_wait
from k8s.pods import container_security_context, resources
from k8s.workload import run_once_job_spec

GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
HEALTH_CHECK_API = "networking.gke.io/v1"
# Regional internal Application Load Balancer: reachable inside the VPC only; it supports weighted
# backendRefs and the RequestMirror filter
# (https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities).
INTERNAL_GATEWAY_CLASS = "gke-l7-rilb"
GATEWAY_PORT = 80
# What the gate Job waits for: GKE installs these CRDs minutes after the cluster's Gateway API setting is
# on (an in-place update on an existing cluster), and Pulumi retries an unknown kind for about a minute only.
GATEWAY_CRDS = ("gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
                "healthcheckpolicies.networking.gke.io")
GATE_MODULE = "mlflow_crdwait"  # in the serving image (mlflow_image/)
GATE_DEADLINE_SECONDS = 900
# `make promote STRATEGY=canary` and `make challenger-weight` patch the live route's weights (field manager
# mlflow-ops); without this pulumi-kubernetes' server-side apply refuses the next `up` that changes the
# route as a field-manager conflict instead of taking the rules back.
PATCH_FORCE = {"pulumi.com/patchForce": "true"}
# Probes every 5 s; two failures take a backend out, one success puts it back.
HEALTH_CHECK = {"checkIntervalSec": 5, "timeoutSec": 5, "healthyThreshold": 1, "unhealthyThreshold": 2}


@dataclass(frozen=True)
class Backend:
    """One track's Service behind the route."""

    service: str
    port: int


# --- pure builders --------------------------------------------------------------------------
def gateway_spec(address_name: Any) -> dict:
    """One HTTP listener for routes of its own namespace, on the reserved internal address."""
    return {
        "gatewayClassName": INTERNAL_GATEWAY_CLASS,
        "listeners": [{"name": "http", "protocol": "HTTP", "port": GATEWAY_PORT,
                       "allowedRoutes": {"namespaces": {"from": "Same"}}}],
        "addresses": [{"type": "NamedAddress", "value": address_name}],
    }


def gateway_url(address: str) -> str:
    """What callers in the VPC send requests to: the Gateway, where the tracks share the traffic."""
    return f"http://{address}:{GATEWAY_PORT}"


def backend_ref(backend: Backend, weight: Optional[int] = None) -> dict:
    ref = {"group": "", "kind": "Service", "name": backend.service, "port": backend.port}
    return ref if weight is None else {**ref, "weight": weight}


def route_spec(gateway: str, champion: Backend, challenger: Optional[Backend], weight: int, mirror: bool) -> dict:
    """Every request to the champion but `weight` percent to the challenger; with `mirror`, a copy of
    every request to the challenger whose answer is dropped. Without a challenger the champion takes 100."""
    backends = [backend_ref(champion, 100 - weight if challenger else 100)]
    rule: dict = {}
    if challenger is not None:
        backends.append(backend_ref(challenger, weight))
        if mirror:
            rule["filters"] = [{"type": "RequestMirror", "requestMirror": {"backendRef": backend_ref(challenger)}}]
    return {"parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway}],
            "rules": [{**rule, "backendRefs": backends}]}


def health_check_policy_spec(service: str, ready_path: str) -> dict:
    """The load balancer's health check of a Service's pods: their readiness path on the serving port."""
    return {
        "default": {**HEALTH_CHECK, "config": {"type": "HTTP", "httpHealthCheck": {
            "portSpecification": "USE_SERVING_PORT", "requestPath": ready_path}}},
        "targetRef": {"group": "", "kind": "Service", "name": service},
    }


def crd_reader_rules(crds: Sequence[str] = GATEWAY_CRDS) -> list[dict]:
    """`get` on exactly these CRDs: the gate may read nothing else of the cluster."""
    return [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "resourceNames": list(crds), "verbs": ["get"]}]


# Where the gate's container finds its API token and the cluster's CA (mlflow_crdwait reads them there).
API_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
API_TOKEN_VOLUME = "api-token"


def api_token_volume() -> dict:
    """The service account's token for the API server and the cluster's CA, mounted into the one container
    that needs them (the pod keeps automountServiceAccountToken off, as every pod here)."""
    return {"name": API_TOKEN_VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}


GATE_CONTAINER = "wait-for-crds"


def gate_container(image: Any, crds: Sequence[str] = GATEWAY_CRDS) -> dict:
    """Polls the CRDs for their Established condition; gives up a minute before the Job's deadline,
    so the failure is its message, not a killed pod."""
    return {"name": GATE_CONTAINER, "image": image, "command": ["python"],
            "args": ["-m", GATE_MODULE, "--timeout", str(GATE_DEADLINE_SECONDS - 60), *crds],
            "resources": resources("50m", "64Mi"), "securityContext": container_security_context(),
            "volumeMounts": [{"name": API_TOKEN_VOLUME, "mountPath": API_TOKEN_PATH, "readOnly": True}]}


def gate_job_spec(labels: dict, service_account: Any, image: Any) -> dict:
    return run_once_job_spec(labels, GATE_DEADLINE_SECONDS, service_account, containers=[gate_container(image)],
                             volumes=[api_token_volume()], backoff_limit=2)


# --- wiring ---------------------------------------------------------------------------------
def health_check_policy(resource_name: str, metadata: dict, service: str, ready_path: str,
                        opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(resource_name, api_version=HEALTH_CHECK_API, kind="HealthCheckPolicy",
                                            metadata=metadata, spec=health_check_policy_spec(service, ready_path),
                                            opts=opts)


def gateway_api_gate(name: str, namespace: pulumi.Input[str], labels: dict, image: pulumi.Input[str],
                     opts: pulumi.ResourceOptions) -> k8s.batch.v1.Job:
    """A Job that completes once GATEWAY_CRDS are Established: the Gateway, HTTPRoute and HealthCheckPolicies
    depend on it. Its service account may `get` those CRDs, nothing else (a ClusterRole: CRDs are cluster-scoped)."""
    ksa = k8s.core.v1.ServiceAccount(f"{name}-gate-ksa", metadata={"name": f"{name}-gate", "namespace": namespace,
                                                                   "labels": labels},
                                     automount_service_account_token=False, opts=opts)
    role = k8s.rbac.v1.ClusterRole(f"{name}-gate-role", metadata={"name": f"{name}-gateway-api-gate", "labels": labels},
                                   rules=crd_reader_rules(), opts=opts)
    binding = k8s.rbac.v1.ClusterRoleBinding(
        f"{name}-gate-binding", metadata={"name": f"{name}-gateway-api-gate", "labels": labels},
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role.metadata["name"]},
        subjects=[{"kind": "ServiceAccount", "name": ksa.metadata["name"], "namespace": namespace}], opts=opts)
    return k8s.batch.v1.Job(
        f"{name}-gate", metadata={"name": f"{name}-gateway-api-gate", "namespace": namespace, "labels": labels},
        spec=gate_job_spec(labels, ksa.metadata["name"], image),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[binding], delete_before_replace=True, custom_timeouts=job_wait(GATE_DEADLINE_SECONDS))))


def traffic_split(name: str, metadata: dict, address_name: pulumi.Input[str], route: dict,
                  gateway_after: Sequence[pulumi.Resource], backends: Sequence[pulumi.Resource],
                  opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    """The Gateway and the HTTPRoute `route` attached to it; returns the route. The Gateway comes after
    `gateway_after` (the gate Job, its proxy-only subnet, the firewall rule), so a destroy deletes it, and
    GKE its load balancer, before them; the route after the Gateway and its `backends` Services."""
    gateway = k8s.apiextensions.CustomResource(
        f"{name}-gateway", api_version=GATEWAY_API, kind="Gateway", metadata=metadata,
        spec=gateway_spec(address_name),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(gateway_after))))
    route_metadata = {**metadata, "annotations": {**metadata.get("annotations", {}), **PATCH_FORCE}}
    return k8s.apiextensions.CustomResource(
        f"{name}-route", api_version=GATEWAY_API, kind="HTTPRoute", metadata=route_metadata, spec=route,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[gateway, *backends])))
