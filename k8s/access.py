"""Team access: the Job (and its schedule) that applies `mlflow-platform:access.teams` to MLflow.

mlflow_image/mlflow_access does the work as the admin, from inside the tracking namespace. The Job is
named by the teams and the image, so a change of either runs it again on `up`; the CronJob covers what
appears between `up`s (new experiments and models under a team's prefix, people of a `domain:` member).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.naming import child_options, job_wait, k8s_labels
from infra.secrets import ADMIN_PASSWORD
from infra.settings import AccessSettings
from k8s.pods import container_security_context, resources, tmp_mount, tmp_volume
from k8s.secret_files import file_env, principal, secret_files, secrets_mount, secrets_volume, with_file_env
from k8s.tracking import TrackingEndpoint
from k8s.workload import cron_job_spec, run_once_job_spec

KSA_NAME = "mlflow-access"
ROLE_PREFIX = "team-"  # each team is the MLflow role ROLE_PREFIX + name (mlflow_access.ROLE_PREFIX)
MODULE = "mlflow_access"  # in the tracking image
FILE_ENV = {"MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
DEADLINE_SECONDS = 600
# Often enough that a new experiment of a team's prefix is the team's within minutes, rarely enough to cost nothing.
SCHEDULE = "*/10 * * * *"


def teams_json(settings: AccessSettings) -> str:
    """The desired state the Job applies: the teams by their config keys, in a stable order, one value a
    line (the plan shows a change of one member or rule as one line)."""
    return json.dumps({name: team.model_dump(by_alias=True, mode="json") for name, team in settings.teams.items()},
                      sort_keys=True, indent=1)


def domain_roles(settings: AccessSettings) -> tuple[tuple[str, str], ...]:
    """(domain, team role) of every `domain:` member: the tracking server puts a new user of the domain
    in the role at first sign-in, rather than at the access Job's next run."""
    return tuple((member.split(":", 1)[1], ROLE_PREFIX + name) for name, team in sorted(settings.teams.items())
                 for member in team.members if member.startswith("domain:"))


def job_name(teams: str, image_version: str) -> str:
    return f"mlflow-access-{hashlib.sha256(f'{teams}|{image_version}'.encode()).hexdigest()[:10]}"


def access_container(*, image: Any, tracking_url: Any, admin_username: str, teams: str) -> dict:
    command, args = with_file_env(["python"], ["-m", MODULE], FILE_ENV)
    return {
        "name": "apply-team-access",
        "image": image,
        "command": command,
        "args": args,
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
                {"name": "MLFLOW_TRACKING_USERNAME", "value": admin_username},
                *file_env(FILE_ENV),
                {"name": "ACCESS_TEAMS", "value": teams}],
        "resources": resources("100m", "256Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount()],
    }


@dataclass(frozen=True)
class TeamAccessArgs:
    provider: k8s.Provider
    """Provider of the platform cluster."""
    tracking: TrackingEndpoint
    """Where the Job runs (tracking's namespace) and whom it acts as (the admin)."""
    image: pulumi.Input[str]
    """The tracking image (it holds mlflow_access)."""
    image_version: str
    """Content hash of the image sources: a new image reruns the Job."""
    project_number: pulumi.Input[str]
    workload_pool: pulumi.Input[str]
    settings: AccessSettings


class TeamAccess(pulumi.ComponentResource):
    """The access Job's identity, its admin password file, the Job and its schedule."""

    def __init__(self, name: str, args: TeamAccessArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:access:TeamAccess", name, None, opts)
        tracking = args.tracking
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        labels = k8s_labels(name, "access")
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-ksa", metadata={"name": KSA_NAME, "namespace": tracking.namespace, "labels": labels},
            automount_service_account_token=False, opts=k8s_opts)
        provider_class, grants = secret_files(
            f"{name}-access", (tracking.admin_password,), KSA_NAME, tracking.namespace, labels, k8s_opts,
            readers=(principal(args.project_number, args.workload_pool, tracking.namespace, ksa.metadata["name"]),),
            gcp_opts=child_options(self, opts))
        teams = teams_json(args.settings)
        spec = run_once_job_spec(
            labels, DEADLINE_SECONDS, ksa.metadata["name"],
            containers=[access_container(image=args.image, tracking_url=tracking.in_cluster_url,
                                         admin_username=tracking.admin_username, teams=teams)],
            volumes=[tmp_volume("64Mi"), secrets_volume(provider_class)], backoff_limit=6)
        after = pulumi.ResourceOptions(depends_on=[tracking.ready, *grants])
        k8s.batch.v1.Job(
            f"{name}-job",
            metadata={"name": job_name(teams, args.image_version), "namespace": tracking.namespace, "labels": labels},
            spec=spec,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(
                delete_before_replace=True, custom_timeouts=job_wait(DEADLINE_SECONDS)))))
        k8s.batch.v1.CronJob(
            f"{name}-schedule",
            metadata={"name": KSA_NAME, "namespace": tracking.namespace, "labels": labels},
            spec=cron_job_spec(SCHEDULE, spec), opts=pulumi.ResourceOptions.merge(k8s_opts, after))
        self.register_outputs({})
