"""The MLflow tracking and serving images: built from mlflow_image/ and pushed, or prebuilt."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Optional

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp
from e2b_dockerfile_utils import PatternMatcher

from infra.naming import child_options

ROOT = Path(__file__).resolve().parent.parent
IMAGE_CONTEXT = "mlflow_image"
TARGETS = ("tracking", "serving")
DOCKERFILE = "Dockerfile"
PLATFORM = docker_build.Platform.LINUX_AMD64


def ignore_patterns(context: Path, dockerfile: Path) -> list[str]:
    """The ignore file the builder applies: `<Dockerfile>.dockerignore` first, else the context's."""
    for candidate in (dockerfile.with_name(f"{dockerfile.name}.dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8-sig").splitlines()
    return []


def _walk(directory: Path, prefix: str = "") -> Iterator[str]:
    """Every path below `directory` that is not a directory, in Go's filepath.WalkDir order; links are
    not followed."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}"


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """The context's files that survive its .dockerignore, as BuildKit (fsutil) filters them."""
    ignored = PatternMatcher(ignore_patterns(context, dockerfile)).matches
    return [path for path in _walk(context) if not ignored(path)]


def _go_mode(mode: int) -> str:
    """Go's FileMode.String() of a file or symlink, e.g. `-rw-r--r--`: what the provider hashes."""
    kinds = "".join(c for c, on in (("L", stat.S_ISLNK(mode)), ("u", mode & stat.S_ISUID),
                                    ("g", mode & stat.S_ISGID), ("t", mode & stat.S_ISVTX)) if on)
    return (kinds or "-") + "".join(c if mode & (0o400 >> i) else "-" for i, c in enumerate("rwxrwxrwx"))


def context_hash(context: Path, dockerfile: Path) -> str:
    """pulumi-docker-build's `contextHash`, byte for byte (hashBuildContext in its context.go): the
    Dockerfile, then each surviving file's content, path and mode. The provider rebuilds when it moves."""
    digest = hashlib.sha256(dockerfile.read_bytes())
    for name in context_files(context, dockerfile):
        path = context / name
        if not path.is_file():  # links to directories, pipes: the provider skips them
            continue
        digest.update(path.read_bytes())
        digest.update(name.encode())
        digest.update(_go_mode(path.lstat().st_mode).encode())
    return digest.hexdigest()


def build_tag(context: str, target: str, root: Path = ROOT) -> str:
    """The tag of `target` built from `context`: a hash of what makes pulumi-docker-build rebuild
    (Image.Diff): its context hash, the context, Dockerfile, target and platform we pass, and its
    version (the hash is its code). Unchanged sources keep their tag; the provider may still rebuild them
    (no state, an interrupted `up`), pushing the same tag with a new digest: pods pin digests, not tags."""
    # push, build_on_preview and the registry login are constants; another region is another repository.
    directory = root / context
    inputs = (context_hash(directory, directory / DOCKERFILE), context, DOCKERFILE, target, PLATFORM.value,
              version("pulumi-docker-build"))
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()


def image_version(prebuilt: Optional[str]) -> str:
    """What names the migration Job: the tracking image's tag, or the prebuilt image's digest."""
    if prebuilt:
        return prebuilt.rsplit("sha256:", 1)[1]
    return build_tag(IMAGE_CONTEXT, "tracking")


def registry_token() -> pulumi.Output[str]:
    """A short-lived OAuth token of whoever runs `pulumi up`: no stored registry key."""
    return pulumi.Output.secret(gcp.organizations.get_client_config_output().access_token)


def pushed_image(name: str, *, context: str, target: str, image: pulumi.Input[str],
                 registry_host: pulumi.Input[str], token: pulumi.Input[str], opts: pulumi.ResourceOptions,
                 root: Path = ROOT) -> pulumi.Output[str]:
    """Builds `target` of `context`/Dockerfile, pushes it as IMAGE:<build_tag[:16]>; its reference by digest.
    `context` is relative to `root`, the folder of the project's Pulumi.yaml (where Pulumi runs it)."""
    built = docker_build.Image(
        name,
        context=docker_build.BuildContextArgs(location=context),
        dockerfile=docker_build.DockerfileArgs(location=f"{context}/{DOCKERFILE}"),
        target=target,
        platforms=[PLATFORM],
        tags=[pulumi.Output.concat(image, ":", build_tag(context, target, root)[:16])],
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
    context: str = IMAGE_CONTEXT
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
                                        registry_host=args.registry_host, token=token,
                                        opts=child_options(self, opts))
        self.tracking_image = refs["tracking"]
        self.serving_image = refs["serving"]
        self.register_outputs({"tracking_image": self.tracking_image, "serving_image": self.serving_image})
