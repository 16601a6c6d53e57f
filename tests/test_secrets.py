"""Application secrets (infra/secrets.py, k8s/secret_files.py) as both stacks declare them: Secret
Manager secrets in the stack's region, first versions from Pulumi's generator, read only by the
workload identities of the pods that mount them, through GKE's Secret Manager add-on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra.chat import CHAT_WEBHOOK_URL
from infra.identity import WORKLOAD_IDENTITY_ANNOTATION
from infra.secrets import ACCESSOR, SECRET_LENGTHS, AppSecretsArgs, workload_principal
from k8s.notify import CHAT_SECRET_ENV
from k8s.secret_files import CSI_DRIVER, SPC_PROVIDER, provider_class_spec, with_file_env
from tools.offline.mocks import OFFLINE_PROJECT_NUMBER, is_secret
from tools.offline.stack import ROOT
from tests.helpers import plain, pod_spec

STACKS = ["dev", "prod"]
SECRET = "gcp:secretmanager/secret:Secret"
IAM_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
SPC = "kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass"
WORKLOADS = ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob")


def test_principal_is_the_ksa_under_workload_identity_federation():
    assert workload_principal("42", "p.svc.id.goog", "mlflow", "mlflow-tracking") == (
        "principal://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/p.svc.id.goog/"
        "subject/ns/mlflow/sa/mlflow-tracking")


def test_provider_class_is_the_managed_add_ons():
    spec = provider_class_spec({"admin-password": "projects/p/secrets/s/versions/latest"})
    assert spec["provider"] == SPC_PROVIDER == "gke"
    assert yaml.safe_load(spec["parameters"]["secrets"]) == [
        {"resourceName": "projects/p/secrets/s/versions/latest", "path": "admin-password"}]


def test_the_wrapper_runs_the_command_after_the_names():
    assert with_file_env(["mlflow"], ["server"], {"A": "a", "B": "b"}) == (
        ["python"], ["-m", "mlflow_fileenv", "A", "B", "--", "mlflow", "server"])


def test_a_zone_is_refused_as_the_replica_location():
    with pytest.raises(ValueError, match="location='us-central1-a': must be a region"):
        AppSecretsArgs(project="p", location="us-central1-a", prefix="mlflow", labels={})


@pytest.mark.parametrize("stack", STACKS)
def test_each_secret_lives_in_the_stacks_region_with_labels_and_a_generated_first_version(stack_runs, stack):
    run = stack_runs[stack]
    secrets = run.of_type(SECRET)
    # the chat webhook's URL (prod) is the one secret a person supplies: declared without a version
    supplied = (CHAT_WEBHOOK_URL,) if stack == "prod" else ()
    assert sorted(plain(s.inputs["labels"])["secret"] for s in secrets) == sorted((*SECRET_LENGTHS, *supplied))
    region = run.of_type("gcp:sql/databaseInstance:DatabaseInstance")[0].inputs["region"]
    for record in secrets:
        assert record.inputs["replication"] == {"userManaged": {"replicas": [{"location": region}]}}, record.urn
        assert {"app", "env", "managed-by"} <= set(record.inputs["labels"]), record.urn
    versions = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    assert len(versions) == len(SECRET_LENGTHS)
    for version in versions:
        assert is_secret(version.inputs["secretData"]), f"{version.urn}: the value must stay a Pulumi secret"
        assert any("RandomPassword" in dep for dep in version.dependencies), version.urn
        assert "enabled" in version.ignore_changes, f"{version.urn}: rotation disables it; `pulumi up` must not undo that"


def _identities(run, namespace: str, ksa: str) -> set[str]:
    """The members that are this KSA: its principal and, if it is linked to one, its GSA."""
    pool = f"{run.of_type(SECRET)[0].inputs['project']}.svc.id.goog"
    found = {workload_principal(OFFLINE_PROJECT_NUMBER, pool, namespace, ksa)}
    account = next(r for r in run.of_type("kubernetes:core/v1:ServiceAccount")
                   if r.inputs["metadata"]["name"] == ksa and r.inputs["metadata"]["namespace"] == namespace)
    gsa = (account.inputs["metadata"].get("annotations") or {}).get(WORKLOAD_IDENTITY_ANNOTATION)
    return found | ({f"serviceAccount:{gsa}"} if gsa else set())


def expected_readers(run) -> dict[str, set[str]]:
    """secret id -> the identities of every pod that mounts a SecretProviderClass naming it, or (the chat
    relay) reads it through Secret Manager's API as its pod's KSA principal."""
    classes = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r for r in run.of_type(SPC)}
    readers: dict[str, set[str]] = {}
    for workload in (w for kind in WORKLOADS for w in run.of_type(kind)):
        spec, namespace = pod_spec(workload), workload.inputs["metadata"]["namespace"]
        for env in (e for c in spec["containers"] for e in c.get("env", []) if e["name"] == CHAT_SECRET_ENV):
            principal = workload_principal(OFFLINE_PROJECT_NUMBER, f"{run.of_type(SECRET)[0].inputs['project']}"
                                           ".svc.id.goog", namespace, spec["serviceAccountName"])
            readers.setdefault(env["value"].split("/")[3], set()).add(principal)
        for volume in spec.get("volumes", []):
            if "csi" not in volume:
                continue
            assert volume["csi"]["driver"] == CSI_DRIVER and volume["csi"]["readOnly"] is True, workload.urn
            spc = classes[(namespace, volume["csi"]["volumeAttributes"]["secretProviderClass"])]
            assert spc.inputs["spec"]["provider"] == SPC_PROVIDER, spc.urn
            for entry in yaml.safe_load(spc.inputs["spec"]["parameters"]["secrets"]):
                secret_id = entry["resourceName"].split("/")[3]
                readers.setdefault(secret_id, set()).update(_identities(run, namespace, spec["serviceAccountName"]))
    return readers


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_identities_of_the_pods_that_mount_a_secret_may_read_it(stack_runs, stack):
    """GKE's add-on reads as the pod's KSA principal; the open-source provider it derives from
    impersonates the KSA's annotated GSA. Both, and nobody else, hold secretAccessor on exactly the
    secrets that pod mounts: a grant in the wrong namespace, to another KSA, or a missing one fails."""
    run = stack_runs[stack]
    secret_ids = {s.urn: s.inputs["secretId"] for s in run.of_type(SECRET)}
    granted: dict[str, set[str]] = {}
    for grant in run.of_type(IAM_MEMBER):
        assert grant.inputs["role"] == ACCESSOR, grant.urn
        [secret_urn] = [dep for dep in grant.dependencies if dep in secret_ids]
        granted.setdefault(secret_ids[secret_urn], set()).add(grant.inputs["member"])
    assert granted == expected_readers(run)
    assert set(granted) == set(secret_ids.values()), "a secret nobody mounts, or one mounted without a grant"
    assert not [r for r in run.of_type("gcp:projects/iAMMember:IAMMember") if "secretmanager" in r.inputs["role"]], \
        "Secret Manager roles are granted per secret, never on the project"


@pytest.mark.parametrize("stack", STACKS)
def test_pods_wait_for_their_grants_and_every_cluster_runs_the_add_on(stack_runs, stack):
    run = stack_runs[stack]
    grants = {g.urn for g in run.of_type(IAM_MEMBER)}
    for workload in (w for kind in WORKLOADS for w in run.of_type(kind)):
        if any("csi" in v for v in pod_spec(workload).get("volumes", [])):
            assert grants & set(workload.dependencies), f"{workload.urn} may start before it can read its secrets"
    for cluster in run.of_type("gcp:container/cluster:Cluster"):
        assert cluster.inputs["secretManagerConfig"] == {"enabled": True}, cluster.urn
    assert "secretmanager.googleapis.com" in {s.inputs["service"] for s in run.of_type("gcp:projects/service:Service")}


@pytest.mark.parametrize("stack", STACKS)
def test_no_kubernetes_secret_holds_an_application_secret(stack_runs, stack):
    for record in stack_runs[stack].of_type("kubernetes:core/v1:Secret"):
        keys = set(plain(record.inputs["stringData"]))
        assert not keys & {"admin-password", "flask-secret-key", "password", "username"}, record.urn
    assert "tracking_admin_password" not in stack_runs[stack].outputs


SECRET_VERSION_NAME = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")


def test_every_committed_plan_mounts_secret_versions_by_their_full_name():
    # The add-on resolves resourceName as a Secret Manager version name; anything else fails the pod's mount.
    names = {}
    for path in sorted((ROOT / "plan").glob("*/k8s/*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document.get("kind") == "SecretProviderClass":
            entries = yaml.safe_load(document["spec"]["parameters"]["secrets"])
            names.update({f"{path.relative_to(ROOT)}:{e['path']}": e["resourceName"] for e in entries})
    assert {path.parts[1] for path in map(Path, names)} == {"dev", "prod", "loadtest-dev", "loadtest-prod"}
    assert {where: name for where, name in names.items() if not SECRET_VERSION_NAME.match(name)} == {}
