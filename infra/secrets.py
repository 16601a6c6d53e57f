"""Application secrets in Secret Manager: the tracking admin password, the Flask secret key, the
serving and drift users' passwords, the key serving hashes redacted payload columns with and the
webhook secrets. Pods mount them as files through GKE's Secret Manager add-on; each secret is
readable only by the workload identities of the pods that mount it.

The first version of each comes from a RandomPassword, so its value lives in Pulumi state (encrypted)
and Secret Manager only; `make rotate-secret` adds later versions (tools/ops/rotate_secret.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from infra.naming import cap_name, child_options, gcp_name

ACCESSOR = "roles/secretmanager.secretAccessor"
ADMIN_PASSWORD = "admin-password"
FLASK_SECRET_KEY = "flask-secret-key"
SERVING_PASSWORD = "serving-password"
# The drift job's MLflow user (k8s/drift.py): read by its pods and the Job that creates the user.
DRIFT_PASSWORD = "drift-password"
# HMAC-SHA256 key of the payload log's hashed columns (mlflow_serving/payload_log.py): read by serving only.
PAYLOAD_HASH_KEY = "payload-hash-key"
# MLflow's registry webhooks: the HMAC secret the receiver checks deliveries with (mlflow_notify), and the
# key tracking encrypts stored webhook secrets with (MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY: without one, each
# server process makes its own, and a webhook stored by one cannot be read by another).
WEBHOOK_SECRET = "webhook-secret"
WEBHOOK_ENCRYPTION_KEY = "webhook-encryption-key"
# Logical name (also the file name in the pods) -> length of its generated value.
SECRET_LENGTHS = {ADMIN_PASSWORD: 32, FLASK_SECRET_KEY: 64, SERVING_PASSWORD: 32, PAYLOAD_HASH_KEY: 64,
                  WEBHOOK_SECRET: 64, WEBHOOK_ENCRYPTION_KEY: 43, DRIFT_PASSWORD: 32}
# Fernet keys are 32 bytes in URL-safe base64: 43 letters and digits (256 bits) and one "=" of padding.
FERNET_KEYS = frozenset({WEBHOOK_ENCRYPTION_KEY})


def formatted(name: str, generated: str) -> str:
    """A secret's value from its generated characters, in the form its reader needs."""
    return generated + "=" if name in FERNET_KEYS else generated


def secret_value(name: str, generated: pulumi.Input[str]) -> pulumi.Input[str]:
    return pulumi.Output.from_input(generated).apply(lambda text: formatted(name, text))


# What a SecretProviderClass names: the newest version, so a rollout picks up a rotation.
LATEST = "latest"


def secret_id(prefix: str, name: str) -> str:
    """Secret Manager id of one application secret (ids allow up to 255 chars)."""
    return cap_name(gcp_name(prefix, name), 255)


def workload_principal(project_number: str, workload_pool: str, namespace: str, ksa: str) -> str:
    """IAM principal of a Kubernetes service account under Workload Identity Federation for GKE: the
    identity GKE's Secret Manager add-on presents for a pod's KSA
    (https://cloud.google.com/secret-manager/docs/secret-manager-managed-csi-component)."""
    return (f"principal://iam.googleapis.com/projects/{project_number}/locations/global/"
            f"workloadIdentityPools/{workload_pool}/subject/ns/{namespace}/sa/{ksa}")


def regional_secret(name: str, project: str, location: str, prefix: str, logical: str, labels: dict[str, str],
                    opts: pulumi.ResourceOptions) -> gcp.secretmanager.Secret:
    """One secret of the stack, without a version."""
    return gcp.secretmanager.Secret(
        name,
        project=project,
        secret_id=secret_id(prefix, logical),
        # One region, the platform's: the values stay where the workloads and the database (which
        # holds the same passwords' hashes) are; a regional outage takes their readers down anyway.
        replication=gcp.secretmanager.SecretReplicationArgs(
            user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                replicas=[gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(location=location)])),
        labels={**labels, "secret": logical},
        opts=opts,
    )


def version_name(project: str, secret: gcp.secretmanager.Secret) -> pulumi.Output[str]:
    """The secret's newest version: what a SecretProviderClass mounts, so a rollout picks up a rotation."""
    return pulumi.Output.concat("projects/", project, "/secrets/", secret.secret_id, f"/versions/{LATEST}")


@dataclass(frozen=True)
class SecretRef:
    """One application secret, as its consumers need it."""

    name: str
    """Logical name, one of SECRET_LENGTHS: the file name in the pods."""
    secret_id: pulumi.Input[str]
    """The Secret resource's id (projects/PROJECT/secrets/ID): IAM grants name it."""
    version_name: pulumi.Input[str]
    """projects/PROJECT/secrets/ID/versions/latest: what a SecretProviderClass mounts."""
    first_version: Optional[pulumi.Resource] = None
    """The program's version: a lookup of the current version waits for it on the first `up`."""


@dataclass(frozen=True)
class AppSecretsArgs:
    project: str
    """GCP project."""
    location: str
    """The one region the secrets are replicated to: the region of the clusters that read them."""
    prefix: str
    """Prefix of the secret ids (the stack's name prefix)."""
    labels: dict[str, str]
    """Secret labels."""
    protect: bool = True
    """Pulumi refuses to delete or replace the secrets and their first versions, which hold the values
    (`protect`): `pulumi destroy` then fails in its preview, before it deletes anything."""

    def __post_init__(self) -> None:
        if not self.location or self.location[-2] == "-" and self.location[-1].isalpha():
            raise ValueError(f"AppSecretsArgs.location={self.location!r}: must be a region (e.g. us-central1), "
                             "not a zone")


class AppSecrets(pulumi.ComponentResource):
    """The application secrets with their first versions; consumers grant themselves access."""

    refs: dict[str, SecretRef]
    project_number: pulumi.Output[str]
    """For the Workload Identity principals of the readers."""
    secret_ids: pulumi.Output[dict]
    """Logical name -> projects/PROJECT/secrets/ID (a stack output: what `make rotate-secret` rotates)."""

    def __init__(self, name: str, args: AppSecretsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:secrets:AppSecrets", name, None, opts)
        kept = child_options(self, opts, protect=args.protect)
        after_apis = pulumi.InvokeOutputOptions(depends_on=kept.depends_on)
        self.project_number = gcp.organizations.get_project_output(
            project_id=args.project, opts=after_apis).number.apply(str)
        self.refs = {}
        for logical, length in SECRET_LENGTHS.items():
            secret = regional_secret(f"{name}-{logical}", args.project, args.location, args.prefix, logical,
                                     args.labels, kept)
            value = random.RandomPassword(f"{name}-{logical}-value", length=length, special=False,
                                          opts=pulumi.ResourceOptions(parent=self))
            first_version = gcp.secretmanager.SecretVersion(
                f"{name}-{logical}-initial",
                secret=secret.id,
                secret_data=secret_value(logical, value.result),
                # `make rotate-secret` disables this version once a newer one serves; Pulumi keeps it so.
                opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(ignore_changes=["enabled"])),
            )
            self.refs[logical] = SecretRef(
                name=logical, secret_id=secret.id, first_version=first_version,
                version_name=version_name(args.project, secret))
        self.secret_ids = pulumi.Output.from_input({key: ref.secret_id for key, ref in self.refs.items()})
        self.register_outputs({"project_number": self.project_number, "secret_ids": self.secret_ids})


def grant_readers(name: str, refs: Sequence[SecretRef], members: Sequence[pulumi.Input[str]],
                  opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """secretAccessor on each secret (never the project) for each member: one workload's identities."""
    return [
        gcp.secretmanager.SecretIamMember(f"{name}-{ref.name}-{index}", secret_id=ref.secret_id, role=ACCESSOR,
                                          member=member, opts=opts)
        for ref in refs for index, member in enumerate(members)
    ]
