"""The Artifact Registry Docker repository the MLflow images are pushed to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options


@dataclass(frozen=True)
class ImageRepositoryArgs:
    project: str
    """GCP project."""
    location: str
    """Region of the repository (same as the clusters, so pulls stay regional)."""
    repository_id: str
    """Repository name."""
    labels: dict[str, str]
    """Repository labels."""
    keep_versions: int = 10
    """Most recent versions of each image kept by the cleanup policy."""

    def __post_init__(self) -> None:
        if not 1 <= self.keep_versions <= 1000:
            raise ValueError(f"ImageRepositoryArgs.keep_versions={self.keep_versions}: allowed 1-1000")


class ImageRepository(pulumi.ComponentResource):
    """A Docker repository that prunes old versions but keeps the newest ones."""

    repository_id: pulumi.Output[str]
    repository_url: pulumi.Output[str]

    def __init__(self, name: str, args: ImageRepositoryArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:registry:ImageRepository", name, None, opts)
        repository = gcp.artifactregistry.Repository(
            f"{name}-repo",
            project=args.project,
            location=args.location,
            repository_id=args.repository_id,
            format="DOCKER",
            description="MLflow tracking and serving images",
            labels=args.labels,
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-most-recent",
                    action="KEEP",
                    most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=args.keep_versions,
                    ),
                ),
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-older",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="ANY", older_than="2592000s",
                    ),
                ),
            ],
            opts=child_options(self, opts),
        )
        self.repository_id = repository.repository_id
        self.repository_url = pulumi.Output.concat(
            args.location, "-docker.pkg.dev/", args.project, "/", repository.repository_id,
        )
        self.register_outputs({"repository_id": self.repository_id, "repository_url": self.repository_url})
