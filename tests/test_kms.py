"""Keys the program holds: Kubernetes Secrets in etcd on every cluster, Cloud SQL and the artifact
bucket in prod (CMEK); each Google service agent may use only the key it needs."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, settings_from_values
from infra.kms import ENCRYPTER_DECRYPTER, GRANT_PROPAGATION, gke_service_agent
from tools.offline.dependencies import waits_for
from tools.offline.mocks import OFFLINE_PROJECT_NUMBER
from tests.helpers import dig

NS = "mlflow-platform"
WAIT_TYPE = "time:index/sleep:Sleep"


def key(run, role: str):
    return run.named(f"mlflow-keys-{role}")


def grants_on(run, key_record) -> list:
    return [g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
            if g.inputs["cryptoKeyId"] == key_record.state.get("id", f"{key_record.name}-id")]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_cluster_encrypts_secrets_with_the_programs_key(stack_runs, stack):
    run = stack_runs[stack]
    secrets_key = key(run, "secrets")
    for cluster in run.of_type("gcp:container/cluster:Cluster"):
        assert cluster.inputs["databaseEncryption"] == {"state": "ENCRYPTED", "keyName": f"{secrets_key.name}-id"}


# Who uses a key (by the input naming it) -> the grant that lets its service agent do so.
KEY_USERS = {
    "gcp:container/cluster:Cluster": ("databaseEncryption.keyName", "mlflow-keys-secrets-gke"),
    "gcp:sql/databaseInstance:DatabaseInstance": ("encryptionKeyName", "mlflow-keys-data-sql"),
    "gcp:storage/bucket:Bucket": ("encryption.defaultKmsKeyName", "mlflow-keys-data-storage"),
}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_what_uses_a_key_waits_for_its_grant_to_propagate(stack_runs, stack):
    # GKE, Cloud SQL and Cloud Storage check the agent's access when they create the resource and fail
    # rather than wait; IAM grants take minutes to propagate.
    run = stack_runs[stack]
    waiting = waits_for(run)
    [wait] = [w for w in run.of_type(WAIT_TYPE) if w.name.startswith("mlflow-keys")]
    assert wait.inputs["createDuration"] == GRANT_PROPAGATION
    grants = {g.name: g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")}
    assert {g.urn for g in grants.values()} <= set(wait.dependencies), "the wait starts after every grant"
    users = [(r, grant) for r in run.resources if r.type in KEY_USERS
             for path, grant in [KEY_USERS[r.type]] if dig(r.inputs, path)]
    assert len(users) == {"dev": 1, "prod": 4}[stack]  # dev: its cluster; prod: two clusters, instance, bucket
    for user, grant in users:
        assert wait.urn in waiting[user.urn], f"{user.urn} does not wait for {wait.name}"
        assert grants[grant].urn in waiting[user.urn], user.urn


def test_the_wait_covers_iams_documented_propagation_time():
    # "typically 2 minutes, potentially 7 minutes or longer" (cloud.google.com/iam/docs/access-change-propagation)
    amount, unit = int(GRANT_PROPAGATION[:-1]), GRANT_PROPAGATION[-1]
    assert amount * {"s": 1, "m": 60, "h": 3600}[unit] >= 7 * 60, GRANT_PROPAGATION


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gkes_agent_exists_before_it_is_granted_the_secrets_key(stack_runs, stack):
    run = stack_runs[stack]
    [agent] = [i for i in run.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
               if i.inputs["service"] == "container.googleapis.com"]
    grant = run.named("mlflow-keys-secrets-gke")
    assert agent.urn in grant.dependencies, grant.urn
    assert grant.inputs["member"] == f"serviceAccount:{agent.state['email']}", grant.urn
    assert run.named("mlflow-apis-container").urn in waits_for(run)[agent.urn], "the API is on first"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_gkes_agent_may_use_the_secrets_key(stack_runs, stack):
    run = stack_runs[stack]
    grants = [g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
              if g.inputs["cryptoKeyId"] == "mlflow-keys-secrets-id"]
    assert [(g.inputs["role"], g.inputs["member"]) for g in grants] == [
        (ENCRYPTER_DECRYPTER, gke_service_agent(OFFLINE_PROJECT_NUMBER))]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_keys_rotate_and_live_in_the_region(stack_runs, stack):
    run = stack_runs[stack]
    [ring] = run.of_type("gcp:kms/keyRing:KeyRing")
    assert ring.inputs["location"] == run.named("mlflow-net-subnet").inputs["region"]
    assert "name" not in ring.inputs, "autonamed: a destroyed stack's ring name cannot be reused"
    for crypto_key in run.of_type("gcp:kms/cryptoKey:CryptoKey"):
        assert crypto_key.inputs["rotationPeriod"] == f"{90 * 86400}s"


def test_prod_encrypts_database_and_artifacts_with_the_data_key(stack_runs):
    run = stack_runs["prod"]
    data_key_id = "mlflow-keys-data-id"
    instance = run.named("mlflow-db-instance")
    bucket = run.named("mlflow-artifacts-bucket")
    assert instance.inputs["encryptionKeyName"] == data_key_id
    assert bucket.inputs["encryption"] == {"defaultKmsKeyName": data_key_id}
    members = {g.inputs["member"]: g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
               if g.inputs["cryptoKeyId"] == data_key_id}
    sql_agent = f"serviceAccount:service-{OFFLINE_PROJECT_NUMBER}@gcp-sa-cloud-sql.iam.gserviceaccount.com"
    storage_agent = f"serviceAccount:service-{OFFLINE_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
    bigquery_agent = f"serviceAccount:bq-{OFFLINE_PROJECT_NUMBER}@bigquery-encryption.iam.gserviceaccount.com"
    assert set(members) == {sql_agent, storage_agent, bigquery_agent}


def test_dev_keeps_google_managed_keys_for_data(stack_runs):
    run = stack_runs["dev"]
    assert "encryptionKeyName" not in run.named("mlflow-db-instance").inputs
    assert "encryption" not in run.named("mlflow-artifacts-bucket").inputs
    assert len(run.of_type("gcp:kms/cryptoKey:CryptoKey")) == 1


def test_prod_refuses_to_run_without_cmek():
    values = {"gcp:project": "my-proj-123", f"{NS}:environment": "prod",
              f"{NS}:database": {"pointInTimeRecovery": True}, f"{NS}:cmek": "false"}
    with pytest.raises(ConfigError, match=f"{NS}:cmek = False: must be true when environment is prod"):
        settings_from_values(values)
