"""The drift job: a CronJob scoring the payload log's window against each model version's training profile.

It runs `python -m mlflow_drift score` (in the serving image, beside the payload format it reads) as its own
identity: a Kubernetes service account bound by Workload Identity to a GCP service account that may read
the payload dataset and nothing else (BigQuery Data Viewer on that dataset) and run query jobs (BigQuery
Job User, a project role: jobs have no narrower resource; it grants no data). In MLflow it is its own
user, DRIFT_USERNAME, whose password is the only secret its pods mount: the serving-user Job (k8s/serving.py,
as the admin; `make promote` again for a promoted version) creates it and grants it EDIT on the served
model (it stores each version's reference profile as a version tag), READ on the experiments of the
model's versions (their runs and logged datasets) and EDIT on MONITORING_EXPERIMENT, which that Job creates
when missing (mlflow_image/mlflow_serving_user). Nothing else: under `tracking.auth.defaultPermission`
NO_PERMISSIONS it sees no other model or experiment. Its scores reach Cloud Monitoring as log lines
(infra/monitoring.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.identity import DatasetGrant, WorkloadIdentity, WorkloadIdentityArgs
from infra.naming import child_options, k8s_labels
from infra.secrets import DRIFT_PASSWORD, SecretRef
from infra.settings import DriftSettings
from k8s.pods import container_security_context, resources, tmp_mount, tmp_volume
from k8s.secret_files import file_env, principal, secret_files, secrets_mount, secrets_volume, with_file_env
from k8s.tracking import TrackingEndpoint
from k8s.workload import cron_job_spec, run_once_job_spec

KSA_NAME = "mlflow-drift"
DRIFT_USERNAME = "mlflow-drift"
# Where the job logs its runs: the serving-user Job creates it and gives the drift user EDIT on it.
MONITORING_EXPERIMENT = "platform-monitoring"
MODULE = "mlflow_drift"  # in the serving image
FILE_ENV = {"MLFLOW_TRACKING_PASSWORD": DRIFT_PASSWORD}
# Read access to the payload dataset only; query jobs are project-scoped in BigQuery.
DATASET_ROLE = "roles/bigquery.dataViewer"
PROJECT_ROLES = ("roles/bigquery.jobUser",)
DEADLINE_SECONDS = 1800


def drift_args(source: str, settings: DriftSettings, redacted: tuple[str, ...]) -> list[str]:
    args = ["-m", MODULE, "score", "--source", source, "--window-hours", str(settings.window_hours),
            "--threshold", f"{settings.psi_threshold:g}", "--min-rows", str(settings.min_rows),
            "--experiment", MONITORING_EXPERIMENT]
    return args + ["--redacted", *redacted] if redacted else args


def drift_container(*, image: Any, tracking_url: Any, args: Any) -> dict:
    command, wrapped = with_file_env(["python"], args, FILE_ENV)
    return {
        "name": "drift", "image": image, "command": command, "args": wrapped,
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
                {"name": "MLFLOW_TRACKING_USERNAME", "value": DRIFT_USERNAME}, *file_env(FILE_ENV)],
        "resources": resources("250m", "1Gi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount()],
    }


@dataclass(frozen=True)
class DriftJobArgs:
    provider: k8s.Provider
    """Provider of the platform cluster."""
    tracking: TrackingEndpoint
    project: str
    account_id: str
    """GCP service account id of the job."""
    workload_pool: pulumi.Input[str]
    project_number: pulumi.Input[str]
    image: pulumi.Input[str]
    """The serving image (it holds mlflow_drift)."""
    password: SecretRef
    """Secret Manager secret of the drift user's MLflow password."""
    user_ready: pulumi.Resource
    """The Job that creates the drift user and its grants (the serving-user Job): the schedule waits for it."""
    dataset: pulumi.Output[str]
    """The payload log's BigQuery dataset, PROJECT.DATASET (its output: the grant waits for it)."""
    redacted: tuple[str, ...]
    """Columns the pods redact (dropped or hashed): never scored."""
    settings: DriftSettings


class DriftJob(pulumi.ComponentResource):
    """The drift job's identity, its own user's password file and its schedule."""

    def __init__(self, name: str, args: DriftJobArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:drift:DriftJob", name, None, opts)
        tracking = args.tracking
        labels = k8s_labels(name, "drift")
        identity = WorkloadIdentity(f"{name}-identity", WorkloadIdentityArgs(
            project=args.project, account_id=args.account_id, workload_pool=args.workload_pool,
            namespace=tracking.namespace, ksa_name=KSA_NAME, provider=args.provider, labels=labels,
            project_roles=PROJECT_ROLES,
            dataset_grants=(DatasetGrant(args.dataset.apply(lambda name: name.split(".", 1)[1]), DATASET_ROLE),)),
            child_options(self, opts))
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        provider_class, grants = secret_files(
            f"{name}-drift", (args.password,), KSA_NAME, tracking.namespace, labels, k8s_opts,
            readers=(principal(args.project_number, args.workload_pool, tracking.namespace, identity.ksa_name),
                     pulumi.Output.concat("serviceAccount:", identity.gcp_service_account_email)),
            gcp_opts=child_options(self, opts))
        source = pulumi.Output.concat("bigquery://", args.dataset)
        spec = run_once_job_spec(
            labels, DEADLINE_SECONDS, identity.ksa_name,
            containers=[drift_container(image=args.image, tracking_url=tracking.in_cluster_url,
                                        args=source.apply(lambda value: drift_args(value, args.settings, args.redacted)))],
            volumes=[tmp_volume("256Mi"), secrets_volume(provider_class)], backoff_limit=2)
        k8s.batch.v1.CronJob(
            f"{name}-schedule", metadata={"name": KSA_NAME, "namespace": tracking.namespace, "labels": labels},
            spec=cron_job_spec(args.settings.schedule, spec),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(
                depends_on=[tracking.ready, args.user_ready, *grants, *identity.grants])))
        self.register_outputs({})
