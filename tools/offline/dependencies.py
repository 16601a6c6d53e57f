"""Dependency completeness: every input that names another declared resource by a literal must
come with a dependency on that resource, or `pulumi up` may create the two in either order.

Pulumi orders resources only by `depends_on` and by the outputs one resource takes from another.
An input written as a literal (a bucket name from the settings, an address computed in Python, a
Secret's name typed twice) names the resource without waiting for it: the first `up` on an empty
project then fails with 404s or races IAM. Two kinds of literal are found:

- GCP identifiers: what the program can know before GCP answers (a service account's email, a
  bucket's name, a reserved address, an instance's connection name, a cluster's workload pool, a
  database's name), found anywhere in another resource's inputs, secrets included.
- Kubernetes references by kind and name within one cluster and namespace: the namespace of an
  object, a pod's service account, Secrets and ConfigMaps it mounts or reads, the HPA's target,
  the Ingress's backend Service and the GKE objects its annotations name.

A reference is satisfied when the named resource is a dependency, directly or through others
(the provider a Kubernetes object is created with counts: it waits for the cluster's node pool).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from tools.offline.mocks import ResourceRecord, is_secret
from tools.offline.stack import StackRun

# Shorter names ("mlflow", "dev") are ordinary words in labels and namespaces.
MIN_LITERAL_LENGTH = 8
# State fields that identify a resource of a type before GCP answers ("name" of every GCP resource).
GCP_IDENTIFIERS = {
    "gcp:serviceaccount/account:Account": ("email",),
    "gcp:compute/address:Address": ("address",),
    "gcp:compute/globalAddress:GlobalAddress": ("address",),
    "gcp:sql/databaseInstance:DatabaseInstance": ("connectionName",),
    "gcp:container/cluster:Cluster": ("workloadIdentityConfig.workloadPool",),
}
# Annotations whose value names a Kubernetes object of the same namespace.
ANNOTATION_REFERENCES = {
    "networking.gke.io/managed-certificates": "ManagedCertificate",
    "networking.gke.io/v1beta1.FrontendConfig": "FrontendConfig",
}
BACKEND_CONFIG_ANNOTATION = "cloud.google.com/backend-config"


@dataclass(frozen=True)
class Reference:
    consumer: str
    path: str
    target: str
    literal: str

    def __str__(self) -> str:
        return (f"{self.consumer}: input {self.path} names {self.target} by the literal {self.literal!r} "
                f"but does not depend on it; pass the resource's output instead")


def _field(state: dict, dotted: str) -> Any:
    value: Any = state
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# Named only as the path of a connection URI (postgresql://user@host:port/NAME), whatever its length.
URI_PATH_NAMES = ("gcp:sql/database:Database",)


def gcp_literals(record: ResourceRecord) -> dict[str, re.Pattern]:
    """Literal -> how it appears in another resource's input."""
    if not record.type.startswith("gcp:"):
        return {}
    if record.type in URI_PATH_NAMES:
        name = record.state.get("name", "")
        return {f"/{name}": re.compile(rf"://[^/\s]+/{re.escape(name)}(?=$|[?\s])", re.M)}
    fields = ("name",) + GCP_IDENTIFIERS.get(record.type, ())
    values = {_field(record.state, field) for field in fields}
    # Not part of a longer identifier: an IAM database user `SA@PROJECT.iam` is not named by the
    # service account's email `SA@PROJECT.iam.gserviceaccount.com` (the user derives from it).
    return {value: re.compile(rf"(?<![A-Za-z0-9_.\-]){re.escape(value)}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9])")
            for value in values if isinstance(value, str) and len(value) >= MIN_LITERAL_LENGTH}


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string in an input tree, inside secrets too."""
    if is_secret(value):
        yield from _strings(value["value"], path)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _k8s_key(record: ResourceRecord) -> Optional[tuple[str, str, str, str]]:
    if not record.type.startswith("kubernetes:") or not record.custom:
        return None
    metadata = record.inputs.get("metadata") or {}
    kind = record.inputs.get("kind", "")
    namespace = "" if kind == "Namespace" else metadata.get("namespace", "")
    return record.provider, namespace, kind, metadata.get("name", "")


def k8s_references(record: ResourceRecord) -> Iterator[tuple[str, str, str, str]]:
    """(path, kind, namespace, name) of every object this Kubernetes object refers to by name."""
    inputs = record.inputs
    metadata = inputs.get("metadata") or {}
    namespace = metadata.get("namespace", "")
    if namespace:
        yield "metadata.namespace", "Namespace", "", namespace
    for key, kind in ANNOTATION_REFERENCES.items():
        if key in (metadata.get("annotations") or {}):
            yield f"metadata.annotations[{key}]", kind, namespace, metadata["annotations"][key]
    backend = (metadata.get("annotations") or {}).get(BACKEND_CONFIG_ANNOTATION)
    if backend:
        for name in json.loads(backend).values():
            yield f"metadata.annotations[{BACKEND_CONFIG_ANNOTATION}]", "BackendConfig", namespace, name

    def walk(value: Any, path: str) -> Iterator[tuple[str, str, str, str]]:
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
            return
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            here = f"{path}.{key}"
            if key == "serviceAccountName" and isinstance(item, str):
                yield here, "ServiceAccount", namespace, item
            elif key in ("secretKeyRef", "configMapKeyRef", "configMap") and isinstance(item, dict):
                yield here, "ConfigMap" if "onfigMap" in key else "Secret", namespace, item.get("name", "")
            elif key in ("secret", "oauthclientCredentials") and isinstance(item, dict) and "secretName" in item:
                yield here, "Secret", namespace, item["secretName"]
            elif key == "scaleTargetRef" and isinstance(item, dict):
                yield here, item.get("kind", ""), namespace, item.get("name", "")
            elif key == "service" and isinstance(item, dict) and "name" in item:
                yield here, "Service", namespace, item["name"]
            else:
                yield from walk(item, here)

    yield from walk(inputs.get("spec") or {}, "spec")


def waits_for(run: StackRun) -> dict[str, set[str]]:
    """URN -> every URN it waits for, through dependencies and providers."""
    by_urn = {record.urn: record for record in run.resources}

    def direct(record: ResourceRecord) -> set[str]:
        return set(record.dependencies) | ({record.provider} if record.provider in by_urn else set())

    done: dict[str, set[str]] = {}

    def visit(urn: str) -> set[str]:
        if urn not in done:
            done[urn] = set()
            record = by_urn.get(urn)
            reached = set()
            for dependency in direct(record) if record else ():
                reached |= {dependency} | visit(dependency)
            done[urn] = reached
        return done[urn]

    for urn in by_urn:
        visit(urn)
    return done


def missing_dependencies(run: StackRun) -> list[Reference]:
    """Every literal reference to a declared resource that is not a dependency."""
    waiting = waits_for(run)
    # One literal may identify several resources (two clusters share the project's workload pool):
    # waiting for any of them is enough.
    literals: dict[str, tuple[re.Pattern, list[ResourceRecord]]] = {}
    for record in run.resources:
        for literal, pattern in gcp_literals(record).items():
            literals.setdefault(literal, (pattern, []))[1].append(record)
    k8s_objects = {key: record for record in run.resources if (key := _k8s_key(record)) is not None}
    found: list[Reference] = []
    for record in run.resources:
        if not record.custom or record.type.startswith("pulumi:providers"):
            continue
        own = gcp_literals(record)
        for path, text in _strings(record.inputs):
            for literal, (pattern, targets) in literals.items():
                if literal in own or not pattern.search(text):
                    continue
                if not any(t.urn == record.urn or t.urn in waiting[record.urn] for t in targets):
                    found.append(Reference(record.name, path, " or ".join(t.name for t in targets), literal))
        if _k8s_key(record) is None:
            continue
        for path, kind, namespace, name in k8s_references(record):
            target = k8s_objects.get((record.provider, namespace, kind, name))
            if target is not None and target.urn != record.urn and target.urn not in waiting[record.urn]:
                found.append(Reference(record.name, path, f"{kind} {target.name}", name))
    return sorted(set(found), key=str)
