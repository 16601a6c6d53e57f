"""Secret Manager for `make rotate-secret --target cluster` and `make promote --target cluster`: the
calls of tools.ops.interfaces.SecretStore (access, add_version, enabled_versions, disable), made
with Google's client library on `projects/P/secrets/ID` names. Credentials: Application Default
Credentials (`gcloud auth application-default login`), which need secretAccessor and
secretVersionManager on the secret.
"""

from __future__ import annotations

from typing import Any

from tools.ops.interfaces import SecretStoreError
from tools.ops.stack import StackOutputError, StackOutputs

SECRET_MANAGER_REQUIREMENT = "google-cloud-secret-manager==2.24.0"


class SecretManagerError(SecretStoreError):
    """A Secret Manager call failed; the message holds no secret value."""


def _client() -> Any:
    try:
        from google.cloud import secretmanager
    except ImportError:
        raise SecretManagerError(f"the Secret Manager client is not installed in this virtualenv: add "
                                 f"{SECRET_MANAGER_REQUIREMENT} to requirements-dev.txt and run `make install`") from None
    return secretmanager.SecretManagerServiceClient()


class CloudSecretManager:
    def __init__(self, client: Any = None):
        self.client = client or _client()

    def _call(self, method: str, request: dict) -> Any:
        try:
            return getattr(self.client, method)(request=request)
        except Exception as err:  # permission, not found, network: the name only, never the payload
            target = request.get("name") or request.get("parent")
            raise SecretManagerError(f"Secret Manager {method} on {target} failed: "
                                     f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None

    def access(self, secret: str, version: str = "latest") -> str:
        return self._call("access_secret_version", {"name": f"{secret}/versions/{version}"}).payload.data.decode()

    def add_version(self, secret: str, value: str) -> int:
        created = self._call("add_secret_version", {"parent": secret, "payload": {"data": value.encode()}})
        return int(created.name.rsplit("/", 1)[1])

    def enabled_versions(self, secret: str) -> list[int]:
        listed = self._call("list_secret_versions", {"parent": secret, "filter": "state:ENABLED"})
        return sorted(int(version.name.rsplit("/", 1)[1]) for version in listed)

    def disable(self, secret: str, version: int) -> None:
        self._call("disable_secret_version", {"name": f"{secret}/versions/{version}"})


def app_secret(outputs: StackOutputs, name: str) -> str:
    """projects/P/secrets/ID of one application secret, from the stack output `app_secrets`."""
    try:
        secrets = outputs.json("app_secrets")
    except StackOutputError as err:
        raise SecretManagerError(str(err)) from None
    if name not in secrets:
        raise SecretManagerError(f"stack {outputs.stack} output app_secrets has no {name!r} "
                                 f"(has {', '.join(sorted(secrets))})")
    return secrets[name]
