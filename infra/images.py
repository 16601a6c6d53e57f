"""The MLflow tracking and serving images: built from mlflow_image/ and pushed, or prebuilt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from infra.naming import child_options

IMAGE_DIR = Path(__file__).resolve().parent.parent / "mlflow_image"
TARGETS = ("tracking", "serving")


def content_hash(directory: Path = IMAGE_DIR) -> str:
    """A hash of every file the build reads: the same sources always give the same tag."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_version(prebuilt: Optional[str], directory: Path = IMAGE_DIR) -> str:
    """What names the migration Job: the source hash, or the prebuilt image's digest."""
    if prebuilt:
        return prebuilt.rsplit("sha256:", 1)[1]
    return content_hash(directory)


def registry_token() -> pulumi.Output[str]:
    """A short-lived OAuth token of whoever runs `pulumi up`: no stored registry key."""
    return pulumi.Output.secret(gcp.organizations.get_client_config_output().access_token)


def pushed_image(name: str, *, context: str, target: str, image: pulumi.Input[str], version: str,
                 registry_host: str, token: pulumi.Input[str], opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """Builds `target` of `context`/Dockerfile, pushes it as IMAGE:<version[:16]>; its reference by digest."""
    built = docker_build.Image(
        name,
        context=docker_build.BuildContextArgs(location=context),
        dockerfile=docker_build.DockerfileArgs(location=f"{context}/Dockerfile"),
        target=target,
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[pulumi.Output.concat(image, ":", version[:16])],
        push=True,
        build_on_preview=False,
        registries=[docker_build.RegistryArgs(address=registry_host, username="oauth2accesstoken", password=token)],
        opts=opts,
    )
    return built.ref


@dataclass(frozen=True)
class MlflowImagesArgs:
    repository_url: pulumi.Input[str]
    """REGION-docker.pkg.dev/PROJECT/REPO."""
    registry_host: str
    """REGION-docker.pkg.dev, for push credentials."""
    version: str
    """Tag of the built images (content hash of mlflow_image/)."""
    context: str = "mlflow_image"
    """Build context, relative to the project root (where Pulumi runs the program)."""
    prebuilt: tuple[tuple[str, Optional[str]], ...] = (("tracking", None), ("serving", None))
    """Per target, an image by digest to use instead of building."""


class MlflowImages(pulumi.ComponentResource):
    """References by digest to the tracking and serving images."""

    tracking_image: pulumi.Output[str]
    serving_image: pulumi.Output[str]

    def __init__(self, name: str, args: MlflowImagesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:images:MlflowImages", name, None, opts)
        prebuilt = dict(args.prebuilt)
        refs: dict[str, pulumi.Output[str]] = {}
        token = None
        for target in TARGETS:
            if prebuilt.get(target):
                refs[target] = pulumi.Output.from_input(prebuilt[target])
                continue
            if token is None:
                token = registry_token()
            refs[target] = pushed_image(f"{name}-{target}", context=args.context, target=target,
                                        image=pulumi.Output.concat(args.repository_url, f"/mlflow-{target}"),
                                        version=args.version, registry_host=args.registry_host, token=token,
                                        opts=child_options(self, opts))
        self.tracking_image = refs["tracking"]
        self.serving_image = refs["serving"]
        self.register_outputs({"tracking_image": self.tracking_image, "serving_image": self.serving_image})
