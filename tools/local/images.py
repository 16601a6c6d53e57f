"""The images the program pushes, built here from their real Dockerfiles by a real daemonless
builder, and the filesystems the local platform runs its pods from.

Debian's buildah builds each Dockerfile as `pulumi up` would (the same context, .dockerignore and
target), as root with chroot isolation, the host's network and the vfs storage driver, into a
store of this project's own (`.images/`, or MLFLOW_LOCAL_IMAGE_STORE). The official base,
python:3.11.14-slim-bookworm, cannot be pulled on these machines, so a stand-in is made under its
name from Debian's own packages. Everything it differs in from the official base is listed here:

- Python is Debian bookworm's 3.11 (3.11.2 with Debian's patches) in /usr/bin, linked from
  /usr/local/bin where the official image installs python.org's 3.11.14; `venv` and `ensurepip`
  are Debian's (python3.11-venv), so a new venv gets Debian's bundled pip and setuptools.
- debootstrap's minbase with `passwd` (groupadd, useradd) and `ca-certificates`, not the official
  image's package set; apt lists and downloaded packages are removed, as the official image does.
- /etc/ssl/certs/ca-certificates.crt is this machine's bundle, which also trusts the TLS proxy
  in front of the package index, and PIP_CERT points pip at it (the official image has neither).
- Image config: the official PATH (with the sbin folders), LANG=C.UTF-8 and CMD python3; no
  PYTHON_VERSION, GPG_KEY or PYTHON_SHA256.

Images are tagged as the program tags them (infra.images.build_tag), so an unchanged image is
built once per store; a lock per image (and one for the base) lets every process that shares the
store wait for a build another started, while different images build side by side.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from infra.images import build_tag

ROOT = Path(__file__).resolve().parents[2]
STORE_ENV = "MLFLOW_LOCAL_IMAGE_STORE"
DEFAULT_STORE = ROOT / ".images"
BUILD_TIMEOUT_SECONDS = 1800
LISTING_ATTEMPTS = 5
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates", "passwd")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_CONFIG = ("--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--env", "LANG=C.UTF-8",
               "--env", f"PIP_CERT={HOST_CA_BUNDLE}", "--cmd", '["python3"]')


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and ends with its output."""


@dataclass(frozen=True)
class ImageSource:
    """One image the program pushes: its build context, Dockerfile target and local name."""

    name: str
    context: Path
    target: str

    @property
    def dockerfile(self) -> Path:
        return self.context / "Dockerfile"

    @property
    def reference(self) -> str:
        return f"localhost/{self.name}:{build_tag(self.context.name, self.target, self.context.parent)[:16]}"


# What infra/images.py builds (MLflow's two targets) and the load test's Locust image.
SOURCES = {
    "mlflow-tracking": ImageSource("mlflow-tracking", ROOT / "mlflow_image", "tracking"),
    "mlflow-serving": ImageSource("mlflow-serving", ROOT / "mlflow_image", "serving"),
    "mlflow-loadtest": ImageSource("mlflow-loadtest", ROOT / "loadtest", "locust"),
}


def _image_name(image: str) -> str:
    """NAME of REGISTRY/REPO/NAME@sha256:... or REGISTRY/REPO/NAME:TAG."""
    return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def built_here(image: str) -> bool:
    """Whether the program builds the image a manifest names (else it is a third party's)."""
    return _image_name(image) in SOURCES


def source_for(image: str) -> ImageSource:
    """The local source of an image a manifest names (REGISTRY/REPO/NAME@sha256:... or :tag)."""
    name = _image_name(image)
    if name not in SOURCES:
        raise ImageBuildError(f"image {image!r} is not built by the program (known: {', '.join(SOURCES)})")
    return SOURCES[name]


def base_reference(dockerfile: Path) -> str:
    """The official base a Dockerfile starts from (its first FROM), fully qualified."""
    match = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    if match is None:
        raise ImageBuildError(f"{dockerfile}: no FROM line")
    name = match.group(1).split("@", 1)[0]
    return name if "/" in name else f"docker.io/library/{name}"


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (deb822 or one-line sources)."""
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")) + [sources_dir / "sources.list"]:
        if not path.is_file():
            continue
        text = path.read_text()
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
        one_line = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE)
        if one_line:
            return one_line.group(1)
    raise ImageBuildError(f"no Debian bookworm archive in {sources_dir}'s apt sources (debootstrap needs one)")


class ImageStore:
    """A buildah store of this project's: the stand-in base, the built images and one
    read-only root filesystem per image for the local platform's pods."""

    def __init__(self, root: Optional[Path] = None, progress=None):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_STORE).resolve()
        self.progress = progress or (lambda message: None)
        self.log_dir = self.root / "logs"

    @property
    def storage_flags(self) -> list[str]:
        return ["--storage-driver", "vfs", "--root", str(self.root / "storage"),
                "--runroot", str(self.root / "run")]

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One process at a time per image (or for the base), across every process sharing the store."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".lock-{name}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _run(self, step: str, argv: list[str], *, timeout: float = BUILD_TIMEOUT_SECONDS) -> str:
        """Run a tool; its output goes to logs/<step>.log and, on failure, into the error."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', step)}.log"
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        log_path.write_text(f"$ {' '.join(argv)}\n{completed.stdout}\n{completed.stderr}")
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-25:])
            raise ImageBuildError(f"{step} failed (exit {completed.returncode}); log {log_path}:\n{tail}")
        return completed.stdout

    def buildah(self, step: str, *args: str, timeout: float = BUILD_TIMEOUT_SECONDS) -> str:
        return self._run(step, ["buildah", *self.storage_flags, *args], timeout=timeout)

    def exists(self, reference: str) -> bool:
        return subprocess.run(["buildah", *self.storage_flags, "inspect", "--type", "image", reference],
                              capture_output=True).returncode == 0

    # --- the stand-in for the official base ----------------------------------------------------
    def ensure_base(self, reference: str) -> None:
        if self.exists(reference):
            return
        self.progress(f"images: stand-in base {reference} from Debian's packages (debootstrap)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="base-", dir=self.root) as scratch:
            rootfs = Path(scratch) / "rootfs"
            self._run("debootstrap", ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                                      "bookworm", str(rootfs), debian_mirror()])
            for name, target in (("python3.11", "/usr/bin/python3.11"), ("python3", "python3.11"),
                                 ("python", "python3")):
                (rootfs / "usr/local/bin" / name).symlink_to(target)
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / HOST_CA_BUNDLE.relative_to("/"))
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            tarball = Path(scratch) / "rootfs.tar"
            self._run("base-tar", ["tar", "-C", str(rootfs), "-cf", str(tarball), "."])
            container = self.buildah("base-from", "from", "scratch").strip()
            try:
                self.buildah("base-add", "add", container, str(tarball), "/")  # a local tar is unpacked
                self.buildah("base-config", "config", *BASE_CONFIG, container)
                self.buildah("base-commit", "commit", container, reference)
            finally:
                self.buildah("base-rm", "rm", container)
        self.progress(f"images: base ready in {time.monotonic() - started:.0f}s")

    # --- the images the program pushes ----------------------------------------------------------
    def build(self, source: ImageSource) -> str:
        """Build `source` unless its reference (content hash) is in the store; returns it."""
        reference = source.reference
        with self._locked(source.name):
            if self.exists(reference):
                return reference
            with self._locked("base"):
                self.ensure_base(base_reference(source.dockerfile))
            self.progress(f"images: building {reference} (buildah, {source.context.name}/Dockerfile, "
                          f"target {source.target})")
            started = time.monotonic()
            self.buildah(f"build-{source.name}", "bud", "--pull=never", "--isolation", "chroot", "--network", "host",
                         "--file", str(source.dockerfile),
                         "--target", source.target,
                         "--tag", reference, str(source.context))
            self.progress(f"images: {reference} built in {time.monotonic() - started:.0f}s")
            self._evict_other_versions(source.name, reference)
        return reference

    def _evict_other_versions(self, name: str, reference: str) -> None:
        """Older versions of an image and their root filesystems: each is a full copy with vfs, so a
        store would otherwise grow by gigabytes with every change."""
        for container in self._listing("containers", "--format", "{{.ContainerName}}"):
            if container.startswith(f"rootfs-{name}-") and container != _rootfs_name(reference):
                self.buildah(f"rm-{container}", "rm", container)
        for image in self._listing("images", "--format", "{{.Name}}:{{.Tag}}"):
            if image.startswith(f"localhost/{name}:") and image != reference:
                self.buildah(f"rmi-{image}", "rmi", image)

    def _listing(self, what: str, *args: str) -> list[str]:
        """`buildah containers|images`: a build running beside this one (`make test` builds the images side
        by side) may remove its working container while buildah lists them, which fails the listing with
        "container not known"; listed again, it is gone."""
        attempt = 1
        while True:
            try:
                return self.buildah(what, what, *args).split()
            except ImageBuildError as err:
                if "not known" not in str(err) or attempt == LISTING_ATTEMPTS:
                    raise
                attempt += 1
                time.sleep(1)

    def config(self, reference: str) -> dict:
        """The image's OCI config (Env, User, WorkingDir, Cmd, ...)."""
        inspected = json.loads(self.buildah(f"inspect-{reference}", "inspect", "--type", "image", reference))
        return inspected["OCIv1"]["config"]

    def rootfs(self, source: ImageSource) -> "ImageRoot":
        """The built image's root filesystem: one working container per image version, shared by
        every pod of that image (they mount it read-only)."""
        reference = self.build(source)
        container = _rootfs_name(reference)
        with self._locked(source.name):
            listed = self.buildah("containers", "containers", "--format", "{{.ContainerName}}")
            if container not in listed.split():
                self.buildah(f"from-{container}", "from", "--pull=never", "--name", container, reference)
            path = Path(self.buildah(f"mount-{container}", "mount", container).strip())
        return ImageRoot(reference, path, self.config(reference))


def _rootfs_name(reference: str) -> str:
    """The working container that holds an image version's root filesystem."""
    name, tag = reference.rsplit("/", 1)[1].split(":", 1)
    return f"rootfs-{name}-{tag}"


@dataclass(frozen=True)
class ImageRoot:
    """A built image, ready to run commands in."""

    reference: str
    path: Path
    config: dict

    @property
    def env(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.config.get("Env") or [])

    @property
    def working_dir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    @property
    def user(self) -> str:
        return self.config.get("User") or "0:0"


def main() -> None:
    """`make images`: build every image the program pushes into the project's store."""
    argparse.ArgumentParser(description="Build the tracking, serving and Locust images with buildah into "
                                        f"the project's store ({DEFAULT_STORE.name}/, or ${STORE_ENV}).").parse_args()
    store = ImageStore(progress=print)
    # Side by side: one build downloads while another installs.
    with ThreadPoolExecutor(max_workers=len(SOURCES)) as pool:
        for reference in pool.map(store.build, SOURCES.values()):
            print(reference)
    store.buildah("prune", "rmi", "--prune")  # stages of finished builds, now that none runs


if __name__ == "__main__":
    main()
