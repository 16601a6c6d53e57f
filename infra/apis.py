"""The Google APIs the platform needs, enabled by the program itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options

REQUIRED_APIS = (
    "artifactregistry.googleapis.com",
    # The payload log's dataset (infra/payload_store.py) is created, and written by its sink, through it.
    "bigquery.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
)
# Only with `edge.iap: true`: Identity-Aware Proxy on the Ingress.
IAP_API = "iap.googleapis.com"
# Only with `monitoring.notify.chat: true`: the alerts' topic and the chat relay's subscription.
PUBSUB_API = "pubsub.googleapis.com"


@dataclass(frozen=True)
class ProjectApisArgs:
    project: str
    """GCP project in which the APIs are enabled."""
    services: tuple[str, ...] = REQUIRED_APIS
    """Service names to enable."""


class ProjectApis(pulumi.ComponentResource):
    """Enables the required APIs; depend on this component to wait for all of them."""

    service_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ProjectApisArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:apis:ProjectApis", name, None, opts)
        services = [
            gcp.projects.Service(
                f"{name}-{service.split('.')[0]}",
                project=args.project,
                service=service,
                # Other workloads in the project may use these APIs: never turn them off.
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=child_options(self, opts),
            )
            for service in args.services
        ]
        self.service_names = pulumi.Output.all(*[s.service for s in services])
        self.register_outputs({"service_names": self.service_names})
