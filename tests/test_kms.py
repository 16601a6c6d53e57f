"""Keys the program holds: Kubernetes Secrets in etcd on every cluster, Cloud SQL and the artifact
bucket in prod (CMEK); each Google service agent may use only the key it needs."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, settings_from_values
from infra.kms import ENCRYPTER_DECRYPTER, gke_service_agent
from offline.mocks import OFFLINE_PROJECT_NUMBER

NS = "mlflow-platform"


def key(run, role: str):
    return run.named(f"mlflow-keys-{role}")


def grants_on(run, key_record) -> list:
    return [g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
            if g.inputs["cryptoKeyId"] == key_record.state.get("id", f"{key_record.name}-id")]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_cluster_encrypts_secrets_with_the_programs_key(stack_runs, stack):
    run = stack_runs[stack]
    secrets_key = key(run, "secrets")
    grant = run.named("mlflow-keys-secrets-gke")
    for cluster in run.of_type("gcp:container/cluster:Cluster"):
        assert cluster.inputs["databaseEncryption"] == {"state": "ENCRYPTED", "keyName": f"{secrets_key.name}-id"}
        # GKE refuses a key its agent cannot use: the grant comes first
        assert grant.urn in cluster.dependencies, cluster.urn


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
    assert set(members) == {sql_agent, storage_agent}
    assert members[sql_agent].urn in instance.dependencies
    assert members[storage_agent].urn in bucket.dependencies


def test_dev_keeps_google_managed_keys_for_data(stack_runs):
    run = stack_runs["dev"]
    assert "encryptionKeyName" not in run.named("mlflow-db-instance").inputs
    assert "encryption" not in run.named("mlflow-artifacts-bucket").inputs
    assert len(run.of_type("gcp:kms/cryptoKey:CryptoKey")) == 1


def test_prod_refuses_to_run_without_cmek():
    values = {"gcp:project": "my-proj-123", f"{NS}:environment": "prod", f"{NS}:dbPointInTimeRecovery": "true",
              f"{NS}:controlPlaneEndpoint": "dns", f"{NS}:cmek": "false"}
    with pytest.raises(ConfigError, match=f"{NS}:cmek = False: must be true when environment is prod"):
        settings_from_values(values)
