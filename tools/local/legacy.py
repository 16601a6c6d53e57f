"""An earlier MLflow's tracking server on the platform's Postgres and bucket, as that release was
deployed here: `mlflow server --app-name basic-auth --serve-artifacts --artifacts-destination
gs://BUCKET/PREFIX`, the same database user and URIs, the same admin password and Flask key, and
that release's auth config (2.x reads `admin_password` from the ini). Used by the upgrade
rehearsal (tests/test_upgrade.py) between `LocalPlatform.start_storage()` and `start_services()`.

The release runs from .venv-tools (tools/requirements-upgrade.txt beside checkov's: `make tools-venv`);
`ensure_venv` builds it on demand, bounded in time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from infra.database import AUTH_DATABASE, TRACKING_DATABASE
from k8s.tracking import ini_value
from tools.local.localplatform import ClientResult, LocalPlatform, write_private_file
from tools.local.manifests import ROOT
from tools.local.processes import LocalPlatformError, ManagedProcess, free_port, http_ok
from tools.venvs import TOOLS, TOOLS_REQUIREMENTS, Venv

LEGACY_VENV = TOOLS.path
LEGACY_REQUIREMENTS = ROOT / "tools" / "requirements-upgrade.txt"
STAMP = ".installed"


def venv_is_current(venv: Path = LEGACY_VENV, requirements: Sequence[Path] = TOOLS_REQUIREMENTS) -> bool:
    """Built, and not older than its requirements (as make decides)."""
    stamp = venv / STAMP
    return stamp.exists() and all(stamp.stat().st_mtime >= path.stat().st_mtime for path in requirements)


def ensure_venv(venv: Path = LEGACY_VENV, requirements: Sequence[Path] = TOOLS_REQUIREMENTS,
                timeout: float = 480.0, python: Optional[str] = None) -> Path:
    """What `make tools-venv` does, if it is not done yet: python3 -m venv, pip install -r, stamp."""
    if venv_is_current(venv, requirements):
        return venv
    names = ", ".join(path.name for path in requirements)
    if venv.is_symlink():
        # `venv --clear` empties the target: another checkout's virtualenv (a git worktree's link)
        raise LocalPlatformError(f"{venv} links to {venv.resolve()} and looks older than {names}: rebuild it "
                                 f"where it lives (`make {TOOLS.make_target}` there), never through the link")
    python = python or shutil.which("python3") or sys.executable
    log = venv.parent / f"{venv.name}-build.log"
    try:
        with open(log, "w") as out:
            for argv in ([python, "-m", "venv", "--clear", str(venv)],
                         [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                          *(arg for path in requirements for arg in ("-r", str(path)))]):
                subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LocalPlatformError(f"building {venv} from {names} failed ({err}); build it with "
                                 f"`make {TOOLS.make_target}`. Log {log}:\n{tail}") from None
    (venv / STAMP).touch()
    log.unlink(missing_ok=True)
    return venv


def legacy_auth_config(platform: LocalPlatform) -> str:
    """The basic-auth ini of MLflow 2.x: admin password in the file, no cache TTL."""
    return "\n".join([
        "[mlflow]",
        f"default_permission = {platform.default_permission}",
        f"database_uri = {ini_value(platform.database_uri(AUTH_DATABASE))}",
        f"admin_username = {platform.admin_username}",
        f"admin_password = {platform.admin_password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "",
    ])


class LegacyTracking:
    def __init__(self, platform: LocalPlatform, venv: Path = LEGACY_VENV):
        self.platform = platform
        self.venv = Venv(Path(venv), TOOLS.make_target)
        self.port = free_port()
        self.pod_dir = platform.workdir / "pods" / "legacy-tracking"
        self.process: Optional[ManagedProcess] = None
        self._client_runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        return self.venv.run(["-c", "import mlflow; print(mlflow.__version__)"], home=self.platform.clients_home,
                             timeout=120).check("mlflow --version").stdout.strip()

    def start(self, timeout: float = 180.0) -> None:
        p = self.platform
        p.grant_database_privileges()  # the user the 2.x server ran as could create its tables
        tmp = self.pod_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        ini = self.pod_dir / "auth-config" / "basic_auth.ini"
        write_private_file(ini, legacy_auth_config(p), 0o600)
        # One worker: each 2.x worker migrates the auth database and creates the admin user as it
        # boots, and two doing so on a fresh database collide; gunicorn then halts the server.
        argv = [str(self.venv.bin("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--app-name", "basic-auth", "--serve-artifacts",
                "--artifacts-destination", f"gs://{p.bucket}/{p.artifacts_prefix}"]
        env = self.venv.env(tmp, {"MLFLOW_BACKEND_STORE_URI": p.database_uri(TRACKING_DATABASE),
                                  "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                                  "MLFLOW_FLASK_SERVER_SECRET_KEY": p.credentials.flask_secret_key,
                                  "STORAGE_EMULATOR_HOST": p.emulator_url})
        self.process = ManagedProcess("legacy-tracking", argv, env=env, cwd=tmp,
                                      log_path=p.logs_dir / "legacy-tracking.log", redact=p.redact)
        self.process.start()
        self.process.wait_until(lambda: http_ok(f"{self.url}/health"), timeout, f"{self.url}/health answering 200")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def run_client(self, script: str | Path, *args: str, auth: Optional[tuple[str, str]] = None,
                   extra_env: Optional[dict] = None, timeout: float = 300.0) -> ClientResult:
        """A client script with this release's python against this server; `auth` defaults to the admin."""
        p = self.platform
        username, password = auth or (p.admin_username, p.admin_password)
        env = {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": username,
               "MLFLOW_TRACKING_PASSWORD": password, **(extra_env or {})}
        return p.run_client_in(self.venv, script, args, env, label="legacy", timeout=timeout)

