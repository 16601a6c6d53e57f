"""Rolling a Deployment through the Kubernetes API and waiting as `kubectl rollout status` does: the
GKE adapter's roller (tools.ops.interfaces.Roller; `make local`'s is in tools/ops/local.py).

`ClusterRoller.roll` makes a strategic-merge patch of the serving pod template's annotation
`mlflow.org/rollout-token`, then waits until every replica is new and available. `restore()` puts
the previous token back, so Kubernetes returns to the previous ReplicaSet. `restart()` is `kubectl
rollout restart` (any Deployment; the secret rotation's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from k8s.serving import ROLLOUT_ANNOTATION
from tools.ops.interfaces import RolloutError

FIELD_MANAGER = "mlflow-promote"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
KUBERNETES_REQUIREMENT = "kubernetes==37.0.2"
# New pods answer /live at once and turn ready once the model is downloaded and loaded: 600 s leaves
# room for a large model, and is the Deployment's default progressDeadlineSeconds.
DEFAULT_CLUSTER_TIMEOUT = 600.0


def rollout_token(alias: str, version: str, now: Optional[float] = None) -> str:
    """A new annotation value per promotion, readable in `kubectl describe`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{alias}-v{version}-{stamp}"


def rollout_patch(token: Optional[str], annotation: str = ROLLOUT_ANNOTATION) -> dict:
    """The strategic-merge patch that changes only one pod-template annotation (None removes it)."""
    return {"spec": {"template": {"metadata": {"annotations": {annotation: token}}}}}


def _get(obj: Any, *path: str) -> Any:
    """Attribute path through Kubernetes client models (or anything shaped like them)."""
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def rollout_status(deployment: Any) -> tuple[bool, str]:
    """(done, message), as `kubectl rollout status` decides; raises RolloutError when the
    Deployment reports ProgressDeadlineExceeded."""
    generation = _get(deployment, "metadata", "generation") or 0
    observed = _get(deployment, "status", "observed_generation") or 0
    if generation > observed:
        return False, "waiting for the Deployment spec update to be observed"
    for condition in _get(deployment, "status", "conditions") or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise RolloutError(f"rollout exceeded its progress deadline: {condition.message}")
    wanted = _get(deployment, "spec", "replicas")
    updated = _get(deployment, "status", "updated_replicas") or 0
    replicas = _get(deployment, "status", "replicas") or 0
    available = _get(deployment, "status", "available_replicas") or 0
    if wanted is not None and updated < wanted:
        return False, f"{updated} of {wanted} new replicas updated"
    if replicas > updated:
        return False, f"{replicas - updated} old replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"{updated} replicas updated and available"


def load_api_client(kubeconfig: dict):
    """A kubernetes ApiClient for a kubeconfig dict (the stack's output: GKE with gke-gcloud-auth-plugin)."""
    try:
        from kubernetes import config
    except ImportError:
        raise RolloutError(f"the Kubernetes Python client is not installed in this virtualenv: add "
                           f"{KUBERNETES_REQUIREMENT} to requirements-dev.txt and run `make install`") from None
    return config.new_client_from_config_dict(kubeconfig)


def apps_api(api_client):
    from kubernetes import client

    return client.AppsV1Api(api_client)


def autoscaling_api(api_client):
    from kubernetes import client

    return client.AutoscalingV2Api(api_client)


class ReplicaHold:
    """Holds the champion's HorizontalPodAutoscaler `minReplicas` at its current replicas during a canary:
    while the challenger takes most of the traffic the HPA would scale the champion down (after its
    5-minute stabilization), and an abort sends all traffic back in one patch. `release()` restores it."""

    def __init__(self, api, namespace: str, name: str):
        self.api, self.namespace, self.name = api, namespace, name
        self.before: Optional[int] = None

    def _patch(self, replicas: int) -> None:
        try:
            self.api.patch_namespaced_horizontal_pod_autoscaler(self.name, self.namespace,
                                                                {"spec": {"minReplicas": replicas}},
                                                                field_manager=FIELD_MANAGER)
        except Exception as err:
            raise RolloutError(f"patching hpa/{self.name} -n {self.namespace}: {getattr(err, 'reason', None) or err}"
                               ) from None

    def hold(self) -> str:
        try:
            hpa = self.api.read_namespaced_horizontal_pod_autoscaler(self.name, self.namespace)
        except Exception as err:
            raise RolloutError(f"reading hpa/{self.name} -n {self.namespace}: {getattr(err, 'reason', None) or err}"
                               ) from None
        before = hpa.spec.min_replicas or 1
        held = min(max(before, hpa.status.current_replicas or 0), hpa.spec.max_replicas)
        self._patch(held)
        self.before = before
        return f"hpa/{self.name} -n {self.namespace}: minReplicas {before} -> {held} until the canary ends"

    def release(self) -> str:
        if self.before is None:
            return ""
        self._patch(self.before)
        before, self.before = self.before, None
        return f"hpa/{self.name} -n {self.namespace}: minReplicas back to {before}"


def custom_objects_api(api_client):
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


@dataclass
class ClusterRoller:
    """Patches the rollout token of `namespace/name` through `api` (a kubernetes AppsV1Api)."""

    api: Any
    namespace: str
    name: str
    timeout: float = DEFAULT_CLUSTER_TIMEOUT
    poll: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    previous_token: Optional[str] = None
    patched: bool = False

    @property
    def target(self) -> str:
        return f"deployment/{self.name} -n {self.namespace}"

    def _api(self, call: str, *args, **kwargs):
        """One API call; any client or HTTP error (RBAC, network, 404) becomes a RolloutError."""
        try:
            return getattr(self.api, call)(*args, **kwargs)
        except Exception as err:
            status = getattr(err, "status", None)
            reason = getattr(err, "reason", None) or (str(err).splitlines() or [type(err).__name__])[0]
            raise RolloutError(f"Kubernetes API {call} of {self.target} failed: "
                               f"{f'HTTP {status} ' if status else ''}{reason}") from None

    def check(self) -> None:
        """The Deployment can be read (credentials, RBAC, the name in the stack's outputs)."""
        self._api("read_namespaced_deployment", self.name, self.namespace)

    def _patch(self, token: Optional[str], annotation: str = ROLLOUT_ANNOTATION) -> None:
        self._api("patch_namespaced_deployment", self.name, self.namespace, rollout_patch(token, annotation),
                  field_manager=FIELD_MANAGER, _content_type=STRATEGIC_MERGE_PATCH)

    def _wait(self) -> str:
        deadline = self.clock() + self.timeout
        message = "not read yet"
        while True:
            done, message = rollout_status(self._api("read_namespaced_deployment_status", self.name, self.namespace))
            if done:
                return message
            if self.clock() >= deadline:
                raise RolloutError(f"{self.target} not rolled out within {self.timeout:.0f}s: {message}")
            self.sleep(self.poll)

    def roll(self, model: str, alias: str, version: str) -> str:
        current = self._api("read_namespaced_deployment", self.name, self.namespace)
        self.previous_token = (_get(current, "spec", "template", "metadata", "annotations") or {}).get(
            ROLLOUT_ANNOTATION)
        token = rollout_token(alias, version)
        self._patch(token)
        self.patched = True
        return f"{self.target} rolled with {ROLLOUT_ANNOTATION}={token}: {self._wait()}"

    def restart(self, now: Optional[float] = None) -> str:
        """New pods from the same template, as the Deployment's strategy declares; waits for them."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
        self._patch(stamp, RESTARTED_AT_ANNOTATION)
        return f"{self.target} restarted: {self._wait()}"

    def restore(self) -> str:
        if not self.patched:
            return f"{self.target} was not patched"
        self._patch(self.previous_token)
        return f"{self.target} back to {ROLLOUT_ANNOTATION}={self.previous_token}: {self._wait()}"
