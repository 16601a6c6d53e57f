"""Artifact Registry: the Docker repository the MLflow images are pushed to, and the Python
package source the serving pods restore model environments from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options, gcp_name


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
    """Most recent versions of each image kept by the cleanup policy (`storage.registryKeepVersions`)."""


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
            # Tags stay mutable: a tag is the build's cache key (infra/images.py build_tag), not what runs;
            # pods pin the digest. pulumi-docker-build rebuilds and pushes whenever its state's contextHash
            # differs from the context's (provider/internal/image.go, Image.Diff), so a stack recreated
            # against this repository, an `up` interrupted after the push, `pulumi state delete` or a revert
            # push the same tag again; builds are not reproducible, so it names a new digest, which an
            # immutable repository refuses.
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=False),
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


PACKAGE_READER_ROLE = "roles/artifactregistry.reader"
# Cached PyPI files are deleted 90 days after they were cached (`olderThan` counts from upload, not
# last download); a later build fetches them again from PyPI.
PYPI_CACHE_RETENTION = f"{90 * 86400}s"


@dataclass(frozen=True)
class PackageIndex:
    """What a consumer of the package source needs: the URL, and the repository to be granted on."""

    url: pulumi.Input[str]
    """Simple-API URL (ends in /simple/)."""
    repository_id: pulumi.Input[str]
    """Repository behind that URL."""
    location: str
    """Its region."""


@dataclass(frozen=True)
class PackageSourceArgs:
    project: str
    """GCP project."""
    location: str
    """Region of the repositories (same as the clusters: the pods download in-region)."""
    name_prefix: str
    """Prefix of the repository names."""
    labels: dict[str, str]
    """Repository labels."""
    private_repository: bool = False
    """Also a standard Python repository for the team's own packages, ahead of PyPI in one index."""


class PackageSource(pulumi.ComponentResource):
    """The package index the serving pods restore model environments from: a remote repository
    caching PyPI (pull-through) and, with `private_repository`, a standard Python repository for
    private packages, both behind one virtual repository that prefers the private one (so a public
    package cannot shadow a private name)."""

    index_url: pulumi.Output[str]
    """Simple-API URL the pods use as their only index."""
    repository_id: pulumi.Output[str]
    """The repository the pods read (the virtual one when there is a private repository)."""
    private_repository_url: Optional[pulumi.Output[str]]
    """Where data scientists upload private packages (twine / uv publish), if declared."""

    def __init__(self, name: str, args: PackageSourceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:registry:PackageSource", name, None, opts)

        def repository(role: str, description: str, **kwargs) -> gcp.artifactregistry.Repository:
            return gcp.artifactregistry.Repository(
                f"{name}-{role}", project=args.project, location=args.location,
                repository_id=gcp_name(args.name_prefix, role), format="PYTHON", description=description,
                labels=args.labels, opts=child_options(self, opts), **kwargs)

        pypi = repository(
            "pypi", "Pull-through cache of PyPI for model environments", mode="REMOTE_REPOSITORY",
            remote_repository_config=gcp.artifactregistry.RepositoryRemoteRepositoryConfigArgs(
                description="pypi.org",
                python_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigPythonRepositoryArgs(
                    public_repository="PYPI")),
            cleanup_policy_dry_run=False,
            cleanup_policies=[gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                id="delete-unused", action="DELETE",
                condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                    tag_state="ANY", older_than=PYPI_CACHE_RETENTION))])
        served = pypi
        self.private_repository_url = None
        if args.private_repository:
            private = repository("python-private", "Private Python packages of model environments")
            served = repository(
                "python", "Private packages first, then PyPI", mode="VIRTUAL_REPOSITORY",
                virtual_repository_config=gcp.artifactregistry.RepositoryVirtualRepositoryConfigArgs(
                    upstream_policies=[
                        gcp.artifactregistry.RepositoryVirtualRepositoryConfigUpstreamPolicyArgs(
                            id="private", repository=private.id, priority=100),
                        gcp.artifactregistry.RepositoryVirtualRepositoryConfigUpstreamPolicyArgs(
                            id="pypi", repository=pypi.id, priority=10),
                    ]))
            self.private_repository_url = python_repository_url(args.location, args.project, private.repository_id)
        self.repository_id = served.repository_id
        self.index_url = pulumi.Output.concat(
            python_repository_url(args.location, args.project, served.repository_id), "simple/")
        self.index = PackageIndex(self.index_url, self.repository_id, args.location)
        self.register_outputs({"index_url": self.index_url, "repository_id": self.repository_id,
                               **({"private_repository_url": self.private_repository_url}
                                  if self.private_repository_url is not None else {})})


def python_repository_url(location: str, project: str, repository_id: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat("https://", location, "-python.pkg.dev/", project, "/", repository_id, "/")
