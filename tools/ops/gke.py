"""The GKE adapter of tools.ops.interfaces: the platform a Pulumi stack deployed.

Everything about the stack comes from its outputs (`tools.ops.stack`, Pulumi's Automation API, which
needs the Pulumi CLI): the Deployments `tracking_deployment` and `serving_deployment`, the kubeconfig
of their clusters (`platform_kubeconfig`, `serving_kubeconfig`), the Secret Manager secrets
`app_secrets`, the admin `tracking_admin_username`. Rollouts go through the Kubernetes API
(`tools.ops.rollout.ClusterRoller`), the rehearsal is a Job beside serving (`tools.ops.verify`),
secrets are Secret Manager's (`tools.ops.secret_manager`, Application Default Credentials). The
tracking server is reached at --tracking-uri or MLFLOW_TRACKING_URI (a port-forward; the ingress only without IAP, which takes no password).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from infra.secrets import ADMIN_PASSWORD
from k8s.serving import ROLLOUT_ANNOTATION, SERVICE_NAME, SERVING_USERNAME
from infra.config import ConfigError, settings_from_values
from tools.offline.stack import read_stack_config
from tools.ops.interfaces import (
    ChallengerTarget, PromotionTarget, RolloutError, RotationTarget, TargetError, Tracking,
)
from tools.ops.notify import cloud_logging_notify
from tools.ops.rollout import (
    DEFAULT_CLUSTER_TIMEOUT, ClusterRoller, ReplicaHold, apps_api, autoscaling_api, custom_objects_api, load_api_client,
)
from tools.ops.secret_manager import CloudSecretManager, SecretManagerError, app_secret
from tools.ops.stack import StackOutputError, StackOutputs
from tools.ops.traffic import HttpRouteRouter, PrometheusMetrics, adc_get, prometheus_thresholds
from tools.ops.verify import ClusterVerifier

# Where each component's Deployment runs: the stack's kubeconfig output of that cluster.
CLUSTERS = {"tracking": "platform", "serving": "serving"}


@dataclass
class DeploymentRestarter:
    """`kubectl rollout restart` of each component's Deployment (tools.ops.interfaces.Restarter)."""

    rollers: dict[str, ClusterRoller]

    def restart(self, component: str) -> str:
        return self.rollers[component].restart()


class GkeTarget:
    def __init__(self, stack: str, tracking_uri: Optional[str]):
        self.stack = stack
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not self.tracking_uri:
            raise TargetError("--target cluster needs the tracking URL: --tracking-uri or MLFLOW_TRACKING_URI "
                              "(e.g. `kubectl -n mlflow port-forward svc/mlflow-tracking 5000:5000` and "
                              "http://localhost:5000)")

    @staticmethod
    def _roller(outputs: StackOutputs, component: str, timeout: Optional[float]) -> tuple[ClusterRoller, Any]:
        """The component's Deployment, checked readable before anything changes; and its cluster's ApiClient."""
        namespace, name = outputs.deployment(component)
        api_client = load_api_client(outputs.kubeconfig(CLUSTERS[component]))
        roller = ClusterRoller(apps_api(api_client), namespace, name, timeout=timeout or DEFAULT_CLUSTER_TIMEOUT)
        roller.check()
        return roller, api_client

    def promotion(self, timeout: Optional[float]) -> PromotionTarget:
        try:
            outputs = StackOutputs.read(self.stack)
            username = os.environ.get("MLFLOW_TRACKING_USERNAME") or outputs.get("tracking_admin_username")
            # The stack outputs the secret, never its value: the latest version, read as the operator.
            password = (os.environ.get("MLFLOW_TRACKING_PASSWORD")
                        or CloudSecretManager().access(app_secret(outputs, ADMIN_PASSWORD)))
            roller, api_client = self._roller(outputs, "serving", timeout)
            verifier = ClusterVerifier(api_client, roller.namespace, roller.name, service=SERVICE_NAME)
            challenger = self._challenger(outputs, timeout)
        except (RolloutError, StackOutputError, SecretManagerError, ConfigError, OSError) as err:
            raise TargetError(str(err)) from None
        note = (f"the Deployment's {ROLLOUT_ANNOTATION} now differs from the stack's serving.rolloutToken: record "
                f"it with `pulumi config set --path serving.rolloutToken <token above> -s {self.stack}` so the next "
                "`pulumi up` keeps it")
        return PromotionTarget(Tracking(self.tracking_uri, username, password, SERVING_USERNAME), roller, verifier,
                               cloud_logging_notify(lambda: outputs.get("project")), (note,), challenger)

    def _challenger(self, outputs: StackOutputs, timeout: Optional[float]) -> Optional[ChallengerTarget]:
        """The challenger track where the stack declares one: its Deployment (output
        `serving_challenger_deployment`), the route (`serving_route`), Managed Prometheus of the project."""
        if "serving_challenger_deployment" not in outputs.values:
            return None
        config = read_stack_config(self.stack)[0]
        if not config.get("gcp:project"):
            raise ConfigError(f"stack {self.stack} sets no gcp:project, the project of its Managed Prometheus: "
                              f"`pulumi config set gcp:project PROJECT -s {self.stack}`")
        serving = settings_from_values(config).serving
        thresholds = prometheus_thresholds(serving.canary, self.stack)  # refused before anything is touched
        namespace, name = outputs.namespaced("serving_challenger_deployment")
        api_client = load_api_client(outputs.kubeconfig(CLUSTERS["serving"]))
        roller = ClusterRoller(apps_api(api_client), namespace, name, timeout=timeout or DEFAULT_CLUSTER_TIMEOUT)
        roller.check()
        router = HttpRouteRouter(custom_objects_api(api_client), *outputs.namespaced("serving_route"), SERVICE_NAME)
        router.check()
        stack = self.stack

        def notes(weight: int, mirror: bool) -> tuple[str, ...]:
            if (weight, mirror) == (serving.challenger.weight, serving.challenger.mirror):
                return ()
            return (f"the HTTPRoute now differs from the stack's serving.challenger: keep it with `pulumi config set "
                    f"--path serving.challenger.weight {weight} -s {stack}` and `pulumi config set --path "
                    f"serving.challenger.mirror {str(mirror).lower()} -s {stack}`; the next `pulumi up` that changes the "
                    "route writes the settings' weights back",)

        return ChallengerTarget(serving.model_name, serving.model_alias, serving.challenger.alias, roller, router,
                                PrometheusMetrics(config["gcp:project"], outputs.get("serving_cluster_name"), namespace,
                                                  adc_get()),
                                thresholds,
                                (serving.challenger.weight, serving.challenger.mirror), notes,
                                ReplicaHold(autoscaling_api(api_client), *outputs.deployment("serving")))

    def rotation(self, timeout: Optional[float]) -> RotationTarget:
        try:
            outputs = StackOutputs.read(self.stack)
            secret_ids = dict(outputs.json("app_secrets"))
            store = CloudSecretManager()
            rollers = {component: self._roller(outputs, component, timeout)[0] for component in CLUSTERS}
        except (SecretManagerError, RolloutError, StackOutputError) as err:
            raise TargetError(str(err)) from None
        return RotationTarget(self.tracking_uri, store, secret_ids, DeploymentRestarter(rollers))
