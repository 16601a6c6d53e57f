"""The cluster load test's Kubernetes specs, as plain functions: Locust master and workers on the
load-test node pool of the serving cluster, against the serving and tracking Services.

Per Service (serving, tracking) the stack declares two suspended CronJobs: the templates of a
run's master Job and workers Job, as `kubectl create job --from=cronjob/…` uses them. They are
rendered, validated and scanned like every other manifest, and start nothing by themselves;
loadtest/cluster.py creates one Job from each per run, changing only the run's size (users,
duration) and its deadline. The pool scales from zero, so between runs the load test costs nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from k8s.pods import container_security_context, pod_security_context, resources, tmp_mount, tmp_volume
from k8s.secret_files import SECRETS_DIR
from k8s.tracking import LOAD_TEST_USERNAME
from loadtest.commands import MASTER_PORT, master_flags, result_flags, worker_flags

# The pool's nodes: labelled for Locust's nodeSelector, tainted so nothing else lands there.
POOL_LABEL = "loadtest"
POOL_TAINT = {"key": "mlflow.org/pool", "value": "loadtest", "effect": "NO_SCHEDULE"}
NAMESPACE = "mlflow-loadtest"
INSTANCE = "mlflow-loadtest"
USERNAME = LOAD_TEST_USERNAME  # the load test's own MLflow user (loadtest/ensure_user.py)
PASSWORD_FILE = "loadtest-password"
ADMIN_PASSWORD_FILE = "admin-password"
SERVICES = ("serving", "tracking")
CONTAINER = "locust"
APP_DIR = "/app"  # loadtest/Dockerfile: the package at /app/loadtest
RESULTS_DIR = "/results"
CREDENTIALS_KSA = "locust-tracking"
SETUP_KSA = "loadtest-setup"
SETUP_DEADLINE_SECONDS = 600
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
    return {"key": POOL_TAINT["key"], "operator": "Equal", "value": POOL_TAINT["value"],
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
        "nodeSelector": {"pool": POOL_LABEL},
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


def tracking_credentials_env() -> list[dict]:
    """The tracking workers' login: the load test's own user, its password from a mounted file."""
    return [{"name": "LOADTEST_USERNAME", "value": USERNAME},
            {"name": "LOADTEST_PASSWORD_FILE", "value": f"{SECRETS_DIR}/{PASSWORD_FILE}"}]


def setup_container(*, image: Any, tracking_url: Any, admin_username: Any) -> dict:
    """loadtest/ensure_user.py as the tracking admin: both passwords from the Job's Secret Manager files."""
    return {
        "name": "ensure-loadtest-user",
        "image": image,
        "command": ["python"],
        "args": ["-m", "loadtest.ensure_user"],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
                {"name": "ADMIN_USERNAME", "value": admin_username},
                {"name": "ADMIN_PASSWORD_FILE", "value": f"{SECRETS_DIR}/{ADMIN_PASSWORD_FILE}"},
                *tracking_credentials_env()],
        "resources": resources("100m", "128Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount()],
    }
