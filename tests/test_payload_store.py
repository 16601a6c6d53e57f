"""Where payload log entries go (infra/payload_store.py), in the real program under mocks: the sink, its
dataset, the one grant it needs, the _Default exclusion, the settings that shape them, and the pod's side
of the same contract (the entry's message, the key secret, the arguments)."""

from __future__ import annotations

import json
import sys

import pytest

from infra.apis import REQUIRED_APIS
from infra.payload_store import MS_PER_DAY, PAYLOAD_LOG_MESSAGE, WRITER_ROLE, payload_filter
from infra.secrets import PAYLOAD_HASH_KEY
from infra.settings import PayloadLogSettings, ServingSettings
from k8s.serving import PAYLOAD_KEY_ENV, payload_log_args
from tools.offline.mocks import OFFLINE_PROJECT_NUMBER

sys.path.insert(0, "mlflow_image")
from mlflow_serving import payload_log  # noqa: E402

DATASET = "gcp:bigquery/dataset:Dataset"
SINK = "gcp:logging/projectSink:ProjectSink"
EXCLUSION = "gcp:logging/projectExclusion:ProjectExclusion"
DATASET_MEMBER = "gcp:bigquery/datasetIamMember:DatasetIamMember"
LOGGING_AGENT = f"serviceAccount:service-{OFFLINE_PROJECT_NUMBER}@gcp-sa-logging.iam.gserviceaccount.com"
STACKS = ("dev", "prod")


def one(run, type_token: str):
    [record] = run.of_type(type_token)
    return record


def depends_on(run, record) -> set[str]:
    return {urn.rsplit("::", 1)[1] for urn in record.dependencies}


def test_the_pod_and_the_program_share_one_message_and_one_key_variable():
    assert PAYLOAD_LOG_MESSAGE == payload_log.PAYLOAD_LOG_MESSAGE
    assert PAYLOAD_KEY_ENV == payload_log.PAYLOAD_KEY_ENV


@pytest.mark.parametrize("stack", STACKS)
def test_the_sink_routes_only_the_serving_containers_payload_entries_into_partitioned_tables(stack_runs, stack):
    run = stack_runs[stack]
    sink, dataset = one(run, SINK), one(run, DATASET)
    assert sink.inputs["destination"] == (f"bigquery.googleapis.com/projects/{dataset.inputs['project']}/datasets/"
                                          f"{dataset.inputs['datasetId']}")
    assert dataset.inputs["datasetId"] == f"mlflow_payloads_{stack}"  # the contract's name
    # The API refuses bigquery_options without a unique writer identity ("Advanced sink options require using
    # per sink service accounts", hashicorp/terraform-provider-google#6122); set explicitly, a second `up` has
    # nothing to change whichever default the provider has.
    assert sink.inputs["uniqueWriterIdentity"] is True
    assert sink.inputs["bigqueryOptions"] == {"usePartitionedTables": True}
    serving_cluster = "mlflow-serving-cluster" if stack == "prod" else "mlflow-platform-cluster"
    assert sink.inputs["filter"] == payload_filter(serving_cluster, "mlflow-serving", "serving")
    assert f'jsonPayload.message="{payload_log.PAYLOAD_LOG_MESSAGE}"' in sink.inputs["filter"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_sinks_writer_identity_gets_data_editor_on_its_dataset_and_nothing_else(stack_runs, stack):
    run = stack_runs[stack]
    grants = [r for r in run.resources if LOGGING_AGENT in json.dumps(r.inputs)]
    [grant] = [r for r in grants if r.type != SINK]
    # writer_identity carries its `serviceAccount:` prefix: the member as the sink reports it
    assert grant.type == DATASET_MEMBER and grant.inputs["member"] == LOGGING_AGENT
    assert grant.inputs["role"] == WRITER_ROLE and grant.inputs["datasetId"] == one(run, DATASET).inputs["datasetId"]
    assert {"mlflow-payloads-sink", "mlflow-payloads-dataset"} <= depends_on(run, grant)
    # The dataset declares no access list: with one, the dataset and the member grant fight over the policy
    # (the provider's DatasetIamMember note) and each `up` would remove the sink's grant again.
    assert "accesses" not in one(run, DATASET).inputs


@pytest.mark.parametrize("stack", STACKS)
def test_entries_leave_the_default_bucket_but_still_reach_the_sink(stack_runs, stack):
    run = stack_runs[stack]
    exclusion, sink = one(run, EXCLUSION), one(run, SINK)
    assert exclusion.inputs["filter"] == sink.inputs["filter"]  # exactly the entries the sink routes
    assert not exclusion.inputs.get("disabled")


@pytest.mark.parametrize("stack, days, delete_contents, protect", [("dev", 30, True, False), ("prod", 90, False, True)])
def test_the_dataset_is_regional_expires_partitions_and_prod_keeps_its_entries(stack_runs, stack, days,
                                                                                delete_contents, protect):
    run = stack_runs[stack]
    dataset = one(run, DATASET)
    assert dataset.inputs["location"] == "us-central1"
    assert dataset.inputs["defaultPartitionExpirationMs"] == days * MS_PER_DAY
    # false: `destroy` fails while the dataset holds tables; true deletes them (the provider's docstring)
    assert dataset.inputs["deleteContentsOnDestroy"] is delete_contents
    assert dataset.protect is protect
    assert "defaultTableExpirationMs" not in dataset.inputs  # that would drop the sink's one table whole


def test_prod_encrypts_the_dataset_with_its_data_key_once_bigquerys_agent_may_use_it(stack_runs):
    run = stack_runs["prod"]
    dataset = one(run, DATASET)
    [data_key] = [k for k in run.of_type("gcp:kms/cryptoKey:CryptoKey") if k.name.endswith("-data")]
    assert dataset.inputs["defaultEncryptionConfiguration"]["kmsKeyName"] == f"{data_key.name}-id"
    [grant] = [g for g in run.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember") if g.name.endswith("-bigquery")]
    assert grant.inputs["member"] == (f"serviceAccount:bq-{OFFLINE_PROJECT_NUMBER}"
                                      "@bigquery-encryption.iam.gserviceaccount.com")
    assert grant.inputs["cryptoKeyId"] == f"{data_key.name}-id"
    assert "mlflow-keys-grants-propagated" in depends_on(run, dataset)
    assert "defaultEncryptionConfiguration" not in one(stack_runs["dev"], DATASET).inputs


def test_bigquery_is_enabled_before_the_dataset_exists(stack_runs):
    assert "bigquery.googleapis.com" in REQUIRED_APIS
    run = stack_runs["dev"]
    assert "mlflow-apis-bigquery" in depends_on(run, one(run, DATASET))


def test_retention_follows_the_setting(run_stack_with):
    run = run_stack_with("dev", {"serving.payloadLog.retentionDays": "7"})
    assert one(run, DATASET).inputs["defaultPartitionExpirationMs"] == 7 * MS_PER_DAY


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_serving_pods_read_the_hash_key(stack_runs, stack):
    run = stack_runs[stack]
    secret_id = next(s.inputs["secretId"] for s in run.of_type("gcp:secretmanager/secret:Secret")
                     if s.inputs["labels"]["secret"] == PAYLOAD_HASH_KEY)
    readers = [g for g in run.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
               if g.inputs["secretId"].endswith(f"/{secret_id}")]
    assert readers and all("mlflow-serving" in g.inputs["member"] for g in readers), [g.inputs["member"] for g in readers]
    classes = [c for c in run.of_type("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass")
               if secret_id in json.dumps(c.inputs)]
    assert [c.inputs["metadata"]["namespace"] for c in classes] == ["mlflow-serving"]
    assert secret_id not in json.dumps([r.inputs for r in run.of_type("kubernetes:apps/v1:Deployment")])


def test_the_pod_gets_the_rate_and_the_columns_only_when_logging_is_on():
    assert payload_log_args(PayloadLogSettings()) == []
    on = PayloadLogSettings(sample_rate=0.25, redact={"drop": ["email"], "hash": ["customer id"]})
    assert payload_log_args(on, "challenger") == ["--payload-sample-rate", "0.25", "--track", "challenger",
                                                  "--payload-drop", '["email"]', "--payload-hash", '["customer id"]']


def test_each_track_names_itself_in_its_entries(run_stack_with):
    run = run_stack_with("prod", {"serving.challenger.weight": 10})
    tracks = {}
    for deployment in run.of_type("kubernetes:apps/v1:Deployment"):
        for c in deployment.inputs["spec"]["template"]["spec"]["containers"]:
            if "--track" in c["args"]:
                alias = c["args"][c["args"].index("--model-uri") + 1].rsplit("@", 1)[1]
                tracks[c["args"][c["args"].index("--track") + 1]] = alias
    assert tracks == {"champion": "champion", "challenger": "challenger"}


@pytest.mark.parametrize("payload_log, message", [
    ({"sampleRate": 1.5}, "less than or equal to 1"),
    ({"sampleRate": -0.1}, "greater than or equal to 0"),
    ({"retentionDays": 0}, "greater than or equal to 1"),
    ({"redact": {"drop": ["a"], "hash": ["a", "b"]}}, "«hash» = ['a']: also in «drop»"),
    ({"redact": {"drop": ["a", "a"]}}, "«drop» = ['a', 'a']: names a column twice"),
    ({"redact": {"hash": [""]}}, "at least 1 character"),
    ({"redact": {"mask": ["a"]}}, "Extra inputs are not permitted"),
])
def test_bad_payload_log_settings_are_refused_by_name(payload_log, message):
    with pytest.raises(ValueError, match="payloadLog") as refused:
        ServingSettings(modelName="iris", payloadLog=payload_log)
    assert message in str(refused.value)
