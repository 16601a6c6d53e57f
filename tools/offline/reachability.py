"""Who can reach whom under the rendered NetworkPolicies, evaluated as Kubernetes defines them.

A connection is (source, destination pod, port, protocol). Ingress to a pod is allowed when no
Ingress policy of its namespace selects it, or when one of those that do has a rule admitting the
source on that port; egress from a source pod likewise. Sources are pods of a cluster (matched by
namespace and pod selectors) or addresses outside it (matched by ipBlock), such as Google's front
ends or a pod of another cluster. Traffic through a LoadBalancer Service arrives from the client's
own address with `externalTrafficPolicy: Local` and from a node's address with `Cluster`
(source NAT): `through_load_balancer` applies that rule of GKE's to the rendered Service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from tools.offline.mocks import ResourceRecord
from tools.offline.stack import StackRun

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    cluster: str
    """Provider of the cluster (the recorded provider URN)."""
    namespace: str
    labels: tuple[tuple[str, str], ...]
    address: str
    """The pod's address, as seen by another cluster."""

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class External:
    address: str


Source = Pod | External


@dataclass
class ClusterPolicies:
    """The NetworkPolicies and namespace labels of the clusters one stack declares."""

    policies: list[dict] = field(default_factory=list)
    namespace_labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: StackRun) -> "ClusterPolicies":
        result = cls()
        for record in run.resources:
            kind = record.inputs.get("kind")
            metadata = record.inputs.get("metadata") or {}
            if kind == "NetworkPolicy":
                result.policies.append({"cluster": record.provider, **record.inputs})
            elif kind == "Namespace":
                result.namespace_labels[(record.provider, metadata["name"])] = {
                    **(metadata.get("labels") or {}), NAMESPACE_NAME_LABEL: metadata["name"]}
        return result

    def labels_of_namespace(self, cluster: str, namespace: str) -> dict[str, str]:
        return self.namespace_labels.get((cluster, namespace), {NAMESPACE_NAME_LABEL: namespace})

    def selecting(self, pod: Pod, direction: str) -> list[dict]:
        return [policy for policy in self.policies
                if policy["cluster"] == pod.cluster and policy["metadata"]["namespace"] == pod.namespace
                and direction in policy["spec"].get("policyTypes", ["Ingress"])
                and selector_matches(policy["spec"].get("podSelector") or {}, pod.label_map)]

    def _peer_admits(self, peer: dict, policy_pod: Pod, other: Source) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            address = ipaddress.IPv4Address(other.address)
            return (address in ipaddress.IPv4Network(block["cidr"])
                    and not any(address in ipaddress.IPv4Network(cidr) for cidr in block.get("except", [])))
        if not isinstance(other, Pod) or other.cluster != policy_pod.cluster:
            return False
        if "namespaceSelector" in peer:
            namespace_ok = selector_matches(peer["namespaceSelector"],
                                            self.labels_of_namespace(other.cluster, other.namespace))
        else:
            namespace_ok = other.namespace == policy_pod.namespace
        return namespace_ok and selector_matches(peer.get("podSelector") or {}, other.label_map)

    def _direction_allows(self, pod: Pod, other: Source, port: int, protocol: str, direction: str) -> bool:
        policies = self.selecting(pod, direction)
        if not policies:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                ports = rule.get("ports")
                peer_ok = not peers or any(self._peer_admits(peer, pod, other) for peer in peers)
                port_ok = not ports or any(
                    p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)
                if peer_ok and port_ok:
                    return True
        return False

    def allows(self, source: Source, destination: Pod, port: int, protocol: str = "TCP") -> bool:
        if isinstance(source, Pod):
            # Leaving its cluster, the destination is only an address to the source's policies.
            peer = destination if source.cluster == destination.cluster else External(destination.address)
            if not self._direction_allows(source, peer, port, protocol, "Egress"):
                return False
        return self._direction_allows(destination, source, port, protocol, "Ingress")


def selector_matches(selector: dict, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if ((operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and labels.get(key) in values)
                or (operator == "Exists" and not present) or (operator == "DoesNotExist" and present)):
            return False
    return True


def workload_pod(run: StackRun, component: str, address: str) -> Pod:
    """A pod of the Deployment or Job labelled with `component`, as the program declares it."""
    record = next(r for r in run.resources if r.inputs.get("kind") in ("Deployment", "Job")
                  and (r.inputs.get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/component") == component)
    labels = record.inputs["spec"]["template"]["metadata"]["labels"]
    return Pod(record.provider, record.inputs["metadata"]["namespace"], tuple(sorted(labels.items())), address)


def other_pod(like: Pod, namespace: str, address: str, labels: Optional[dict] = None) -> Pod:
    return Pod(like.cluster, namespace, tuple(sorted((labels or {}).items())), address)


def through_load_balancer(client: Pod, node_address: str, service: ResourceRecord) -> External:
    """The address a client's connection arrives from through a LoadBalancer Service."""
    policy = service.inputs["spec"].get("externalTrafficPolicy", "Cluster")
    return External(client.address if policy == "Local" else node_address)
