"""`make loadtest TARGET=cluster STACK=…`: one bounded run per Service on the load-test stack's pool.

The load-test stack's outputs (loadtest/Pulumi.yaml, read through the Automation API) give the serving
cluster's kubeconfig. Per Service, a run is two Jobs made from the templates that stack declares
(loadtest/stack/templates.py): the master and its workers, named after the run's time, users and duration.
The master's log carries the results back (loadtest/pod_results.py); they land in
loadtest-results/cluster/<stack>/ as the local target's do, and the Jobs are deleted.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from loadtest.commands import load_env
from loadtest.pod_results import extract
from loadtest.stack.templates import (
    CONTAINER, MAX_RUN_SECONDS, NAMESPACE, RUN_LABEL, WORKER_WAIT_SECONDS, master_name, workers_name,
)
from tools.ops.stack import StackOutputError, StackOutputs

PROJECT_DIR = Path(__file__).resolve().parent  # loadtest/Pulumi.yaml

# Beyond the run itself: new nodes (the pool scales from zero), image pulls, workers connecting.
START_MARGIN_SECONDS = WORKER_WAIT_SECONDS + 120


class ClusterRunError(RuntimeError):
    """The cluster run could not start, finish or report."""


@dataclass(frozen=True)
class ClusterRun:
    """One bounded run against one Service."""

    service: str
    """serving or tracking."""
    users: int
    seconds: int
    started: datetime

    def __post_init__(self) -> None:
        if not 1 <= self.seconds <= MAX_RUN_SECONDS:
            raise ValueError(f"ClusterRun.seconds={self.seconds}: allowed 1-{MAX_RUN_SECONDS}")

    @property
    def run_id(self) -> str:
        return f"{self.started:%Y%m%d-%H%M%S}-u{self.users}-t{self.seconds}"

    def job_name(self, template: str) -> str:
        return f"{template}-{self.run_id}"  # at most 24 + 1 + 31 chars: below Kubernetes' 63

    @property
    def deadline_seconds(self) -> int:
        return self.seconds + START_MARGIN_SECONDS


def job_from_template(cron_job: dict, run: ClusterRun) -> dict:
    """The Job `kubectl create job --from=cronjob/…` would make, sized for the run: only the
    locust container's LOCUST_* sizes, the deadline and the run's label change."""
    template = cron_job["spec"]["jobTemplate"]
    labels = {**template["metadata"]["labels"], RUN_LABEL: run.run_id}
    spec = copy.deepcopy(template["spec"])
    spec["activeDeadlineSeconds"] = run.deadline_seconds
    spec["template"]["metadata"]["labels"] = {**spec["template"]["metadata"]["labels"], RUN_LABEL: run.run_id}
    sizes = load_env(run.users, run.seconds)
    for container in spec["template"]["spec"]["containers"]:
        if container["name"] == CONTAINER:
            kept = [e for e in container.get("env", []) if e["name"] not in sizes]
            container["env"] = kept + [{"name": key, "value": value} for key, value in sizes.items()]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": run.job_name(cron_job["metadata"]["name"]), "namespace": NAMESPACE, "labels": labels},
            "spec": spec}


def plain(obj: Any) -> Any:
    """A client model (or a dict) as the API's JSON: camelCase dicts, what the manifests hold."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


@dataclass
class ClusterRunner:
    """Runs Locust through the Kubernetes API: `batch` a BatchV1Api, `core` a CoreV1Api."""

    batch: Any
    core: Any
    poll: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def _api(self, api: Any, call: str, *args, **kwargs) -> Any:
        """One API call; a client or HTTP error (RBAC, 404, network) becomes a ClusterRunError."""
        try:
            return plain(getattr(api, call)(*args, **kwargs))
        except Exception as err:
            status = getattr(err, "status", None)
            reason = getattr(err, "reason", None) or (str(err).splitlines() or [type(err).__name__])[0]
            hint = (": is the load-test stack up? (`cd loadtest && pulumi up`, docs/loadtest.md)"
                    if status == 404 and call == "read_namespaced_cron_job" else "")
            raise ClusterRunError(f"Kubernetes API {call}{args[:1]} failed: "
                                  f"{f'HTTP {status} ' if status else ''}{reason}{hint}") from None

    def check_idle(self) -> None:
        """One run at a time: the workers find their master through one Service per locustfile."""
        jobs = self._api(self.batch, "list_namespaced_job", NAMESPACE, label_selector=RUN_LABEL)
        active = [j["metadata"]["name"] for j in jobs.get("items", []) if (j.get("status") or {}).get("active")]
        if active:
            raise ClusterRunError(f"another load test is running in {NAMESPACE}: {', '.join(active)}")

    def start(self, run: ClusterRun) -> None:
        for template in (master_name(run.service), workers_name(run.service)):
            cron_job = self._api(self.batch, "read_namespaced_cron_job", template, NAMESPACE)
            self._api(self.batch, "create_namespaced_job", NAMESPACE, job_from_template(cron_job, run))

    def wait(self, run: ClusterRun) -> None:
        """Until the master's Job has finished, at most its deadline plus a minute."""
        name = run.job_name(master_name(run.service))
        deadline = self.clock() + run.deadline_seconds + 60
        while True:
            status = self._api(self.batch, "read_namespaced_job_status", name, NAMESPACE).get("status") or {}
            if status.get("succeeded"):
                return
            if status.get("failed"):
                raise ClusterRunError(f"job {name} failed: `kubectl -n {NAMESPACE} logs job/{name}`")
            if self.clock() >= deadline:
                raise ClusterRunError(f"job {name} not finished within {run.deadline_seconds + 60}s")
            self.sleep(self.poll)

    def fetch(self, run: ClusterRun, out_dir: Path) -> list[Path]:
        """The master's results, from its pod's log, into out_dir."""
        name = run.job_name(master_name(run.service))
        pods = self._api(self.core, "list_namespaced_pod", NAMESPACE, label_selector=f"job-name={name}")["items"]
        if not pods:
            raise ClusterRunError(f"job {name} has no pod left to read results from")
        log = self._api(self.core, "read_namespaced_pod_log", pods[0]["metadata"]["name"], NAMESPACE,
                        container=CONTAINER)
        try:
            files = extract(log)
        except ValueError as err:
            raise ClusterRunError(f"job {name}: {err}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for file_name, content in sorted(files.items()):
            (out_dir / file_name).write_bytes(content)
            written.append(out_dir / file_name)
        return written

    def delete(self, run: ClusterRun) -> None:
        for template in (master_name(run.service), workers_name(run.service)):
            self._api(self.batch, "delete_namespaced_job", run.job_name(template), NAMESPACE,
                      propagation_policy="Background")

    def run(self, run: ClusterRun, out_dir: Path) -> list[Path]:
        self.start(run)
        try:
            self.wait(run)
            return self.fetch(run, out_dir)
        finally:
            self.delete(run)


# --- the stack ------------------------------------------------------------------------------------
def load_test_outputs(stack: str) -> StackOutputs:
    """The load-test stack's outputs (the Pulumi CLI, logged in to its backend)."""
    return StackOutputs.read(stack, PROJECT_DIR)


def load_test_kubeconfig(read: Callable[[str], StackOutputs], stack: str) -> dict:
    """The serving cluster's kubeconfig, once the load-test stack is up."""
    try:
        return read(stack).json("kubeconfig")
    except StackOutputError as err:
        raise ClusterRunError(f"{err}; is the load-test stack up? `cd loadtest && pulumi up -s {stack}` "
                              "(docs/loadtest.md)") from None


def kubernetes_apis(kubeconfig: dict) -> tuple[Any, Any]:
    """(BatchV1Api, CoreV1Api) of a kubeconfig (GKE: through gke-gcloud-auth-plugin)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config_dict(kubeconfig)
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


def run_cluster(stack: str, runs: list[tuple[str, int]], seconds: int, out_dir: Path,
                read: Callable[[str], StackOutputs] = load_test_outputs,
                apis: Callable[[dict], tuple[Any, Any]] = kubernetes_apis,
                runner_options: Optional[dict] = None) -> None:
    """`runs`: (service, users) in order, one at a time, on load-test stack `stack`."""
    batch, core = apis(load_test_kubeconfig(read, stack))
    runner = ClusterRunner(batch, core, **(runner_options or {}))
    runner.check_idle()
    for service, users in runs:
        run = ClusterRun(service, users, seconds, datetime.now(timezone.utc))
        print(f"[loadtest] cluster {stack}: {service}, {users} users for {seconds}s "
              f"(jobs {run.job_name(master_name(service))}, …-workers-…)", flush=True)
        runner.run(run, out_dir)
