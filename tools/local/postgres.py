"""A throwaway PostgreSQL server standing in for Cloud SQL: own data dir, 127.0.0.1 only,
password (scram-sha-256) authentication except for the IAM users (trusted on 127.0.0.1, as the
Auth Proxy logs them in with a token), run as an unprivileged user when this process is root.
fsync is off (a throwaway; a clean or fast shutdown still writes everything, so restarts keep data)."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import stat
from pathlib import Path
from typing import Callable, Optional

from tools.local.processes import LocalPlatformError, ManagedProcess, RunAs, run_to_completion

APT_PACKAGE = "postgresql"
UNPRIVILEGED_USER = "nobody"
SERVER_BINARIES = ("initdb", "postgres")


def find_bin_dir() -> Path:
    """Directory holding initdb and postgres: on PATH (symlinks resolved) or Debian's
    /usr/lib/postgresql/<version>/bin, newest version first."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    versioned.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates += [Path(p) for p in versioned]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES):
            return directory
    raise LocalPlatformError(
        "PostgreSQL server binaries (initdb, postgres) are not on PATH nor under /usr/lib/postgresql/*/bin: "
        f"install them with `apt-get install {APT_PACKAGE}` (Debian/Ubuntu)")


def unprivileged_user() -> Optional[RunAs]:
    """Whom to run Postgres as: None (ourselves) unless we are root, then `nobody`."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise LocalPlatformError(f"running as root and there is no user {UNPRIVILEGED_USER!r} to run Postgres as "
                                 "(initdb refuses root): create one or run as a normal user") from None
    return RunAs(entry.pw_uid, entry.pw_gid)


def check_traversable(path: Path, run_as: Optional[RunAs]) -> None:
    """Every directory above `path` must let the Postgres user through."""
    if run_as is None:
        return
    for parent in path.resolve().parents:
        mode = parent.stat()
        if mode.st_uid == run_as.uid:
            continue
        if not mode.st_mode & stat.S_IXOTH:
            raise LocalPlatformError(
                f"{parent} is not searchable by {UNPRIVILEGED_USER} (mode {stat.filemode(mode.st_mode)}), "
                "which runs Postgres: choose a work directory under a world-searchable path such as /tmp")


class LocalPostgres:
    """initdb once, then start/stop/restart; `port` is fixed for the life of the object."""

    def __init__(self, directory: Path, port: int, superuser_password: str, log_path: Path,
                 redact: Callable[[str], str]):
        self._bin_dir: Optional[Path] = None
        self.directory = directory
        self.data_dir = directory / "data"
        self.socket_dir = directory / "socket"
        self.port = port
        self.superuser = "postgres"
        self.superuser_password = superuser_password
        self.log_path = log_path
        self.redact = redact
        self.run_as = unprivileged_user()
        self.process: Optional[ManagedProcess] = None

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _own(self, path: Path) -> None:
        if self.run_as:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def init(self, trusted_users: tuple[str, ...] = (), timeout: float = 120.0) -> None:
        check_traversable(self.directory, self.run_as)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.directory, self.socket_dir):
            path.chmod(0o700)
            self._own(path)
        password_file = self.directory / "superuser-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.superuser_password + "\n")
        self._own(password_file)
        try:
            result = run_to_completion(
                "initdb", [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                           f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8",
                           "--locale=C", "--no-sync"],
                env=self._env(), cwd=self.directory, log_path=self.log_path, timeout=timeout, run_as=self.run_as)
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise LocalPlatformError(f"initdb failed with code {result.returncode}; log {self.log_path}")
        self._trust(trusted_users)

    def _trust(self, users: tuple[str, ...]) -> None:
        """pg_hba lines before initdb's (the first match wins): these users log in without a password."""
        hba = self.data_dir / "pg_hba.conf"
        trusted = "".join(f'host all "{user}" 127.0.0.1/32 trust\n' for user in users)
        hba.write_text(trusted + hba.read_text())

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C"}

    def start(self, timeout: float = 60.0) -> None:
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        # SIGINT: fast shutdown (SIGTERM would wait for the servers' pooled connections to close).
        self.process = ManagedProcess("postgres", argv, env=self._env(), cwd=self.directory,
                                      log_path=self.log_path, redact=self.redact, stop_signal=signal.SIGINT,
                                      run_as=self.run_as)
        self.process.start()
        self.process.wait_until(self._ready, timeout, "ready to accept connections")

    def _ready(self) -> bool:
        """postmaster.pid's 8th line is the server status; `ready` once it accepts connections."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()
