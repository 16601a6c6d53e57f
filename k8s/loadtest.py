"""The cluster load test: Locust master and workers on the load-test node pool of the serving
cluster, against the serving and tracking Services (`make loadtest TARGET=cluster`).

Per Service (serving, tracking) the program declares two suspended CronJobs: the templates of a
run's master Job and workers Job, as `kubectl create job --from=cronjob/…` uses them. They are
rendered, validated and scanned like every other manifest, and start nothing by themselves;
loadtest/cluster.py creates one Job from each per run, changing only the run's size (users,
duration) and its deadline. The pool scales from zero, so between runs the load test costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.cluster import LOAD_TEST_POOL_LABEL, LOAD_TEST_TAINT
from infra.naming import child_options, k8s_labels, k8s_selector
from infra.secrets import SecretRef
from k8s.namespace import restricted_namespace_metadata
from k8s.pods import (
    container_security_context, default_deny_ingress, pod_security_context, resources, tmp_mount, tmp_volume,
)
from k8s.secret_files import SECRETS_DIR, principal, secret_files, secrets_mount, secrets_volume
from k8s.serving import SKIP_AWAIT_ANNOTATION
from k8s.tracking import TrackingEndpoint
from loadtest.commands import MASTER_PORT, load_env, master_flags, result_flags, worker_flags

NAMESPACE = "mlflow-loadtest"
SERVICES = ("serving", "tracking")
CONTAINER = "locust"
APP_DIR = "/app"  # loadtest/Dockerfile: the package at /app/loadtest
RESULTS_DIR = "/results"
CREDENTIALS_KSA = "locust-tracking"
RUN_LABEL = "mlflow.org/loadtest-run"
# The template's own size; every run sets its own (loadtest/cluster.py).
DEFAULT_USERS, DEFAULT_SECONDS = 16, 60
MAX_RUN_SECONDS = 3600
# New load-test nodes (the pool scales from zero) take about two minutes to join and pull the image.
WORKER_WAIT_SECONDS = 300
# A failed run is not retried: a second attempt would mix two runs' results.
BACKOFF_LIMIT = 0
FINISHED_TTL_SECONDS = 3600  # the CLI deletes a run's Jobs once it has read them; this removes abandoned ones
NEVER = "0 0 1 1 *"  # CronJob needs a schedule; suspended, it never fires


# --- pure builders --------------------------------------------------------------------------
def master_name(service: str) -> str:
    return f"locust-{service}-master"


def workers_name(service: str) -> str:
    return f"locust-{service}-workers"


def locustfile(service: str) -> str:
    return f"{APP_DIR}/loadtest/{service}_locust.py"


def master_args(service: str, host: Any, workers: int) -> list:
    """Locust as the pod runs it, wrapped so that its results reach the log (loadtest/pod_results.py)."""
    return ["-m", "loadtest.pod_results", "--dir", RESULTS_DIR, "--",
            "locust", "-f", locustfile(service), "--host", host,
            *result_flags(f"{RESULTS_DIR}/{service}"),
            *master_flags("0.0.0.0", MASTER_PORT, workers, WORKER_WAIT_SECONDS)]


def worker_args(service: str, host: Any) -> list:
    return ["-f", locustfile(service), "--host", host, *worker_flags(master_name(service), MASTER_PORT)]


def toleration() -> dict:
    """Admits the pod to the tainted load-test pool (GKE's NO_SCHEDULE is Kubernetes' NoSchedule)."""
    return {"key": LOAD_TEST_TAINT["key"], "operator": "Equal", "value": LOAD_TEST_TAINT["value"],
            "effect": "NoSchedule"}


def tcp_probe(port: int, period: int, failures: int) -> dict:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 5}


def locust_container(*, image: Any, command: str, args: list, cpu: str, env: list[dict], mounts: list[dict],
                     port: Optional[int] = None) -> dict:
    container = {
        "name": CONTAINER,
        "image": image,
        "command": [command],
        "args": args,
        "env": env,
        "resources": resources(cpu, "512Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), *mounts],
    }
    if port is not None:
        # Workers connect to the master through its Service: ready once it listens.
        container["ports"] = [{"name": "master", "containerPort": port}]
        container["readinessProbe"] = tcp_probe(port, period=5, failures=3)
        container["livenessProbe"] = tcp_probe(port, period=20, failures=3)
    return container


def pod_spec(container: dict, volumes: list[dict], service_account: Any = None) -> dict:
    return {
        **({"serviceAccountName": service_account} if service_account is not None else {}),
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "nodeSelector": {"pool": LOAD_TEST_POOL_LABEL},
        "tolerations": [toleration()],
        # Locust stops its users and writes its results on SIGTERM (--stop-timeout 10)
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [tmp_volume("256Mi"), *volumes],
    }


def job_spec(labels: dict, pod: dict, parallelism: int = 1) -> dict:
    return {
        "parallelism": parallelism,
        "completions": parallelism,
        "backoffLimit": BACKOFF_LIMIT,
        "activeDeadlineSeconds": MAX_RUN_SECONDS + WORKER_WAIT_SECONDS,
        "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }


def template_spec(labels: dict, job: dict) -> dict:
    """A suspended CronJob holding a Job template."""
    return {"schedule": NEVER, "suspend": True, "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 0,
            "jobTemplate": {"metadata": {"labels": labels}, "spec": job}}


def master_ingress(workers_selector: dict) -> list[dict]:
    """Only the run's workers reach the master."""
    return [{"from": [{"podSelector": {"matchLabels": workers_selector}}],
             "ports": [{"protocol": "TCP", "port": MASTER_PORT}]}]


@dataclass(frozen=True)
class CredentialsMount:
    env: list[dict]
    volume: dict
    mount: dict
    service_account: pulumi.Input[str]
    """The KSA the add-on mounts the secret for: the only reader besides the platform's own."""


def tracking_credentials(name: str, namespace: pulumi.Input[str], username: str, password: SecretRef,
                         labels: dict, opts: pulumi.ResourceOptions, *, project_number: pulumi.Input[str],
                         workload_pool: pulumi.Input[str], gcp_opts: pulumi.ResourceOptions) -> CredentialsMount:
    """The one place the tracking load test's credentials are plumbed: the password from Secret
    Manager (GKE's add-on mounts it for the workers' own KSA, granted that secret only); the
    locustfile reads the user from LOADTEST_USERNAME and the password from LOADTEST_PASSWORD_FILE."""
    ksa = k8s.core.v1.ServiceAccount(
        f"{name}-tracking-ksa", metadata={"name": CREDENTIALS_KSA, "namespace": namespace, "labels": labels},
        automount_service_account_token=False, opts=opts)
    provider_class, _ = secret_files(
        f"{name}-tracking", (password,), CREDENTIALS_KSA, namespace, labels, opts,
        readers=(principal(project_number, workload_pool, namespace, ksa.metadata["name"]),), gcp_opts=gcp_opts)
    return CredentialsMount(
        env=[{"name": "LOADTEST_USERNAME", "value": username},
             {"name": "LOADTEST_PASSWORD_FILE", "value": f"{SECRETS_DIR}/{password.name}"}],
        volume=secrets_volume(provider_class), mount=secrets_mount(), service_account=ksa.metadata["name"],
    )


# --- component ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadTestArgs:
    provider: k8s.Provider
    """Provider of the serving cluster, where the load-test pool is."""
    image: pulumi.Input[str]
    """Locust image by digest (loadtest/Dockerfile)."""
    serving_url: pulumi.Input[str]
    """Serving as its clients in the cluster call it."""
    tracking: TrackingEndpoint
    """Tracking, called as the serving pods call it, logged in as its admin."""
    project_number: pulumi.Input[str]
    """Number of the project: names the workers' KSA as an IAM principal."""
    workload_pool: pulumi.Input[str]
    """Workload Identity pool of the serving cluster."""
    workers: int = 2
    """Worker pods per run, one vCPU each."""

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 32:
            raise ValueError(f"LoadTestArgs.workers={self.workers}: allowed 1-32")


class LoadTest(pulumi.ComponentResource):
    """Namespace, NetworkPolicies, credentials and the run templates of the cluster load test."""

    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: LoadTestArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:loadtest:LoadTest", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        labels = k8s_labels(name, "loadtest")
        namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata=restricted_namespace_metadata(NAMESPACE, name),
                                          opts=k8s_opts)
        ns_name = namespace.metadata["name"]
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", **default_deny_ingress(ns_name, labels), opts=k8s_opts)
        credentials = tracking_credentials(name, ns_name, args.tracking.admin_username, args.tracking.admin_password, labels,
                                           k8s_opts, project_number=args.project_number,
                                           workload_pool=args.workload_pool, gcp_opts=child_options(self, opts))
        hosts = {"serving": args.serving_url, "tracking": args.tracking.client_url}
        for service in SERVICES:
            # Only tracking's users log in.
            self._service_templates(name, ns_name, service, hosts[service], args,
                                    credentials if service == "tracking" else None, k8s_opts)
        self.namespace = ns_name
        self.register_outputs({"namespace": self.namespace})

    def _service_templates(self, name: str, ns_name: pulumi.Output[str], service: str, host: pulumi.Input[str],
                           args: LoadTestArgs, credentials: Optional[CredentialsMount],
                           opts: pulumi.ResourceOptions) -> None:
        master_labels = k8s_labels(name, master_name(service))
        workers_labels = k8s_labels(name, workers_name(service))
        defaults = [{"name": key, "value": value} for key, value in load_env(DEFAULT_USERS, DEFAULT_SECONDS).items()]
        master = locust_container(
            image=args.image, command="python", args=master_args(service, host, args.workers), cpu="500m",
            env=defaults, mounts=[{"name": "results", "mountPath": RESULTS_DIR}], port=MASTER_PORT)
        worker = locust_container(
            image=args.image, command="locust", args=worker_args(service, host), cpu="1",
            env=credentials.env if credentials else [], mounts=[credentials.mount] if credentials else [])
        volumes = [credentials.volume] if credentials else []
        results = {"name": "results", "emptyDir": {"sizeLimit": "256Mi"}}
        k8s.batch.v1.CronJob(
            f"{name}-{service}-master",
            metadata={"name": master_name(service), "namespace": ns_name, "labels": master_labels},
            spec=template_spec(master_labels, job_spec(master_labels, pod_spec(master, [results]))),
            opts=opts,
        )
        k8s.batch.v1.CronJob(
            f"{name}-{service}-workers",
            metadata={"name": workers_name(service), "namespace": ns_name, "labels": workers_labels},
            spec=template_spec(workers_labels, job_spec(workers_labels, pod_spec(
                worker, volumes, credentials.service_account if credentials else None), args.workers)),
            opts=opts,
        )
        k8s.core.v1.Service(
            f"{name}-{service}-master",
            # No master runs between runs: Pulumi must not wait for a ready pod behind it.
            metadata={"name": master_name(service), "namespace": ns_name, "labels": master_labels,
                      "annotations": {SKIP_AWAIT_ANNOTATION: "true"}},
            spec={"type": "ClusterIP", "selector": k8s_selector(name, master_name(service)),
                  "ports": [{"name": "master", "port": MASTER_PORT, "targetPort": "master", "protocol": "TCP"}]},
            opts=opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{service}-master",
            metadata={"name": master_name(service), "namespace": ns_name, "labels": master_labels},
            spec={"podSelector": {"matchLabels": k8s_selector(name, master_name(service))},
                  "policyTypes": ["Ingress"], "ingress": master_ingress(k8s_selector(name, workers_name(service)))},
            opts=opts,
        )
