"""Where the serving pods' payload log entries go: a Cloud Logging sink routes them to a BigQuery dataset
with partition expiry; an exclusion keeps them out of the _Default log bucket.

Provider and API facts (pulumi-gcp 10.2's own docstrings; the Logging and BigQuery references):
- `unique_writer_identity` must be true with `bigquery_options`; the sink's `writer_identity` is then a
  Logging service agent (`serviceAccount:service-PROJECT_NUMBER@gcp-sa-logging.iam.gserviceaccount.com`), with
  its `serviceAccount:` prefix: it is the member as it is. It gets roles/bigquery.dataEditor on this dataset
  only (the sink creates its tables and streams rows into them), nothing on the project.
- `use_partitioned_tables`: one table per log (`stderr`), partitioned by day (UTC), instead of a table per day;
  the dataset's `default_partition_expiration_ms` applies to tables created after it is set, so a changed
  retention reaches the existing table only by `bq update --time_partitioning_expiration` (README).
- `delete_contents_on_destroy` false: `destroy` fails while the dataset has tables; true deletes them.
- `projects.exclusions.create` "creates a new exclusion in the _Default sink"; sinks act independently, so the
  entries still reach this sink. Logging charges $0.50/GiB for what lands in log buckets (beyond 50 GiB a
  month) and nothing for routing: excluded, the entries cost only BigQuery, and logging.viewer alone does not
  read them. The dataset declares no `accesses`, so BigQuery gives it its defaults (projectReaders READER,
  projectWriters WRITER, projectOwners OWNER): project Viewers and Editors read it. Restricting it means
  declaring the accesses authoritatively, which would fight the DatasetIamMember grants here (README).
- The sink's grant needs the sink's writer identity, so the sink exists first: entries routed before the
  grant propagates (seconds to minutes after the first `up`) are refused and lost.
- BigQuery encrypts a CMEK dataset with its service agent (`bq-PROJECT_NUMBER@bigquery-encryption…`), granted
  on the key by infra/kms.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options

PAYLOAD_LOG_MESSAGE = "mlflow.serving.payload"  # mlflow_serving/payload_log.py
WRITER_ROLE = "roles/bigquery.dataEditor"
MS_PER_DAY = 86_400_000
# The pods write payload entries on stderr (nothing else writes there: an entry is never cut by another
# write); GKE writes a container's stderr to the log `stderr`: the sink's table in the dataset.
PAYLOAD_TABLE = "stderr"


def dataset_id(name_prefix: str, environment: str) -> str:
    """BigQuery dataset ids allow letters, digits and underscores only."""
    return f"{name_prefix.replace('-', '_')}_payloads_{environment}"


def payload_filter(cluster_name: str, namespace: str, container: str) -> str:
    """The serving container's payload entries, nothing else (Logging query language)."""
    return "\n".join([
        'resource.type="k8s_container"',
        f'resource.labels.cluster_name="{cluster_name}"',
        f'resource.labels.namespace_name="{namespace}"',
        f'resource.labels.container_name="{container}"',
        f'log_id("{PAYLOAD_TABLE}")',
        f'jsonPayload.message="{PAYLOAD_LOG_MESSAGE}"',
    ])


@dataclass(frozen=True)
class PayloadStoreArgs:
    project: str
    """GCP project."""
    location: str
    """Region of the dataset: the platform's (and the CMEK key's)."""
    dataset_id: str
    """BigQuery dataset id (`dataset_id()`)."""
    sink_name: str
    """Name of the Logging sink and of the _Default sink's exclusion."""
    cluster_name: pulumi.Input[str]
    """The cluster the serving pods run on."""
    namespace: str
    """Namespace of the serving Deployment."""
    container: str
    """Name of the serving container."""
    retention_days: int
    """Each day's partition is deleted this many days after it."""
    labels: dict[str, str]
    """Dataset labels."""
    delete_contents_on_destroy: bool = False
    """`destroy` deletes the entries too (dev); otherwise it fails while the dataset holds tables (prod)."""
    protect: bool = True
    """Pulumi refuses to delete or replace the dataset (`protect`)."""
    encryption_key_id: Optional[pulumi.Input[str]] = None
    """Cloud KMS key of the dataset's tables (CMEK); None: Google-managed."""
    encryption_key_ready: tuple[pulumi.Resource, ...] = ()
    """What the dataset waits for: BigQuery's agent may use the key."""

    def __post_init__(self) -> None:
        if not 1 <= self.retention_days <= 3650:
            raise ValueError(f"PayloadStoreArgs.retention_days={self.retention_days}: allowed 1-3650")


class PayloadStore(pulumi.ComponentResource):
    """The dataset, the sink into it, the sink's grant on it, and the _Default sink's exclusion."""

    dataset: pulumi.Output[str]
    """PROJECT.DATASET."""
    table: pulumi.Output[str]
    """PROJECT.DATASET.stderr: the table the drift job reads."""

    def __init__(self, name: str, args: PayloadStoreArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:payload_store:PayloadStore", name, None, opts)
        child = child_options(self, opts)
        dataset = gcp.bigquery.Dataset(
            f"{name}-dataset", project=args.project, dataset_id=args.dataset_id, location=args.location,
            description="Sampled, redacted requests and answers of the serving pods (mlflow.serving.payload).",
            default_partition_expiration_ms=args.retention_days * MS_PER_DAY,
            delete_contents_on_destroy=args.delete_contents_on_destroy,
            default_encryption_configuration=(
                gcp.bigquery.DatasetDefaultEncryptionConfigurationArgs(kms_key_name=args.encryption_key_id)
                if args.encryption_key_id is not None else None),
            labels=args.labels,
            opts=child_options(self, opts, protect=args.protect, depends_on=list(args.encryption_key_ready)))
        entries = pulumi.Output.from_input(args.cluster_name).apply(
            lambda cluster: payload_filter(cluster, args.namespace, args.container))
        sink = gcp.logging.ProjectSink(
            f"{name}-sink", project=args.project, name=args.sink_name,
            destination=pulumi.Output.concat("bigquery.googleapis.com/projects/", args.project, "/datasets/",
                                             dataset.dataset_id),
            filter=entries, unique_writer_identity=True,
            bigquery_options=gcp.logging.ProjectSinkBigqueryOptionsArgs(use_partitioned_tables=True),
            description="Payload entries of the serving pods into their BigQuery dataset.", opts=child)
        gcp.bigquery.DatasetIamMember(
            f"{name}-sink-writer", project=args.project, dataset_id=dataset.dataset_id, role=WRITER_ROLE,
            member=sink.writer_identity, opts=child)
        gcp.logging.ProjectExclusion(
            f"{name}-default-exclusion", project=args.project, name=args.sink_name, filter=entries,
            description="Payload entries go to their BigQuery dataset only (see the sink of the same name).",
            opts=child)
        self.dataset = pulumi.Output.concat(args.project, ".", dataset.dataset_id)
        self.table = pulumi.Output.concat(self.dataset, ".", PAYLOAD_TABLE)
        self.register_outputs({"dataset": self.dataset, "table": self.table})
