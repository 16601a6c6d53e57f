"""Rotate one application secret and roll the pods that use it.

    python -m tools.ops.rotate_secret --name admin-password|flask-secret-key|serving-password
        [--target local|cluster] [--stack dev] [--workdir .local] [--tracking-uri URL] [--timeout S]

In order, so that no login breaks and no request fails:
 1. a new value: letters and digits, as long as the program's first one;
 2. for a password of an MLflow user (admin-password: `admin`, serving-password: the serving user),
    MLflow's auth database gets it first, through MLflow's auth client as the admin
    (`AuthServiceClient.update_user_password`, tools/ops/user_password.py in the runtime virtualenv).
    Running pods keep working: tracking reads the admin password only to create the admin, and a
    serving pod that loaded its model calls tracking no more;
 3. the new version is added to Secret Manager: `latest`, which every SecretProviderClass mounts,
    is now the new value. Should this fail, step 2 is undone (the old password set again);
 4. the pods that mount it roll and are waited for: tracking (admin-password: its credential cache
    keeps an old password valid for tracking.authCacheTtlSeconds; flask-secret-key: MLflow reads it only at
    start) or serving (serving-password), as their Deployment's strategy declares (surge first);
 5. the older versions are disabled: the old value can no longer be read by anyone.

Targets: `local` rotates in a running `make local` (its Secret Manager stand-in under WORKDIR,
its tracking URL, and the same SIGUSR1 rollout `make promote` uses; the 0600 password files of
endpoints.json are rewritten). `cluster` uses Secret Manager (Application Default Credentials, the
stack output `app_secrets`), the tracking URL of --tracking-uri or MLFLOW_TRACKING_URI, and
`kubectl rollout restart` through the Kubernetes API of the Deployments the stack outputs
`tracking_deployment` and `serving_deployment` name (its kubeconfig outputs; all read with Pulumi's
Automation API, which needs the Pulumi CLI).

Exit codes: 0 rotated, 1 error (for a failure in step 4 the new version is current; rerun the rollout
with `make rotate-secret` after fixing the cause, which rotates again), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from infra.secrets import ADMIN_PASSWORD, FLASK_SECRET_KEY, SECRET_LENGTHS, SERVING_PASSWORD
from k8s.serving import SERVING_USERNAME
from k8s.tracking import ADMIN_USERNAME
from tools.ops.rollout import DEFAULT_CLUSTER_TIMEOUT, ClusterRoller, RolloutError, apps_api, load_api_client
from tools.ops.runtime import RuntimeCommandError, run_runtime_module
from tools.ops.secret_manager import CloudSecretManager, SecretManagerError, app_secret
from tools.ops.stack import StackOutputError, StackOutputs

ROOT = Path(__file__).resolve().parents[2]
EXIT_ERROR, EXIT_USAGE = 1, 2
PASSWORD_TIMEOUT = 120.0


class RotationError(RuntimeError):
    """A step failed; the message says which and what state the secret is in, never a value."""


@dataclass(frozen=True)
class Rotation:
    mlflow_user: Optional[str]
    """The MLflow user whose password this is (its auth database is updated first), if any."""
    roll: tuple[str, ...]
    """Components whose pods mount it: tracking, serving."""


ROTATIONS = {
    ADMIN_PASSWORD: Rotation(ADMIN_USERNAME, ("tracking",)),
    FLASK_SECRET_KEY: Rotation(None, ("tracking",)),
    SERVING_PASSWORD: Rotation(SERVING_USERNAME, ("serving",)),
}


class SecretStore(Protocol):
    """tools.local.secretmanager.LocalSecretManager or tools.ops.secret_manager.CloudSecretManager."""

    def access(self, secret: str, version: str = "latest") -> str: ...
    def add_version(self, secret: str, value: str) -> int: ...
    def enabled_versions(self, secret: str) -> list[int]: ...
    def disable(self, secret: str, version: int) -> None: ...


# Sets `user`'s MLflow password, authenticated as the admin with `admin_password`.
SetPassword = Callable[[str, str, str], None]
# Rolls one component's pods and waits; returns a summary.
Roll = Callable[[str], str]


def rotate(name: str, *, store: SecretStore, secrets: dict[str, str], set_password: SetPassword, roll: Roll,
           generate: Callable[[int], str], log: Callable[[str], None] = lambda message: None) -> int:
    """Steps 1-5 above; `secrets` maps logical names to the store's names. Returns the new version."""
    rotation = ROTATIONS[name]
    secret = secrets[name]
    old = store.access(secret)
    admin = store.access(secrets[ADMIN_PASSWORD])
    new = generate(SECRET_LENGTHS[name])
    if rotation.mlflow_user:
        set_password(rotation.mlflow_user, new, admin)
        log(f"MLflow user {rotation.mlflow_user!r}: password updated")
    try:
        version = store.add_version(secret, new)
    except Exception as err:
        if rotation.mlflow_user:
            # The admin's own password just changed: authenticate with the new one to put it back.
            set_password(rotation.mlflow_user, old, new if name == ADMIN_PASSWORD else admin)
            log(f"MLflow user {rotation.mlflow_user!r}: password put back")
        raise RotationError(f"adding a version to {secret} failed, nothing changed: {err}") from None
    log(f"{secret}: version {version} is latest")
    for component in rotation.roll:
        try:
            log(roll(component))
        except RolloutError as err:
            raise RotationError(f"version {version} of {secret} is current but {component} did not roll: {err}; "
                                "older versions stay enabled") from None
    for previous in store.enabled_versions(secret):
        if previous < version:
            store.disable(secret, previous)
            log(f"{secret}: version {previous} disabled")
    return version


# --- targets ---------------------------------------------------------------------------------------
def runtime_password_setter(python: Path, tracking_uri: str) -> SetPassword:
    def set_password(user: str, password: str, admin_password: str) -> None:
        try:
            run_runtime_module(
                python, ["-m", "tools.ops.user_password", "--user", user],
                {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME,
                 "MLFLOW_TRACKING_PASSWORD": admin_password, "NEW_PASSWORD": password},
                secrets=(password, admin_password), timeout=PASSWORD_TIMEOUT, what=f"setting {user!r}'s password")
        except RuntimeCommandError as err:
            raise RotationError(str(err)) from None
    return set_password


@dataclass(frozen=True)
class Target:
    store: SecretStore
    secrets: dict[str, str]
    set_password: SetPassword
    roll: Roll
    after: Callable[[], None] = lambda: None
    """Run once rotated (local: rewrite the password files endpoints.json names)."""


def local_target(workdir: Path, stack: str, timeout: float) -> Target:
    from tools.local.localplatform import provider_class_secrets, write_private_file
    from tools.local.manifests import Manifests
    from tools.local.rollout import RolloutRequestError, request_rollout
    from tools.local.secretmanager import LocalSecretManager
    from tools.ops.promote import runtime_python

    endpoints_file = Path(workdir) / "endpoints.json"
    try:
        endpoints = json.loads(endpoints_file.read_text())
    except OSError:
        raise RotationError(f"{endpoints_file} is missing: is `make local` running?") from None
    store = LocalSecretManager(Path(endpoints["secret_manager_dir"]))
    secrets = provider_class_secrets(Manifests.load(stack))

    def roll(component: str) -> str:
        try:
            status = request_rollout(Path(workdir), timeout=timeout, component=component)
        except RolloutRequestError as err:
            raise RolloutError(str(err)) from None
        return f"`make local` rolled {component} (rollout {status['generation']})"

    def after() -> None:
        for key, name in (("admin_password_file", ADMIN_PASSWORD), ("serving_password_file", SERVING_PASSWORD)):
            write_private_file(Path(endpoints[key]), store.access(secrets[name]) + "\n", 0o600)

    return Target(store, secrets, runtime_password_setter(runtime_python(), endpoints["tracking_url"]), roll, after)


def cluster_target(stack: str, tracking_uri: Optional[str], timeout: float) -> Target:
    from tools.ops.promote import runtime_python

    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise RotationError("--target cluster needs the tracking URL: --tracking-uri or MLFLOW_TRACKING_URI "
                            "(e.g. `kubectl -n mlflow port-forward svc/mlflow-tracking 5000:5000`)")
    try:
        outputs = StackOutputs.read(stack)
        secrets = {name: app_secret(outputs, name) for name in ROTATIONS}
        store = CloudSecretManager()
        rollers = {}
        for component, cluster in (("tracking", "platform"), ("serving", "serving")):
            namespace, name = outputs.deployment(component)
            rollers[component] = ClusterRoller(apps_api(load_api_client(outputs.kubeconfig(cluster))),
                                               namespace, name, timeout=timeout)
            rollers[component].check()  # before anything changes
    except (SecretManagerError, RolloutError, StackOutputError) as err:
        raise RotationError(str(err)) from None
    return Target(store, secrets, runtime_password_setter(runtime_python(), tracking_uri),
                  lambda component: rollers[component].restart())


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.rotate_secret", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, choices=sorted(ROTATIONS),
                        help="the application secret to rotate")
    parser.add_argument("--target", choices=("local", "cluster"), default="local")
    parser.add_argument("--stack", default="dev", help="Pulumi stack (default dev)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local", help="`make local` work dir (default .local)")
    parser.add_argument("--tracking-uri", help="tracking URL for --target cluster (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for each rollout (local 300, cluster 600)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tools.local.localplatform import generate_password

    args = parse_args(argv)
    log = lambda message: print(f"rotate-secret: {message}", flush=True)  # noqa: E731
    try:
        if args.target == "local":
            target = local_target(args.workdir, args.stack, args.timeout or 300.0)
        else:
            target = cluster_target(args.stack, args.tracking_uri, args.timeout or DEFAULT_CLUSTER_TIMEOUT)
        version = rotate(args.name, store=target.store, secrets=target.secrets, set_password=target.set_password,
                         roll=target.roll, generate=generate_password, log=log)
        target.after()
    except (RotationError, SecretManagerError) as err:
        print(f"rotate-secret: error: {err}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    log(f"{args.name}: version {version} current, older versions disabled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
