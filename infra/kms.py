"""Cloud KMS keys the program holds: Kubernetes Secrets in etcd, and optionally Cloud SQL and the
artifact bucket (CMEK), are encrypted with them; each Google service agent may use only its key.

GKE, Cloud SQL and Cloud Storage check that their agent may use the key when the cluster, instance or
bucket is created, and fail rather than wait (e.g. Cloud SQL's "Unable to delegate the access of CMEK",
hashicorp/terraform-provider-google#17333). IAM grants are eventually consistent: "typically 2 minutes,
potentially 7 minutes or longer" (https://cloud.google.com/iam/docs/access-change-propagation). So what
uses a key waits for `grants_propagated`, created 7 minutes after the grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from infra.naming import child_options

ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
SECONDS_PER_DAY = 86_400
# IAM's documented upper bound, not its typical 2 minutes (module docstring): a cluster or instance whose
# agent cannot use the key yet fails its creation, and retrying a 10-minute cluster creation (a protected
# prod cluster in ERROR cannot even be replaced) costs more than 5 more minutes once. The wait runs when a
# grant is created, not on later `up`s; the migration Job waits as long for its IAM login (DB_WAIT_SECONDS).
GRANT_PROPAGATION = "7m"


def gke_service_agent(project_number: str) -> str:
    """GKE's own service account, which encrypts Secrets for the control plane
    (https://cloud.google.com/kubernetes-engine/docs/how-to/encrypting-secrets)."""
    return f"serviceAccount:service-{project_number}@container-engine-robot.iam.gserviceaccount.com"


@dataclass(frozen=True)
class EncryptionKeysArgs:
    project: str
    """GCP project."""
    location: str
    """Region of the key ring: GKE, Cloud SQL and a regional bucket need keys in their own region."""
    labels: dict[str, str]
    """Key labels."""
    rotation_days: int = 90
    """A new primary key version this often; older versions still decrypt."""
    data_key: bool = False
    """Also a key for Cloud SQL, the artifact bucket and the payload dataset (CMEK), usable only by their
    service agents."""
    protect: bool = True
    """Pulumi refuses to delete or replace the key ring and keys (`protect`): `pulumi destroy` then fails in its
    preview, before it deletes anything."""

    def __post_init__(self) -> None:
        if not 1 <= self.rotation_days <= 36_500:
            raise ValueError(f"EncryptionKeysArgs.rotation_days={self.rotation_days}: allowed 1-36500")


class EncryptionKeys(pulumi.ComponentResource):
    """A key ring, a key for the clusters' Secrets and optionally a data key, with their grants."""

    secrets_key_id: pulumi.Output[str]
    data_key_id: Optional[pulumi.Output[str]]
    grants_propagated: pulumi.Resource
    """Created GRANT_PROPAGATION after every grant: the clusters, the instance and the bucket wait for it."""

    def __init__(self, name: str, args: EncryptionKeysArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:kms:EncryptionKeys", name, None, opts)
        child = child_options(self, opts)
        kept = child_options(self, opts, protect=args.protect)
        # Key rings and keys cannot be deleted: autonamed, so a stack destroyed and made again does
        # not collide with the names its predecessor left behind.
        ring = gcp.kms.KeyRing(f"{name}-ring", project=args.project, location=args.location, opts=kept)
        # Lookups call Resource Manager and Cloud Storage: on an empty project, only once their APIs are on.
        after_apis = pulumi.InvokeOutputOptions(depends_on=child.depends_on)
        project_number = gcp.organizations.get_project_output(project_id=args.project, opts=after_apis).number

        def key(role: str) -> gcp.kms.CryptoKey:
            return gcp.kms.CryptoKey(
                f"{name}-{role}", key_ring=ring.id, purpose="ENCRYPT_DECRYPT",
                rotation_period=f"{args.rotation_days * SECONDS_PER_DAY}s", labels=args.labels, opts=kept)

        secrets_key = key("secrets")
        self.secrets_key_id = secrets_key.id
        # GKE's agent appears some time after its API is enabled; generateServiceIdentity makes sure it exists
        # before the grant names it (IAM refuses a binding to an account that does not exist). The resource
        # may return no email for a service (magic-modules resource_project_service_identity.go.tmpl and its
        # test), so the member is still the agent's documented name.
        gke_agent = gcp.projects.ServiceIdentity(
            f"{name}-gke-agent", project=args.project, service="container.googleapis.com", opts=child)
        grants = {"secrets-gke": gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-gke", crypto_key_id=secrets_key.id, role=ENCRYPTER_DECRYPTER,
            member=project_number.apply(gke_service_agent),
            opts=child_options(self, opts, depends_on=[gke_agent]))}

        self.data_key_id = None
        if args.data_key:
            data_key = key("data")
            self.data_key_id = data_key.id
            sql_agent = gcp.projects.ServiceIdentity(
                f"{name}-sql-agent", project=args.project, service="sqladmin.googleapis.com", opts=child)
            storage_agent = gcp.storage.get_project_service_account_output(project=args.project, opts=after_apis)
            # BigQuery's encryption agent; the lookup also makes it exist (bigquery.get_default_service_account).
            bigquery_agent = gcp.bigquery.get_default_service_account_output(project=args.project, opts=after_apis)
            grants |= {
                f"data-{agent}": gcp.kms.CryptoKeyIAMMember(
                    f"{name}-data-{agent}", crypto_key_id=data_key.id, role=ENCRYPTER_DECRYPTER,
                    member=pulumi.Output.concat("serviceAccount:", email), opts=child)
                for agent, email in (("sql", sql_agent.email), ("storage", storage_agent.email_address),
                                     ("bigquery", bigquery_agent.email))
            }
        # Triggers name every grant (so the wait depends on each): a grant made anew is waited for anew.
        self.grants_propagated = pulumiverse_time.Sleep(
            f"{name}-grants-propagated", create_duration=GRANT_PROPAGATION,
            triggers={role: grant.id for role, grant in grants.items()}, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"secrets_key_id": self.secrets_key_id, "data_key_id": self.data_key_id})
