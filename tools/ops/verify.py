"""What `make promote` proves about a version beyond its registry state.

Before the alias moves, the version is *rehearsed*: what a serving pod does before it turns ready
(download, restore the recorded environment, load the model; `python -m mlflow_serving.rehearse`
with the serving image's code and settings), so a model whose environment cannot be built never
reaches the fleet. After the rollout, the version's own input example (MLflow's
`serving_input_example.json`, or a request given with --request) is *probed* through serving:
anything but a 200 with predictions fails the rollout.

The pieces both targets share are here, with the cluster's verifier: the rehearsal is a Job built from
the serving Deployment's own pod template (same image, identity, package index, limits), the probe
goes through the API server's Service proxy, with the credentials that already roll the Deployment.
`make local`'s (the rehearsal in the runtime virtualenv) is in tools/ops/local.py.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional

from k8s.serving import SERVING_PORT
from tools.ops.interfaces import RehearsalFailed, Rehearsed, RolloutError

REHEARSAL_MODULE = "mlflow_serving.rehearse"
REHEARSAL_SLACK_SECONDS = 120.0  # download and load, beyond the environment's own limit
PROBE_TIMEOUT = 60.0


def rehearsal_args(model: str, version: str, container_args: list[str]) -> list[str]:
    """The rehearsal's arguments, with the serving container's own environment settings."""
    args = ["-m", REHEARSAL_MODULE, "--model-uri", f"models:/{model}/{version}"]
    for option in ("--env-cache", "--env-timeout", "--package-index"):
        if option in container_args:
            args += [option, container_args[container_args.index(option) + 1]]
    return args


def env_timeout(container_args: list[str]) -> float:
    """The serving container's limit on restoring a model's environment (`--env-timeout`)."""
    return float(container_args[container_args.index("--env-timeout") + 1])


def rehearsal_result(output: str) -> Rehearsed:
    """The JSON line the rehearsal prints last; RehearsalFailed with its reason."""
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RehearsalFailed("the rehearsal printed no result")
    result = json.loads(lines[-1])
    if "error" in result:
        raise RehearsalFailed(result["error"])
    return Rehearsed(result["environment"], result.get("input_example"))


def check_answer(status: int, body: bytes) -> str:
    """A 200 whose JSON has non-empty `predictions`, or RolloutError saying what came back."""
    text = body.decode(errors="replace")
    if status != 200:
        raise RolloutError(f"its input example was answered HTTP {status}: {text.strip()[:300]}")
    try:
        predictions = json.loads(text).get("predictions")
    except (ValueError, AttributeError):
        predictions = None
    if not predictions:
        raise RolloutError(f"its input example was answered 200 without predictions: {text.strip()[:300]}")
    return f"its input example was answered with {len(predictions)} predictions"


def post_json(url: str, request: dict, timeout: float = PROBE_TIMEOUT) -> tuple[int, bytes]:
    data = json.dumps(request).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(
                url, data=data, method="POST", headers={"Content-Type": "application/json"}), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except urllib.error.URLError as err:
        raise RolloutError(f"serving did not answer its input example: {err.reason}") from None


def rehearsal_job(deployment: Any, model: str, version: str, name: str, timeout: float) -> dict:
    """A Job running the rehearsal in a copy of the serving Deployment's pod (a kubernetes client
    model, serialized): same image, service account, env, volumes and resources, no probes."""
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    spec["restartPolicy"] = "Never"
    for container in spec["containers"]:
        if container["name"] == "serving":
            container["args"] = rehearsal_args(model, version, container["args"])
            for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "ports"):
                container.pop(key, None)
    labels = {**template["metadata"].get("labels", {}), "app.kubernetes.io/component": "serving-rehearsal"}
    template["metadata"] = {"labels": labels}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"], "labels": labels},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600,
                     "activeDeadlineSeconds": int(timeout + REHEARSAL_SLACK_SECONDS), "template": template}}


@dataclass
class ClusterVerifier:
    """The rehearsal as a Job beside the serving Deployment, the probe through the Service proxy.
    `api_client`: a kubernetes ApiClient for the serving cluster. The time allowed is the running
    serving container's own `--env-timeout`, plus the download and load."""

    api_client: Any
    namespace: str
    deployment: str
    service: str
    poll: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        try:
            response = self.api_client.call_api(
                path, method, body=body, header_params={"Content-Type": "application/json", "Accept": "*/*"},
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
        except Exception as err:
            status = getattr(err, "status", None)
            if status is not None and method == "POST" and path.endswith("/invocations"):
                return status, (getattr(err, "body", b"") or b"")
            raise RolloutError(f"Kubernetes API {method} {path} failed: "
                               f"{f'HTTP {status} ' if status else ''}{getattr(err, 'reason', err)}") from None
        return response

    def _json(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        return json.loads(self._call(method, path, body).data)

    def rehearse(self, model: str, version: str) -> Rehearsed:
        deployment = self._json("GET", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment}")
        serving = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "serving")
        timeout = env_timeout(serving["args"])
        name = f"serving-rehearsal-{int(time.time())}"
        jobs = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        self._call("POST", jobs, rehearsal_job(deployment, model, version, name, timeout))
        deadline = time.monotonic() + timeout + REHEARSAL_SLACK_SECONDS
        while True:
            status = self._json("GET", f"{jobs}/{name}").get("status", {})
            if status.get("succeeded") or status.get("failed"):
                break
            if time.monotonic() > deadline:
                raise RehearsalFailed(f"the rehearsal Job {name} did not finish within "
                                      f"{timeout + REHEARSAL_SLACK_SECONDS:.0f}s")
            self.sleep(self.poll)
        pods = self._json("GET", f"/api/v1/namespaces/{self.namespace}/pods?labelSelector=job-name%3D{name}")
        log = ""
        for pod in pods.get("items", []):
            log = self._call("GET", f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/log"
                                    "?container=serving").data.decode(errors="replace")
        return rehearsal_result(log)

    def probe(self, request: dict) -> str:
        path = f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{SERVING_PORT}/proxy/invocations"
        answer = self._call("POST", path, request)
        if isinstance(answer, tuple):
            return check_answer(*answer)
        return check_answer(answer.status, answer.data)

