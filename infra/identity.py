"""Workload Identity: a GCP service account per workload, bound to its Kubernetes service account.

No service-account key is ever created: pods get short-lived tokens from the GKE metadata server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.naming import cap_name, child_options

WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"


@dataclass(frozen=True)
class BucketGrant:
    bucket: pulumi.Input[str]
    """Bucket name."""
    role: str
    """Role granted on that bucket only."""


@dataclass(frozen=True)
class DatasetGrant:
    dataset: pulumi.Input[str]
    """BigQuery dataset id (in the identity's project)."""
    role: str
    """Role granted on that dataset only."""


@dataclass(frozen=True)
class WorkloadIdentityArgs:
    project: pulumi.Input[str]
    """GCP project of the service account."""
    account_id: str
    """GCP service account id (6-30 chars)."""
    workload_pool: pulumi.Input[str]
    """PROJECT.svc.id.goog, from the cluster: the pool exists only once a cluster enables it."""
    namespace: pulumi.Input[str]
    """Namespace of the Kubernetes service account."""
    ksa_name: str
    """Kubernetes service account name."""
    provider: k8s.Provider
    """Provider of the cluster the workload runs in."""
    labels: dict[str, str]
    """Labels of the Kubernetes service account."""
    project_roles: tuple[str, ...] = ()
    """Project-level roles, only for roles GCP offers no narrower resource for."""
    bucket_grants: tuple[BucketGrant, ...] = field(default_factory=tuple)
    """Roles granted on individual buckets."""
    dataset_grants: tuple[DatasetGrant, ...] = field(default_factory=tuple)
    """Roles granted on individual BigQuery datasets."""

    def __post_init__(self) -> None:
        if not 6 <= len(self.account_id) <= 30:
            raise ValueError(f"WorkloadIdentityArgs.account_id={self.account_id!r}: must be 6-30 chars")
        if any(role == "roles/owner" or role == "roles/editor" for role in self.project_roles):
            raise ValueError("WorkloadIdentityArgs.project_roles: basic roles (owner, editor) are never granted")


class WorkloadIdentity(pulumi.ComponentResource):
    """GCP service account + Kubernetes service account + the binding that lets one act as the other."""

    gcp_service_account_email: pulumi.Output[str]
    ksa_name: pulumi.Output[str]
    grants: list[pulumi.Resource]
    """Every IAM binding of the identity: a workload that must not start before IAM allows it waits for these."""

    def __init__(self, name: str, args: WorkloadIdentityArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:identity:WorkloadIdentity", name, None, opts)
        child = child_options(self, opts)
        account = gcp.serviceaccount.Account(
            f"{name}-gsa",
            project=args.project,
            account_id=cap_name(args.account_id, 30),
            display_name=f"MLflow workload {args.ksa_name}",
            opts=child,
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        grants: list[pulumi.Resource] = [
            gcp.projects.IAMMember(
                f"{name}-{role.split('/')[-1].replace('.', '-').lower()}",
                project=args.project, role=role, member=member, opts=child,
            )
            for role in args.project_roles
        ]
        grants += [
            gcp.storage.BucketIAMMember(
                f"{name}-bucket-{index}", bucket=grant.bucket, role=grant.role, member=member, opts=child,
            )
            for index, grant in enumerate(args.bucket_grants)
        ]
        grants += [
            gcp.bigquery.DatasetIamMember(
                f"{name}-dataset-{index}", project=args.project, dataset_id=grant.dataset, role=grant.role,
                member=member, opts=child,
            )
            for index, grant in enumerate(args.dataset_grants)
        ]
        grants.append(gcp.serviceaccount.IAMMember(
            f"{name}-wi-binding",
            service_account_id=account.name,
            role=WORKLOAD_IDENTITY_USER,
            member=pulumi.Output.concat(
                "serviceAccount:", args.workload_pool, "[", args.namespace, "/", args.ksa_name, "]",
            ),
            opts=child,
        ))
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-ksa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.ksa_name,
                namespace=args.namespace,
                labels=args.labels,
                annotations={WORKLOAD_IDENTITY_ANNOTATION: account.email},
            ),
            # Pods that need the API server mount a token explicitly; the rest get none.
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider),
        )
        self.gcp_service_account_email = account.email
        self.ksa_name = ksa.metadata.name
        self.grants = grants
        self.register_outputs({
            "gcp_service_account_email": self.gcp_service_account_email,
            "ksa_name": self.ksa_name,
        })
