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

GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
HEALTH_CHECK_API = "networking.gke.io/v1"
# Regional internal Application Load Balancer: reachable inside the VPC only; it supports weighted
# backendRefs and the RequestMirror filter
# (https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities).
INTERNAL_GATEWAY_CLASS = "gke-l7-rilb"
GATEWAY_PORT = 80
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


# --- wiring ---------------------------------------------------------------------------------
def health_check_policy(resource_name: str, metadata: dict, service: str, ready_path: str,
                        opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(resource_name, api_version=HEALTH_CHECK_API, kind="HealthCheckPolicy",
                                            metadata=metadata, spec=health_check_policy_spec(service, ready_path),
                                            opts=opts)


def traffic_split(name: str, metadata: dict, address_name: pulumi.Input[str], route: dict,
                  gateway_after: Sequence[pulumi.Resource], backends: Sequence[pulumi.Resource],
                  opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    """The Gateway and the HTTPRoute `route` attached to it; returns the route. The Gateway comes after
    `gateway_after` (its proxy-only subnet, the firewall rule), so a destroy deletes it, and GKE its load
    balancer, before them; the route after the Gateway and its `backends` Services."""
    gateway = k8s.apiextensions.CustomResource(
        f"{name}-gateway", api_version=GATEWAY_API, kind="Gateway", metadata=metadata,
        spec=gateway_spec(address_name),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(gateway_after))))
    return k8s.apiextensions.CustomResource(
        f"{name}-route", api_version=GATEWAY_API, kind="HTTPRoute", metadata=metadata, spec=route,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[gateway, *backends])))
