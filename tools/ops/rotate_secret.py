"""Rotate one application secret and roll the pods that use it.

    python -m tools.ops.rotate_secret
        --name admin-password|flask-secret-key|serving-password|drift-password|payload-hash-key
        [--target local|cluster] [--stack dev] [--workdir .local] [--tracking-uri URL] [--timeout S]

In order, so that no login breaks and no request fails:
 1. a new value: letters and digits, as long as the program's first one;
 2. for a password of an MLflow user (admin-password: `admin`, serving-password: the serving user,
    drift-password: the drift job's user),
    MLflow's auth database gets it first, through MLflow's auth client as the admin
    (`AuthServiceClient.update_user_password`, tools/ops/user_password.py in the runtime virtualenv).
    Running pods keep working: tracking reads the admin password only to create the admin, and a
    serving pod that loaded its model calls tracking no more;
 3. the new version is added to Secret Manager: `latest`, which every SecretProviderClass mounts,
    is now the new value. Should this fail, step 2 is undone (the old password set again);
 4. the pods that mount it roll and are waited for: tracking (admin-password: its credential cache
    keeps an old password valid for tracking.authCacheTtlSeconds; flask-secret-key: MLflow reads it only at
    start) or serving (serving-password), as their Deployment's strategy declares (surge first); the drift
    job has nothing to roll: each scheduled run mounts `latest` anew;
 5. the older versions are disabled: the old value can no longer be read by anyone.

Targets (tools.ops.targets): `local` (tools/ops/local.py) rotates in a running `make local` (its
Secret Manager stand-in under WORKDIR, its tracking URL, and the same SIGUSR1 rollout `make promote`
uses; the 0600 password files of endpoints.json are rewritten). `cluster` (tools/ops/gke.py) uses
Secret Manager (Application Default Credentials, the stack output `app_secrets`), the tracking URL of
--tracking-uri or MLFLOW_TRACKING_URI, and `kubectl rollout restart` through the Kubernetes API of
the Deployments the stack outputs `tracking_deployment` and `serving_deployment` name (its
kubeconfig outputs; all read with Pulumi's Automation API, which needs the Pulumi CLI).

Exit codes: 0 rotated, 1 error (for a failure in step 4 the new version is current; rerun the rollout
with `make rotate-secret` after fixing the cause, which rotates again), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from infra.secrets import (
    ADMIN_PASSWORD, DRIFT_PASSWORD, FLASK_SECRET_KEY, PAYLOAD_HASH_KEY, SECRET_LENGTHS, SERVING_PASSWORD,
    WEBHOOK_ENCRYPTION_KEY, WEBHOOK_SECRET,
)
from k8s.drift import DRIFT_USERNAME
from k8s.serving import SERVING_USERNAME
from k8s.tracking import ADMIN_USERNAME
from tools.ops import targets
from tools.ops.interfaces import (
    Restarter, RolloutError, SecretStore, SecretStoreError, TargetError, generate_password,
)
from tools.ops.runtime import AdminRunner
from tools.venvs import Venv, VenvError

EXIT_ERROR, EXIT_USAGE = 1, 2
PASSWORD_TIMEOUT = 120.0


class RotationError(RuntimeError):
    """A step failed; the message says which and what state the secret is in, never a value."""


@dataclass(frozen=True)
class Rotation:
    mlflow_user: Optional[str]
    """The MLflow user whose password this is (its auth database is updated first), if any."""
    roll: tuple[str, ...]
    """Components whose Deployments' pods mount it: tracking, serving (none: only a CronJob's)."""


ROTATIONS = {
    ADMIN_PASSWORD: Rotation(ADMIN_USERNAME, ("tracking",)),
    FLASK_SECRET_KEY: Rotation(None, ("tracking",)),
    SERVING_PASSWORD: Rotation(SERVING_USERNAME, ("serving",)),
    DRIFT_PASSWORD: Rotation(DRIFT_USERNAME, ()),
    # Hashes logged before and after a rotation no longer match: rotate to unlink old entries on purpose.
    PAYLOAD_HASH_KEY: Rotation(None, ("serving",)),
}

# Secrets this command refuses, and why.
NOT_ROTATABLE = {
    WEBHOOK_ENCRYPTION_KEY: "not rotatable: tracking decrypts the stored webhook's secret with it, and a new key "
                            "makes every stored webhook unreadable (deliveries and the register Job fail)",
    WEBHOOK_SECRET: "rotated by `pulumi up`: add a version in Secret Manager, then `pulumi up` rolls the receiver "
                    "and reruns the register Job, which gives MLflow the new secret",
}


# Sets `user`'s MLflow password, authenticated as the admin with `admin_password`.
SetPassword = Callable[[str, str, str], None]


def rotate(name: str, *, store: SecretStore, secrets: dict[str, str], set_password: SetPassword, restarter: Restarter,
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
            log(restarter.restart(component))
        except RolloutError as err:
            raise RotationError(f"version {version} of {secret} is current but {component} did not roll: {err}; "
                                "older versions stay enabled") from None
    for previous in store.enabled_versions(secret):
        if previous < version:
            store.disable(secret, previous)
            log(f"{secret}: version {previous} disabled")
    return version


# --- command line ------------------------------------------------------------------------------------
def runtime_password_setter(tracking_uri: str, venv: Optional[Venv] = None) -> SetPassword:
    """`python -m tools.ops.user_password` in the runtime virtualenv, as the admin."""
    def set_password(user: str, password: str, admin_password: str) -> None:
        runner = AdminRunner(tracking_uri, ADMIN_USERNAME, admin_password, venv)
        try:
            runner.run_module(["-m", "tools.ops.user_password", "--user", user], f"setting {user!r}'s password",
                              PASSWORD_TIMEOUT, env={"NEW_PASSWORD": password}, secrets=(password,))
        except VenvError as err:
            raise RotationError(str(err)) from None
    return set_password


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.rotate_secret", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, choices=sorted(ROTATIONS.keys() | NOT_ROTATABLE.keys()),
                        help="the application secret to rotate")
    targets.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.name in NOT_ROTATABLE:
        parser.error(f"--name {args.name}: {NOT_ROTATABLE[args.name]}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(f"rotate-secret: {message}", flush=True)  # noqa: E731
    try:
        target = targets.platform(args).rotation(args.timeout)
        # What this rotation reads: the secret and the admin password (a stack without drift has no drift-password).
        missing = sorted({args.name, ADMIN_PASSWORD} - set(target.secret_ids))
        if missing:
            raise RotationError(f"the {args.target} target has no secret {', '.join(missing)} "
                                f"(has {', '.join(sorted(target.secret_ids))})")
        version = rotate(args.name, store=target.store, secrets=target.secret_ids,
                         set_password=runtime_password_setter(target.tracking_uri), restarter=target.restarter,
                         generate=generate_password, log=log)
        target.rotated()
    except (RotationError, TargetError, SecretStoreError) as err:
        print(f"rotate-secret: error: {err}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    log(f"{args.name}: version {version} current, older versions disabled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
