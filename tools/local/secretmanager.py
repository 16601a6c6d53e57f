"""The local stand-in for Secret Manager: a directory of versioned secret values.

    ROOT/<secret id>/<version number>            the value (0600, the directory 0700)
    ROOT/<secret id>/<version number>.disabled   marker: the version is disabled

`latest` is the newest version, as in Secret Manager (where accessing it fails while it is disabled).
Secrets are named by id only: the project of a resource name (projects/P/secrets/ID/versions/V) is
the cluster's, there is one project here. Used by `make local` (values written when the platform
starts, files mounted from it) and by `make rotate-secret TARGET=local`, which adds versions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

LATEST = "latest"
_VERSION_NAME = re.compile(r"projects/[^/]+/secrets/(?P<secret>[A-Za-z0-9_-]+)/versions/(?P<version>latest|\d+)")


class SecretAccessError(LookupError):
    """No such secret or version, or the version is disabled."""


def parse_version_name(name: str) -> tuple[str, str]:
    """(secret id, version) of projects/P/secrets/ID/versions/V."""
    match = _VERSION_NAME.fullmatch(name)
    if not match:
        raise SecretAccessError(f"{name!r} is not a secret version name (projects/P/secrets/ID/versions/N|latest)")
    return match["secret"], match["version"]


class LocalSecretManager:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, secret: str) -> Path:
        return self.root / secret

    def versions(self, secret: str) -> list[int]:
        directory = self._dir(secret)
        if not directory.is_dir():
            return []
        return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())

    def add_version(self, secret: str, value: str) -> int:
        """A new version (the next number), which becomes `latest`."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir(secret).mkdir(mode=0o700, exist_ok=True)
        number = (self.versions(secret) or [0])[-1] + 1
        fd = os.open(self._dir(secret) / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        return number

    def disable(self, secret: str, version: int) -> None:
        if version not in self.versions(secret):
            raise SecretAccessError(f"secret {secret}: no version {version}")
        (self._dir(secret) / f"{version}.disabled").touch(mode=0o600)

    def enabled(self, secret: str, version: int) -> bool:
        return version in self.versions(secret) and not (self._dir(secret) / f"{version}.disabled").exists()

    def enabled_versions(self, secret: str) -> list[int]:
        return [number for number in self.versions(secret) if self.enabled(secret, number)]

    def access(self, secret: str, version: str = LATEST) -> str:
        numbers = self.versions(secret)
        if not numbers:
            raise SecretAccessError(f"secret {secret} has no versions")
        number = numbers[-1] if version == LATEST else int(version)
        if not self.enabled(secret, number):
            raise SecretAccessError(f"secret {secret} version {number} is missing or disabled")
        return (self._dir(secret) / str(number)).read_text()

    def access_name(self, name: str) -> str:
        """The value of projects/P/secrets/ID/versions/V."""
        return self.access(*parse_version_name(name))
