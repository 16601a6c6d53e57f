"""Restoring the environment a model was logged with, on top of the serving image's.

MLflow records it beside MLmodel: `python_env.yaml` (the Python version) and `requirements.txt`.
The serving runtime (MLflow's scoring server and what it has imported: numpy, pandas, pyarrow, ...)
is the image's; every recorded requirement the image already satisfies is used as is, so the common
scikit-learn model starts with no install at all. The others are resolved by uv against the image's
installed versions (pinned as constraints) and installed, without their already-installed
dependencies, into an overlay directory put first on sys.path before the model loads.

Overlays live in a cache directory keyed by a hash of what they hold (Python, platform, the image's
versions, the missing requirements), so a restarted container, or another replica sharing the volume,
reuses one instead of building it again. A model that needs another Python minor version, or another
version of a package the serving process has already imported, is refused with the reason: one
process cannot hold two versions of a module.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlflow_serving.payload_log import PAYLOAD_KEY_ENV

logger = logging.getLogger("mlflow_serving")

# The scoring server is the image's MLflow; a model's own pin on it does not replace it.
SERVING_RUNTIME = frozenset({"mlflow", "mlflow-skinny"})
# Artifact Registry Python repositories take a Google access token as the password of this user.
ARTIFACT_REGISTRY_SUFFIX = "-python.pkg.dev"
ARTIFACT_REGISTRY_USER = "oauth2accesstoken"
COMPLETE_MARKER = "environment.json"


class EnvironmentRefused(RuntimeError):
    """The model's environment cannot be built or used here; the message says why."""


@dataclass(frozen=True)
class RecordedEnvironment:
    python: Optional[str]
    """Python version the model was logged with (python_env.yaml), if recorded."""
    requirements: tuple[str, ...]
    """Lines of requirements.txt, without comments and blanks."""

    @classmethod
    def read(cls, model_dir: Path) -> "RecordedEnvironment":
        import yaml

        python_env = model_dir / "python_env.yaml"
        python = None
        if python_env.exists():
            python = str((yaml.safe_load(python_env.read_text()) or {}).get("python") or "") or None
        requirements_file = model_dir / "requirements.txt"
        lines = requirements_file.read_text().splitlines() if requirements_file.exists() else []
        return cls(python, tuple(line.split(" #")[0].strip() for line in lines
                                 if line.strip() and not line.lstrip().startswith("#")))


def python_refusal(recorded: Optional[str], running: tuple[int, int] = sys.version_info[:2]) -> Optional[str]:
    """Why this interpreter cannot honour the recorded Python version, or None. Wheels are built per
    minor version, so the minor version must match; a different patch release serves the model."""
    if not recorded:
        return None
    parts = recorded.split(".")
    if len(parts) < 2 or (parts[0], parts[1]) == (str(running[0]), str(running[1])):
        return None
    return (f"the model was logged with Python {recorded}; the serving image runs Python "
            f"{running[0]}.{running[1]}: log it under Python {running[0]}.{running[1]}")


def installed_versions(path: Optional[list[str]] = None) -> dict[str, str]:
    """canonical name -> version of every distribution importable from `path` (default sys.path)."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions(**({"path": path} if path is not None else {})):
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(canonicalize_name(name), dist.version)
    return versions


def missing_requirements(lines: Iterable[str], installed: Mapping[str, str],
                         markers: Optional[dict] = None) -> tuple[str, ...]:
    """The recorded requirements the image does not satisfy (those uv must install). Lines that are
    not plain requirements (URLs, paths, options) and requirements with extras go to uv as they are."""
    markers = markers or default_environment()
    missing = []
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        if requirement.marker and not requirement.marker.evaluate(markers):
            continue
        name = canonicalize_name(requirement.name)
        if name in SERVING_RUNTIME:
            continue
        version = installed.get(name)
        if (requirement.url or requirement.extras or version is None
                or not requirement.specifier.contains(version, prereleases=True)):
            missing.append(line)
    return tuple(missing)


def environment_key(missing: Iterable[str], installed: Mapping[str, str]) -> str:
    """Names the overlay: the same requirements on the same image resolve to the same packages."""
    document = {"python": list(sys.version_info[:2]), "platform": sysconfig.get_platform(),
                "image": sorted(installed.items()), "requirements": sorted(missing)}
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()[:20]


def pinned(lines: Iterable[str]) -> dict[str, str]:
    """`name==version` lines (uv pip compile's output) as canonical name -> version."""
    result = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            requirement = Requirement(line)
            result[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return result


def loaded_conflicts(to_install: Mapping[str, str], installed: Mapping[str, str],
                     loaded_modules: Iterable[str]) -> list[str]:
    """Distributions the overlay would replace although this process already imported them."""
    loaded = {name.split(".")[0] for name in loaded_modules}
    owners = metadata.packages_distributions()
    in_use = {canonicalize_name(dist) for module in loaded for dist in owners.get(module, ())}
    return [f"{name}=={version} (the serving process runs {name} {installed[name]})"
            for name, version in sorted(to_install.items())
            if name in installed and installed[name] != version and name in in_use]


def index_with_credentials(index_url: str, token: Callable[[], str]) -> str:
    """An Artifact Registry index URL with a fresh access token as password (Workload Identity gives
    the pod its token; no secret in the manifest). Other indexes are returned as they are."""
    parts = urllib.parse.urlsplit(index_url)
    if not (parts.hostname or "").endswith(ARTIFACT_REGISTRY_SUFFIX):
        return index_url
    netloc = f"{ARTIFACT_REGISTRY_USER}:{urllib.parse.quote(token(), safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def google_access_token() -> str:
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials.token


@dataclass(frozen=True)
class EnvironmentSettings:
    cache_dir: Path
    """Where overlays (and uv's download cache) live: the pod's environment volume."""
    timeout_seconds: float = 300.0
    """The whole build (resolve, download, install) must finish within this."""
    index_url: Optional[str] = None
    """Package index; None is uv's default (pypi.org, or UV_DEFAULT_INDEX)."""


@dataclass(frozen=True)
class Restored:
    overlay: Optional[Path]
    """Directory to put first on sys.path; None when the image satisfies the model."""
    summary: str


class EnvironmentBuilder:
    """`restore(model_dir)`: checks, then reuses or builds the overlay. Raises EnvironmentRefused."""

    def __init__(self, settings: EnvironmentSettings, progress: Callable[[str], None] = logger.info,
                 token: Callable[[], str] = google_access_token):
        self.settings = settings
        self.progress = progress
        self.token = token

    def restore(self, model_dir: Path) -> Restored:
        recorded = RecordedEnvironment.read(Path(model_dir))
        refusal = python_refusal(recorded.python)
        if refusal:
            raise EnvironmentRefused(refusal)
        installed = installed_versions()
        missing = missing_requirements(recorded.requirements, installed)
        if not missing:
            return Restored(None, f"the image satisfies the model's {len(recorded.requirements)} recorded requirements")
        overlay = self.settings.cache_dir / environment_key(missing, installed)
        if (overlay / COMPLETE_MARKER).exists():
            return Restored(overlay, f"reusing the environment {overlay.name} for {', '.join(missing)}")
        self.progress(f"building the model's environment for {', '.join(missing)} (limit "
                      f"{self.settings.timeout_seconds:.0f}s)")
        started = time.monotonic()
        self._build(overlay, missing, installed)
        return Restored(overlay, f"built the environment {overlay.name} for {', '.join(missing)} in "
                                 f"{time.monotonic() - started:.1f}s")

    def _build(self, overlay: Path, missing: tuple[str, ...], installed: Mapping[str, str]) -> None:
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.settings.timeout_seconds
        work = Path(tempfile.mkdtemp(prefix=f".{overlay.name}-", dir=self.settings.cache_dir))
        try:
            names = {canonicalize_name(Requirement(line).name) for line in missing if _is_requirement(line)}
            (work / "requirements.in").write_text("\n".join(missing) + "\n")
            # The image's versions stay, except for the packages the model asks to change.
            (work / "constraints.txt").write_text("".join(f"{name}=={version}\n" for name, version in
                                                          sorted(installed.items()) if name not in names))
            self._uv(["pip", "compile", "requirements.in", "--constraint", "constraints.txt", "--no-header",
                      "--no-annotate", "--quiet", "--output-file", "resolved.txt"], work, deadline, "resolving")
            wanted = pinned((work / "resolved.txt").read_text().splitlines())
            to_install = {name: version for name, version in wanted.items() if installed.get(name) != version}
            conflicts = loaded_conflicts(to_install, installed, list(sys.modules))
            if conflicts:
                raise EnvironmentRefused(f"the model needs {', '.join(conflicts)}, already loaded from the image: "
                                        "log the model with the image's version of it")
            (work / "install.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(to_install.items())))
            self._uv(["pip", "install", "--no-deps", "--target", "site", "--requirements", "install.txt"],
                     work, deadline, "installing")
            site = work / "site"
            site.mkdir(exist_ok=True)
            (site / COMPLETE_MARKER).write_text(json.dumps({"requirements": list(missing),
                                                            "installed": to_install}, indent=1))
            try:
                site.rename(overlay)
            except OSError:
                if not (overlay / COMPLETE_MARKER).exists():  # not a replica that finished first
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _uv(self, args: list[str], cwd: Path, deadline: float, step: str) -> None:
        # Not the registry credentials nor the payload log's key: uv needs none of them.
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("MLFLOW_TRACKING_") and name != PAYLOAD_KEY_ENV}
        env |= {"UV_CACHE_DIR": str(self.settings.cache_dir / "uv-cache"), "UV_NO_PROGRESS": "1",
               "UV_PYTHON": sys.executable, "UV_NO_CONFIG": "1",
               # The image's CA store, as pip and requests use it (also trusts a site's TLS proxy).
               "UV_SYSTEM_CERTS": "1"}
        secret = None
        if self.settings.index_url:
            env["UV_DEFAULT_INDEX"] = index_with_credentials(self.settings.index_url, self.token)
            secret = urllib.parse.urlsplit(env["UV_DEFAULT_INDEX"]).password
        uv = str(Path(sys.executable).parent / "uv")
        proc = subprocess.Popen([uv, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def relay() -> None:  # uv's own progress lines, to the pod log
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip().replace(secret, "[secret]") if secret else line.rstrip()
                if line:
                    lines.append(line)
                    self.progress(f"environment: {step}: {line}")

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise EnvironmentRefused(f"building the environment exceeded its {self.settings.timeout_seconds:.0f}s "
                                     f"limit while {step}") from None
        finally:
            reader.join(timeout=5)
        if proc.returncode != 0:
            detail = "; ".join(line.strip() for line in lines[-4:]) or f"uv exited with {proc.returncode}"
            raise EnvironmentRefused(f"{step} the model's requirements failed: {detail}")


def _is_requirement(line: str) -> bool:
    try:
        Requirement(line)
    except InvalidRequirement:
        return False
    return True


def activate(restored: Restored) -> None:
    """Put the overlay first on sys.path, before the model's flavor is imported."""
    if restored.overlay is not None and str(restored.overlay) not in sys.path:
        sys.path.insert(0, str(restored.overlay))
