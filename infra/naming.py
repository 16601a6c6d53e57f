"""Names and labels, in one place, so every resource is named and labelled alike."""

from __future__ import annotations

import hashlib
from typing import Optional

import pulumi

MAX_NAME_LENGTH = 63
PART_OF = "mlflow-platform"
MANAGED_BY = "pulumi"


def cap_name(name: str, limit: int = MAX_NAME_LENGTH) -> str:
    """Cap a name at `limit` chars; a hash suffix keeps capped names distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"


def gcp_name(prefix: str, *parts: str) -> str:
    """A GCP name or id of the stack, namePrefix first: stacks with different prefixes share a project."""
    return "-".join((prefix, *parts))


# Workloads with their own GCP service account: the role part of its id.
SERVICE_ACCOUNT_ROLES = ("tracking", "dbadmin", "serving", "drift")


def service_account_id(prefix: str, role: str, environment: str) -> str:
    """The GCP service account id of a workload, uncapped: the settings model checks GCP's length rule."""
    return gcp_name(prefix, role, environment)


def gcp_labels(environment: str) -> dict[str, str]:
    """Labels every labelable GCP resource carries."""
    return {"app": "mlflow", "env": environment, "managed-by": MANAGED_BY}


def k8s_labels(instance: str, component: str) -> dict[str, str]:
    """Recommended Kubernetes labels for one component of one instance."""
    return {
        "app.kubernetes.io/name": "mlflow",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def k8s_selector(instance: str, component: str) -> dict[str, str]:
    """The immutable subset of k8s_labels used by selectors."""
    labels = k8s_labels(instance, component)
    return {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                          "app.kubernetes.io/component")}


def child_options(parent: pulumi.Resource, opts: Optional[pulumi.ResourceOptions],
                  **extra) -> pulumi.ResourceOptions:
    """Options for a component's children: parented to it, inheriting its explicit dependencies.

    Pulumi does not pass a component's depends_on to its children, yet every GCP resource
    must wait for the project's APIs to be enabled.
    """
    inherited = list(opts.depends_on or []) if opts and isinstance(opts.depends_on, list) else []
    extra_deps = list(extra.pop("depends_on", None) or [])
    return pulumi.ResourceOptions(parent=parent, depends_on=inherited + extra_deps or None, **extra)


def job_wait(deadline_seconds: int) -> pulumi.CustomTimeouts:
    """Pulumi's wait for a Job to complete (10 minutes unless set): its whole activeDeadlineSeconds,
    and a minute for the API, or `up` fails while the Job would still succeed."""
    minutes = f"{deadline_seconds // 60 + 1}m"
    return pulumi.CustomTimeouts(create=minutes, update=minutes)
