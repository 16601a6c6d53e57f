"""The GCS bucket that holds MLflow artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options
from infra.settings import StorageSettings


@dataclass(frozen=True)
class ArtifactBucketArgs:
    project: str
    """GCP project."""
    bucket_name: str
    """Globally unique bucket name."""
    location: str
    """Bucket location (the region, to keep artifact traffic regional)."""
    labels: dict[str, str]
    """Bucket labels."""
    settings: StorageSettings
    """Lifecycle days and whether a non-empty bucket may be deleted."""
    protect: bool = True
    """Pulumi refuses to delete or replace the bucket (`protect`): `pulumi destroy` then fails in its
    preview, before it deletes anything."""
    encryption_key_id: Optional[pulumi.Input[str]] = None
    """Cloud KMS key new objects are encrypted with (CMEK); None: Google-managed."""
    encryption_key_ready: tuple[pulumi.Resource, ...] = ()
    """What the bucket waits for: the key's grant to Cloud Storage's service agent, propagated."""


class ArtifactBucket(pulumi.ComponentResource):
    """Private, versioned artifact storage; only the IAM granted here reaches it."""

    bucket_name: pulumi.Output[str]
    bucket_url: pulumi.Output[str]

    def __init__(self, name: str, args: ArtifactBucketArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:storage:ArtifactBucket", name, None, opts)
        self._bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            project=args.project,
            name=args.bucket_name,
            location=args.location,
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            force_destroy=args.settings.force_destroy,
            encryption=gcp.storage.BucketEncryptionArgs(default_kms_key_name=args.encryption_key_id)
            if args.encryption_key_id is not None else None,
            labels=args.labels,
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="SetStorageClass", storage_class="NEARLINE"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        age=args.settings.nearline_after_days, matches_storage_classes=["STANDARD"], with_state="LIVE",
                    ),
                ),
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        days_since_noncurrent_time=args.settings.noncurrent_retention_days, with_state="ARCHIVED",
                    ),
                ),
            ],
            opts=child_options(self, opts, depends_on=list(args.encryption_key_ready), protect=args.protect),
        )
        self.bucket_name = self._bucket.name
        self.bucket_url = self._bucket.url
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_url": self.bucket_url})
