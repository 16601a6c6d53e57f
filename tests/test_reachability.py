"""Who must reach whom, and who must not, checked against the rendered NetworkPolicies of both
stacks (tools/offline/reachability.py evaluates them as Kubernetes does).

One table: the source, the destination workload and port, and whether dev and prod must allow it
(None: the path does not exist in that stack). A broken copy of the program (collectors admitted
only from gmp-system, or the internal load balancer source-NATing) fails the table.
"""

from __future__ import annotations

import ipaddress

import pytest

import k8s.tracking
import program
from tools.offline.reachability import ClusterPolicies, External, Pod, other_pod, through_load_balancer, workload_pod
from tools.offline.stack import run_stack

GOOGLE_FRONT_END = "130.211.0.9"
GOOGLE_HEALTH_CHECKER = "35.191.0.9"
INTERNET = "198.51.100.20"

# (source, destination, port, protocol, dev, prod)
TABLE = [
    ("Google front end", "tracking", 5000, "TCP", False, True),
    ("Google health checker", "tracking", 5000, "TCP", False, True),
    ("Google front end", "tracking metrics", 9102, "TCP", False, False),
    ("collector in gmp-system", "tracking metrics", 9102, "TCP", True, True),
    ("collector in gmp-system", "tracking proxy metrics", 9801, "TCP", True, True),
    ("collector in gke-gmp-system", "tracking metrics", 9102, "TCP", True, True),
    ("collector in gke-gmp-system", "tracking proxy metrics", 9801, "TCP", True, True),
    ("collector in gmp-system", "serving", 8080, "TCP", True, True),
    ("collector in gke-gmp-system", "serving", 8080, "TCP", True, True),
    ("serving pod, direct", "tracking", 5000, "TCP", True, True),
    ("serving pod, through tracking's internal load balancer", "tracking", 5000, "TCP", None, True),
    ("a node of the subnet", "tracking", 5000, "TCP", False, False),
    ("pod in namespace default", "tracking", 5000, "TCP", False, False),
    ("pod in namespace default", "serving", 8080, "TCP", True, True),
    ("the internet", "tracking", 5000, "TCP", False, False),
    ("the internet", "serving", 8080, "TCP", False, False),
    # the serving Gateway's internal load balancer: its proxies, and Google's probes of its health checks
    ("a proxy of the serving Gateway", "serving", 8080, "TCP", True, True),
    ("Google health checker", "serving", 8080, "TCP", True, True),
    ("a proxy of the serving Gateway", "tracking", 5000, "TCP", False, False),
    ("serving pod, direct", "migration job", 9801, "TCP", False, False),
    ("collector in gmp-system", "migration job", 9801, "TCP", False, False),
    ("tracking pod", "kube-dns", 53, "UDP", True, True),
    ("serving pod, direct", "kube-dns", 53, "UDP", True, True),
]


def range_host(run, range_name: str, index: int) -> str:
    subnet = run.named("mlflow-net-subnet").inputs
    cidr = subnet["ipCidrRange"] if range_name == "nodes" else next(
        r["ipCidrRange"] for r in subnet["secondaryIpRanges"] if r["rangeName"] == range_name)
    return str(ipaddress.IPv4Network(cidr)[index])


class Endpoints:
    """The table's names resolved to pods and addresses of one stack's run."""

    def __init__(self, run):
        self.run = run
        serving_range = "serving-pods" if any(
            r.get("rangeName") == "serving-pods" for r in run.named("mlflow-net-subnet").inputs["secondaryIpRanges"]) else "pods"
        self.tracking = workload_pod(run, "tracking", range_host(run, "pods", 10))
        self.serving = workload_pod(run, "serving", range_host(run, serving_range, 20))
        self.migration = workload_pod(run, "migration", range_host(run, "pods", 30))
        self.node = range_host(run, "nodes", 7)
        self.gateway_proxy = str(ipaddress.IPv4Network(run.named("mlflow-net-proxy-only").inputs["ipCidrRange"])[5])

    def destination(self, name: str, source) -> Pod:
        if name == "kube-dns":
            return other_pod(source, "kube-system", range_host(self.run, "pods", 2), {"k8s-app": "kube-dns"})
        return {"tracking": self.tracking, "tracking metrics": self.tracking, "tracking proxy metrics": self.tracking,
                "serving": self.serving, "migration job": self.migration}[name]

    def source(self, name: str, destination: str):
        near = self.serving if destination == "serving" else self.tracking
        if name.startswith("collector in "):
            return other_pod(near, name.removeprefix("collector in "), range_host(self.run, "pods", 40),
                             {"app.kubernetes.io/name": "collector"})
        if name == "serving pod, through tracking's internal load balancer":
            services = [r for r in self.run.resources if r.name == "mlflow-internal-lb"]
            return through_load_balancer(self.serving, self.node, services[0]) if services else None
        return {
            "Google front end": External(GOOGLE_FRONT_END), "Google health checker": External(GOOGLE_HEALTH_CHECKER),
            "the internet": External(INTERNET), "a node of the subnet": External(self.node),
            "a proxy of the serving Gateway": External(self.gateway_proxy),
            "serving pod, direct": self.serving, "tracking pod": self.tracking,
            "pod in namespace default": other_pod(near, "default", range_host(self.run, "pods", 50)),
        }[name]


def table_failures(run, stack: str) -> list[str]:
    policies, endpoints = ClusterPolicies.of(run), Endpoints(run)
    failures = []
    for source_name, destination_name, port, protocol, dev, prod in TABLE:
        expected = dev if stack == "dev" else prod
        source = endpoints.source(source_name, destination_name)
        if expected is None:
            assert source is None, f"{stack}: {source_name} exists but the table says it should not"
            continue
        destination = endpoints.destination(destination_name, source)
        if policies.allows(source, destination, port, protocol) != expected:
            failures.append(f"{stack}: {source_name} -> {destination_name}:{port}/{protocol} "
                            f"should be {'allowed' if expected else 'denied'}")
    return failures


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_network_policies_match_the_reachability_table(stack_runs, stack):
    failures = table_failures(stack_runs[stack], stack)
    assert failures == [], "\n".join(failures)


def test_broken_copy_admitting_collectors_only_from_gmp_system_fails_the_table(monkeypatch):
    monkeypatch.setattr(k8s.tracking, "MANAGED_COLLECTOR_NAMESPACES", ("gmp-system",))
    failures = table_failures(run_stack("prod"), "prod")
    assert "prod: collector in gke-gmp-system -> tracking metrics:9102/TCP should be allowed" in failures


def test_broken_copy_whose_load_balancer_source_nats_fails_the_table(monkeypatch):
    original = k8s.tracking.internal_lb_service_spec

    def source_nat(selector, address):
        return {**original(selector, address), "externalTrafficPolicy": "Cluster"}

    monkeypatch.setattr(k8s.tracking, "internal_lb_service_spec", source_nat)
    failures = table_failures(run_stack("prod"), "prod")
    assert failures == ["prod: serving pod, through tracking's internal load balancer -> tracking:5000/TCP "
                        "should be allowed"]


def test_broken_copy_that_forgets_the_health_checkers_fails_the_table(monkeypatch):
    monkeypatch.setattr(program, "HEALTH_CHECK_RANGES", ())
    failures = table_failures(run_stack("dev"), "dev")
    assert failures == ["dev: Google health checker -> serving:8080/TCP should be allowed"]
