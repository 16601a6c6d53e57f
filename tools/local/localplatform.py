"""The platform of plan/<stack>/k8s/ on this machine: Postgres for Cloud SQL, a GCS emulator for
the bucket, and the migration Job, tracking server, serving-user Job and model server run with
the rendered commands (changed only as `tools.local.localize` lists).

    with LocalPlatform(workdir) as platform:
        platform.tracking_url, platform.serving_url, platform.admin_username, platform.admin_password
        platform.run_client("train", "--model-name", ..., user="admin")
        platform.restart_tracking(); platform.roll_tracking(); platform.restart_postgres(); ...

Clients reach tracking and serving through HAProxy (tools/local/balancer.py), as they reach the pods
through a Service in the cluster: `tracking_url` and `serving_url` are the balancer's. A rollout
(`roll_tracking`, `restart_serving`) replaces the pod as the Deployment's strategy declares and
stops the old one as the kubelet would: out of the balancer after the endpoint propagation delay,
its containers' preStop hooks, SIGTERM, SIGKILL at the end of the grace period (tools/local/lifecycle.py).
Where the plan declares a challenger track, its pod runs beside serving's behind a backend of its
own, and serving's frontend splits to it (or mirrors to it) as the rendered HTTPRoute declares;
`restart_challenger` rolls it, and tools/ops changes the split through the balancer's runtime API.

Every process runs in its own process group with its output in workdir/logs/ (secrets never
reach the console); leaving the `with` block stops them all. Clients and the GCS emulator run in the
runtime virtualenv (`tools.venvs.runtime()`: MLFLOW_LOCAL_RUNTIME_VENV or .venv-runtime).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import quote

import yaml

from infra.database import AUTH_DATABASE, DATABASE_ADMIN_ROLE, TRACKING_DATABASE
from infra.secrets import (
    ADMIN_PASSWORD, DRIFT_PASSWORD, FLASK_SECRET_KEY, PAYLOAD_HASH_KEY, SECRET_LENGTHS, SERVING_PASSWORD,
    WEBHOOK_ENCRYPTION_KEY, WEBHOOK_SECRET, formatted,
)
from k8s.secret_files import SPC_KIND
from k8s.serving import CHALLENGER, CHAMPION, SERVING_USERNAME
from k8s.tracking import ADMIN_USERNAME, postgres_uri
from tools.local.balancer import ENDPOINT_PROPAGATION_SECONDS, Backend, LocalBalancer
from tools.local.iap import StandInIap, backend_audience
from tools.local.lifecycle import SURGE_FIRST, rollout_order, termination
from tools.local.container import prepare as prepare_mount_points
from tools.local.images import ImageRoot, ImageStore, built_here, source_for
from tools.local.localize import LocalCommand, LocalSite, localize_container, relaunched
from tools.local.manifests import (
    Manifests, artifacts_bucket, container, flag_value, pod_spec, run_to_completion_containers, selects,
    route_split, served_model, service_addresses, serving_tracks, sql_proxy_address, workload_containers,
)
from tools.local.postgres import LocalPostgres
from tools.local.notifications import AlertWebhook, RecordingSink, notification
from tools.local.alerts import LocalAlerting, LocalPod
from tools.local.payloads import PAYLOADS_FILE, PayloadRecorder
from tools.local.secretmanager import LocalSecretManager, parse_version_name
from tools.local.processes import (
    LocalPlatformError, ManagedProcess, Redactor, free_port, http, http_ok, log_tail, run_to_completion,
)
from tools.ops.interfaces import generate_password
from tools.venvs import Venv, VenvError, runtime

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
AUTH_SETTINGS_ANNOTATION = "mlflow.org/auth-settings"
EMULATOR_HOST_ENV = "STORAGE_EMULATOR_HOST"
MAX_STARTUP_SECONDS = 240.0
JOB_TIMEOUT_SECONDS = 300.0


def parse_auth_settings(tracking_deployment: dict) -> tuple[str, int]:
    """(default permission, cache TTL) from the pod-template annotation `READ,ttl=300`."""
    annotations = tracking_deployment["spec"]["template"]["metadata"].get("annotations", {})
    value = annotations.get(AUTH_SETTINGS_ANNOTATION, "")
    match = re.fullmatch(r"(?P<permission>[A-Z_]+),ttl=(?P<ttl>\d+)", value)
    if not match:
        raise LocalPlatformError(f"tracking Deployment annotation {AUTH_SETTINGS_ANNOTATION}={value!r}: "
                                 "expected PERMISSION,ttl=SECONDS")
    return match["permission"], int(match["ttl"])


def probe_url(port: int, probe: dict) -> str:
    """The local URL of an httpGet probe of a container listening on `port`."""
    return f"http://127.0.0.1:{port}{probe.get('httpGet', {}).get('path', '/')}"


@dataclass(frozen=True)
class Credentials:
    admin_password: str
    flask_secret_key: str
    serving_password: str
    postgres_superuser_password: str
    payload_hash_key: str
    webhook_secret: str
    webhook_encryption_key: str
    drift_password: str

    @classmethod
    def generate(cls) -> "Credentials":
        return cls(generate_password(), generate_password(64), generate_password(), generate_password(),
                   generate_password(64),
                   *(formatted(name, generate_password(SECRET_LENGTHS[name]))
                     for name in (WEBHOOK_SECRET, WEBHOOK_ENCRYPTION_KEY)), generate_password())

    def values(self) -> list[str]:
        return [self.admin_password, self.flask_secret_key, self.serving_password,
                self.postgres_superuser_password, self.payload_hash_key, self.webhook_secret,
                self.webhook_encryption_key, self.drift_password]


def provider_class_secrets(manifests: Manifests) -> dict[str, str]:
    """File name (the logical secret: admin-password, ...) -> Secret Manager secret id, from every
    rendered SecretProviderClass; one file name always names the same secret."""
    found: dict[str, str] = {}
    for spc in manifests.all(SPC_KIND):
        for entry in yaml.safe_load(spc["spec"]["parameters"]["secrets"]) or []:
            secret, _ = parse_version_name(entry["resourceName"])
            if found.setdefault(entry["path"], secret) != secret:
                raise LocalPlatformError(f"file {entry['path']!r} names two secrets: {found[entry['path']]}, {secret}")
    return found


def refuse_secrets(manifests: Manifests) -> None:
    """The program keeps every credential in Secret Manager: a rendered Kubernetes Secret is an
    error here, as the policy pack's rule is on `pulumi up`."""
    for secret in manifests.all("Secret"):
        meta = secret["metadata"]
        raise LocalPlatformError(f"Secret {meta['namespace']}/{meta['name']} is rendered: credentials come from "
                                 "Secret Manager files (SecretProviderClass), never from a Kubernetes Secret")


def write_private_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


@dataclass(frozen=True)
class ClientResult:
    returncode: int
    stdout: str
    log_path: Path

    def json(self):
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise LocalPlatformError(f"client printed nothing; log {self.log_path}")
        return json.loads(lines[-1])


@dataclass(frozen=True)
class JobResult:
    container: str
    returncode: int
    log_path: Path


class LocalPlatform:
    """Postgres, GCS emulator, migrations, tracking, serving user, demo model, serving."""

    def __init__(self, workdir: Path, *, stack: str = "dev", plan_dir: Optional[Path] = None,
                 runtime_venv: Optional[Path] = None, demo_model: bool = True,
                 progress: Optional[Callable[[str], None]] = None,
                 images: Optional[Callable[[str], ImageRoot]] = None, alert_time_scale: float = 1.0):
        self.workdir = Path(workdir).resolve()
        self.demo_model = demo_model
        self.progress = progress or (lambda message: None)
        # The pods run in the images the manifests name, built here on first use (tools/local/images.py).
        self._image_roots: dict[str, ImageRoot] = {}
        self._image_root = images or (lambda image: ImageStore(progress=self.progress).rootfs(source_for(image)))
        self.runtime: Venv = runtime(runtime_venv)
        try:
            self.runtime.require("python", "mlflow", "gcp-storage-emulator")
        except VenvError as err:
            raise LocalPlatformError(str(err)) from None

        self.manifests = Manifests.load(stack, plan_dir)
        m = self.manifests
        self.tracking_deployment = m.one("Deployment", component="tracking")
        # The challenger track (serving.challenger): its own Deployment, behind its own backend, which
        # serving's backend splits to or mirrors to (tools/local/balancer.py).
        self.serving_deployment, self.challenger_deployment = serving_tracks(m)
        self.migration_job = m.one("Job", component="migration")
        self.grants_job = m.one("Job", component="database-grants")
        self.database_users = m.database_users()
        self.tracking_db_user = flag_value(run_to_completion_containers(self.grants_job)[-1]["args"], "--grantee")
        self.serving_user_job = m.one("Job", component="serving-setup")
        self.access_job = m.optional("Job", component="access")
        # Notifications and drift (k8s/notify.py, k8s/drift.py): the receiver of MLflow's webhooks, the Job that
        # registers the webhook, and the drift job's schedule (run here on demand: `run_drift_job`).
        self.notify_deployment = m.optional("Deployment", component="notify")
        self.notify_register_job = m.optional("Job", component="notify-register")
        self.drift_schedule = m.optional("CronJob", component="drift")
        self.tracking_container = container(self.tracking_deployment, "mlflow")
        self.exporter_container = container(self.tracking_deployment, "metrics-exporter")
        self.serving_container = container(self.serving_deployment, "serving")
        self.model_name, self.model_alias = served_model(self.serving_container)
        self.challenger_container = (container(self.challenger_deployment, self.serving_container["name"])
                                     if self.challenger_deployment else None)
        self.bucket, self.artifacts_prefix = artifacts_bucket(self.tracking_container)
        self.default_permission, self.auth_cache_ttl = parse_auth_settings(self.tracking_deployment)

        self.credentials = Credentials.generate()
        self.redact = Redactor(self.credentials.values())
        # Secret Manager: the application secrets the SecretProviderClasses mount, with their first
        # versions (what `pulumi up` creates before any pod exists).
        self.secret_manager = LocalSecretManager(self.workdir / "secretmanager")
        self.secret_ids = provider_class_secrets(m)
        shutil.rmtree(self.secret_manager.root, ignore_errors=True)
        initial = {ADMIN_PASSWORD: self.credentials.admin_password,
                   FLASK_SECRET_KEY: self.credentials.flask_secret_key,
                   SERVING_PASSWORD: self.credentials.serving_password,
                   PAYLOAD_HASH_KEY: self.credentials.payload_hash_key,
                   WEBHOOK_SECRET: self.credentials.webhook_secret,
                   WEBHOOK_ENCRYPTION_KEY: self.credentials.webhook_encryption_key,
                   DRIFT_PASSWORD: self.credentials.drift_password}
        for name, secret in self.secret_ids.items():
            self.secret_manager.add_version(secret, initial[name])
        refuse_secrets(m)

        self.postgres_port, self.emulator_port = free_port(), free_port()
        self.tracking_port, self.serving_port = free_port(), free_port()
        self.tracking_metrics_port, self.challenger_port = free_port(), free_port()
        tracks = [self._backend("serving", self.serving_container, split_to="challenger" if self.challenger_container
                                else None)]
        if self.challenger_container:
            tracks.append(self._backend("challenger", self.challenger_container))
        self.balancer = LocalBalancer(
            [self._backend("tracking", self.tracking_container), *tracks,
             self._backend("tracking_metrics", self.exporter_container)],
            self.workdir / "balancer", self.workdir / "logs" / "haproxy.log", lambda text: text)
        self.iap = self._stand_in_iap()
        self.pod_generation = {"tracking": 0, "serving": 0, "challenger": 0, "notify": 0}
        self.retiring: list[threading.Thread] = []  # old pods going through preStop, SIGTERM, grace
        self.retired: list[ManagedProcess] = []
        self.logs_dir = self.workdir / "logs"
        self.secrets_dir = self.workdir / "secrets"
        # The sink's stand-in: the serving pods' payload entries, as BigQuery would receive them.
        self.payloads = PayloadRecorder((self.logs_dir / "serving.log", self.logs_dir / "challenger.log"),
                                        self.workdir / PAYLOADS_FILE)
        # The channels' stand-in: the receiver's notification lines as they come, the drift job's after each run.
        self.sink = RecordingSink(self.workdir)
        self.notify_port = free_port()
        self.notify: Optional[ManagedProcess] = None
        self.received_events = PayloadRecorder((self.logs_dir / "notify.log",), self.sink.path,
                                               keep=lambda line: notification(line.decode(errors="replace")) is not None)
        # Cloud Monitoring's PromQL alert policies: Prometheus scrapes the pods as the PodMonitorings declare,
        # Alertmanager posts what fires to the sink (`alert_time_scale` < 1 shortens intervals and `for`, for tests).
        self.alert_webhook = AlertWebhook(self.sink)
        self.alerting = LocalAlerting(self.workdir / "alerting", self.logs_dir, m, self.alert_webhook.url,
                                      self.redact, alert_time_scale)
        self.postgres = LocalPostgres(self.workdir / "postgres", self.postgres_port,
                                      self.credentials.postgres_superuser_password, self.logs_dir / "postgres.log",
                                      self.redact)
        self.emulator: Optional[ManagedProcess] = None
        self.tracking: Optional[ManagedProcess] = None
        self.tracking_metrics: Optional[ManagedProcess] = None
        self.serving: Optional[ManagedProcess] = None
        self.challenger: Optional[ManagedProcess] = None
        self.demo_run: Optional[dict] = None
        self._client_runs = 0
        # (workload, container) of every rendered container started in its image so far.
        self.started_containers: set[tuple[str, str]] = set()

    # --- endpoints and credentials -------------------------------------------------------
    @staticmethod
    def _backend(name: str, spec: dict, split_to: Optional[str] = None) -> Backend:
        """A balancer backend checking the container's readiness probe, as endpoints follow readiness."""
        probe = spec.get("readinessProbe") or {}
        return Backend(name, free_port(), probe.get("httpGet", {}).get("path", "/"), int(probe.get("periodSeconds", 10)),
                       int(probe.get("failureThreshold", 3)), split_to)

    def _stand_in_iap(self) -> Optional[StandInIap]:
        """A stand-in for IAP in front of tracking's balancer, where the stack puts tracking behind IAP."""
        env = {e["name"]: e.get("value") for e in self.tracking_container.get("env", [])}
        if "MLFLOW_IAP_KEYS_URL" not in env:
            return None
        return StandInIap(self.balancer.backends["tracking"].listen_port, backend_audience(
            env["MLFLOW_IAP_PROJECT_NUMBER"], env.get("MLFLOW_IAP_BACKEND_SERVICE_ID")))

    @property
    def tracking_url(self) -> str:
        return self.balancer.url("tracking")

    @property
    def people_url(self) -> Optional[str]:
        """Where people sign in, through the stand-in for IAP; None where the stack has no IAP."""
        return self.iap.url if self.iap else None

    @property
    def serving_url(self) -> str:
        return self.balancer.url("serving")

    @property
    def tracking_pod_url(self) -> str:
        """The current tracking pod itself, bypassing the balancer (as a port-forward to a pod)."""
        return f"http://127.0.0.1:{self.tracking_port}"

    @property
    def serving_pod_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def admin_username(self) -> str:
        return ADMIN_USERNAME

    def secret_value(self, name: str) -> str:
        """The current (latest) value of an application secret in the local Secret Manager."""
        return self.secret_manager.access(self.secret_ids[name])

    @property
    def admin_password(self) -> str:
        return self.secret_value(ADMIN_PASSWORD)

    @property
    def admin_password_file(self) -> Path:
        return self.secrets_dir / "admin-password"

    @property
    def serving_password_file(self) -> Path:
        return self.secrets_dir / "serving-password"

    def write_password_files(self) -> None:
        """The 0600 files `.local/endpoints.json` points clients to, with the current passwords."""
        write_private_file(self.admin_password_file, self.admin_password + "\n", 0o600)
        write_private_file(self.serving_password_file, self.serving_password + "\n", 0o600)

    @property
    def serving_username(self) -> str:
        return SERVING_USERNAME

    @property
    def serving_password(self) -> str:
        return self.secret_value(SERVING_PASSWORD)

    def database_uri(self, database: str) -> str:
        """SQLAlchemy URI of a database on the local Postgres, as the tracking user (no password)."""
        return postgres_uri(self.tracking_db_user, database, port=self.postgres_port)

    def endpoints(self) -> dict:
        return {
            "tracking_url": self.tracking_url, "serving_url": self.serving_url, "people_url": self.people_url,
            "admin_username": self.admin_username, "admin_password_file": str(self.admin_password_file),
            "serving_username": self.serving_username,
            "serving_password_file": str(self.serving_password_file),
            "secret_manager_dir": str(self.secret_manager.root),
            "tracking_metrics_url": f"{self.balancer.url('tracking_metrics')}/metrics",
            "serving_metrics_url": f"{self.serving_url}/metrics",
            "prometheus_url": self.alerting.prometheus_url,
            **(self.challenger_endpoints() if self.challenger_container else {}),

            "model_uri": f"models:/{self.model_name}@{self.model_alias}",
            "gcs_emulator_url": self.emulator_url, "bucket": self.bucket,
            "postgres": f"127.0.0.1:{self.postgres_port}", "logs": str(self.logs_dir),
        }

    def challenger_endpoints(self) -> dict:
        """How tools/ops reaches the tracks of a running `make local`: the balancer's runtime API
        (the split, each track's pods), the challenger's own Service and alias."""
        return {"challenger_url": self.balancer.url("challenger"), "challenger_alias": self.challenger_alias,
                "balancer_socket": str(self.balancer.socket_path), "split_map": str(self.balancer.split_map),
                "track_backends": {CHAMPION: "serving", CHALLENGER: "challenger"},
                "declared_split": list(self.declared_split)}

    @property
    def challenger_alias(self) -> Optional[str]:
        return served_model(self.challenger_container)[1] if self.challenger_container else None

    # --- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "LocalPlatform":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.start_storage()
        self.start_services()

    def start_storage(self) -> None:
        """Postgres with the user and databases, and the bucket: what exists before MLflow runs
        (an upgrade rehearsal lets an older MLflow write there before `start_services`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.postgres.run_as is not None:
            self.workdir.chmod(0o711)  # the Postgres user must reach workdir/postgres; nothing else is readable
        self.logs_dir.mkdir(exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        self.write_password_files()
        self.payloads.start()
        self.received_events.start()

        # Built (or found built) before any clock starts: a pod's start-up is not an image build.
        for image in sorted({spec["image"] for _, spec in workload_containers(self.manifests)}):
            if built_here(image):
                self.image_root(image)
        self.progress(f"postgres: initdb ({self.postgres.bin_dir})")
        self.postgres.init(trusted_users=tuple(user["name"] for user in self.database_users))
        self.postgres.start()
        self.bootstrap_databases()
        self.progress(f"postgres: ready on 127.0.0.1:{self.postgres_port}")
        self.start_emulator()
        self.progress(f"gcs emulator: bucket {self.bucket} on {self.emulator_url}")
        self.balancer.start()
        self.progress(f"load balancer: haproxy, tracking {self.tracking_url}, serving {self.serving_url}")
        if self.iap:
            self.iap.start()
            self.progress(f"stand-in for IAP: people sign in at {self.iap.url}")
        self.alert_webhook.start()
        self.alerting.start(self.local_pods())
        self.progress(f"alert policies: Prometheus {self.alerting.prometheus_url}, alerts to {self.sink.path}")

    def start_services(self) -> None:
        """Migration Job, tracking, serving user (then demo model and serving), on the data there."""
        self.run_migrations()
        self.progress("migration job: done")
        self.start_tracking()
        self.progress(f"tracking: {self.tracking_url}")
        if self.notify_deployment:
            self.start_notifications()
            self.progress("notifications: webhook receiver and its registration")
        self.ensure_serving_user()
        if self.access_job:
            self.apply_team_access()
            self.progress("access job: teams applied")
        if self.demo_model:
            self.demo_run = self.train_model(variant="base")
            self.progress(f"demo model: {self.model_name} version {self.demo_run['version']} @{self.model_alias}")
            self.ensure_serving_user()  # as `make promote` would: READ on the model now registered
            self.start_serving()
            self.progress(f"serving: {self.serving_url}")
        if self.challenger_container:
            self.start_challenger(ready=False)
            self.balancer.split(*self.declared_split)
            self.progress(f"challenger: {self.balancer.url('challenger')} (@{self.challenger_alias}), "
                          f"weight {self.declared_split[0]}%{', mirrored' if self.declared_split[1] else ''}")

    def stop(self) -> None:
        """Stop everything started, newest first; every process group is gone afterwards."""
        errors = []
        for process in (self.challenger, self.serving, self.notify, self.tracking_metrics, self.tracking,
                        *self.retired, self.balancer.process, *self.alerting.processes(), self.emulator):
            if process is not None:
                try:
                    process.stop()
                except Exception as err:  # keep stopping the others
                    errors.append(err)
        if self.iap:
            self.iap.stop()
        self.alert_webhook.stop()
        self.payloads.stop()
        self.received_events.stop()
        try:
            self.postgres.stop()
        except Exception as err:
            errors.append(err)
        if errors:
            raise LocalPlatformError("; ".join(str(err) for err in errors))

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.postgres.process, self.emulator, self.balancer.process, self.tracking, self.serving,
                            self.challenger, *self.alerting.processes()) if p is not None]

    def local_pods(self) -> list[LocalPod]:
        """The running pods as Prometheus finds them: each container's local port (tools/local/alerts.py)."""
        pods = []
        for component, workload, containers in (
                ("tracking", self.tracking_deployment,
                 {self.tracking_container["name"]: (self.tracking, self.tracking_port),
                  self.exporter_container["name"]: (self.tracking_metrics, self.tracking_metrics_port)}),
                ("serving", self.serving_deployment,
                 {self.serving_container["name"]: (self.serving, self.serving_port)}),
                ("challenger", self.challenger_deployment,
                 {self.serving_container["name"]: (self.challenger, self.challenger_port)})):
            ports = {name: port for name, (process, port) in containers.items() if process and process.running}
            if ports:
                name = f"{workload['metadata']['name']}-{self.pod_generation[component]}"
                pods.append(LocalPod(workload, name, ports))
        return pods

    def rescrape(self) -> None:
        """Prometheus's targets follow the pods (a restart moves a pod to new ports), as its discovery does."""
        if self.alerting.prometheus is not None:
            self.alerting.update_targets(self.local_pods())

    # --- Postgres --------------------------------------------------------------------------
    def bootstrap_databases(self, databases: tuple[str, ...] = (TRACKING_DATABASE, AUTH_DATABASE)) -> None:
        """The IAM users and databases Pulumi creates on Cloud SQL, as Cloud SQL creates them."""
        self.run_client("bootstrap_db", user=None, extra_env={
            "PG_HOST": "127.0.0.1", "PG_PORT": str(self.postgres_port), "PG_SUPERUSER": self.postgres.superuser,
            "PG_SUPERUSER_PASSWORD": self.credentials.postgres_superuser_password,
            "DATABASE_USERS": json.dumps(self.database_users), "OWNER_ROLE": DATABASE_ADMIN_ROLE,
            "DATABASES": ",".join(databases),
        })

    def restart_postgres(self) -> None:
        self.postgres.restart()

    # --- GCS emulator -----------------------------------------------------------------------
    def start_emulator(self) -> None:
        """Disk-backed (workdir/gcs), so a restart keeps the objects; the bucket is created if missing."""
        data_dir = self.workdir / "gcs"
        data_dir.mkdir(exist_ok=True)
        argv = [str(self.runtime.bin("gcp-storage-emulator")), "--data-dir", str(data_dir), "start",
                "--host", "127.0.0.1", "--port", str(self.emulator_port), "--default-bucket", self.bucket]
        self.emulator = ManagedProcess("gcs-emulator", argv, env=self.client_env(), cwd=data_dir,
                                       log_path=self.logs_dir / "gcs-emulator.log", redact=self.redact)
        self.emulator.start()
        self.emulator.wait_until(lambda: http_ok(f"{self.emulator_url}/storage/v1/b/{self.bucket}"), 60,
                                 f"bucket {self.bucket} served")

    def restart_emulator(self) -> None:
        if self.emulator:
            self.emulator.stop()
        self.start_emulator()

    def list_objects(self, prefix: str = "") -> list[dict]:
        """Objects of the bucket under `prefix` (the emulator's JSON API, no credentials)."""
        items, token = [], None
        for _ in range(1000):
            url = f"{self.emulator_url}/storage/v1/b/{self.bucket}/o?prefix={quote(prefix)}"
            if token:
                url += f"&pageToken={quote(token)}"
            response = http("GET", url)
            if response.status != 200:
                raise LocalPlatformError(f"listing gs://{self.bucket}/{prefix}: HTTP {response.status}")
            page = response.json()
            items += page.get("items", [])
            token = page.get("nextPageToken")
            if not token:
                return items
        raise LocalPlatformError("bucket listing did not end after 1000 pages")

    def read_object(self, name: str) -> bytes:
        response = http("GET", f"{self.emulator_url}/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}?alt=media")
        if response.status != 200:
            raise LocalPlatformError(f"reading gs://{self.bucket}/{name}: HTTP {response.status}")
        return response.body

    # --- workloads from the manifests -------------------------------------------------------
    def _workload_port(self, workload: dict) -> Optional[int]:
        """The balancer's port for the workload's pods: a Service's address, not a pod's."""
        if workload is self.tracking_deployment:
            return self.balancer.backends["tracking"].listen_port
        if workload is self.serving_deployment:
            return self.balancer.backends["serving"].listen_port
        if workload is self.challenger_deployment and workload is not None:
            return self.balancer.backends["challenger"].listen_port
        if workload is not None and workload is self.notify_deployment:
            return self.notify_port  # one receiver: its Service is the pod
        return None

    def _services(self) -> dict[str, str]:
        """Every DNS form of every Service, with its port -> 127.0.0.1:balancer port of what it selects."""
        mapping = {}
        for service in self.manifests.all("Service"):
            for workload in (self.tracking_deployment, self.serving_deployment, self.challenger_deployment,
                             self.notify_deployment):
                if workload is not None and selects(service, workload):
                    for port in service["spec"]["ports"]:
                        for host in service_addresses(service):
                            mapping[f"{host}:{port['port']}"] = f"127.0.0.1:{self._workload_port(workload)}"
        return mapping

    def image_root(self, image: str) -> ImageRoot:
        """The root filesystem of the image a container names (built once per platform run)."""
        if image not in self._image_roots:
            self._image_roots[image] = self._image_root(image)
        return self._image_roots[image]

    def _site(self, workload: dict, name: str, image: str, listen_port: Optional[int] = None,
              extra_env: Optional[dict] = None) -> LocalSite:
        namespace = workload["metadata"]["namespace"]
        provider_classes = {spc["metadata"]["name"]: spc["spec"] for spc in self.manifests.all(SPC_KIND)
                            if spc["metadata"]["namespace"] == namespace}
        # What the add-on would mount now: the latest enabled version of each secret the classes name.
        versions = {entry["resourceName"]: self.secret_manager.access_name(entry["resourceName"])
                    for spec in provider_classes.values()
                    for entry in yaml.safe_load(spec["parameters"]["secrets"]) or []}
        self.redact.add(*versions.values())  # rotated values too
        return LocalSite(
            image=self.image_root(image),
            volume_root=self.workdir / "pods" / name,
            secrets={},
            config_maps={cm["metadata"]["name"]: cm.get("data") or {} for cm in self.manifests.all("ConfigMap")
                         if cm["metadata"]["namespace"] == namespace},
            provider_classes=provider_classes,
            secret_versions=versions,
            proxy_address=sql_proxy_address(workload),
            postgres_address=self.postgres.address,
            services=self._services(),
            listen_port=listen_port,
            service_port=self._workload_port(workload),
            extra_env=extra_env or {},
            pod_security=pod_spec(workload).get("securityContext") or {},
            iap_keys_url=self.iap.keys_url if self.iap else None,
        )

    def localized(self, workload: dict, container_spec: dict, name: str, listen_port: Optional[int] = None,
                  extra_env: Optional[dict] = None) -> LocalCommand:
        site = self._site(workload, name, container_spec["image"], listen_port, extra_env)
        return localize_container(container_spec, pod_spec(workload).get("volumes", []), site)

    def prepare_pod(self, workload: dict, command: LocalCommand, name: str) -> None:
        """A new pod: its emptyDir volumes start empty, its secret and configMap files are written."""
        pod_dir = self.workdir / "pods" / name
        for volume in pod_spec(workload).get("volumes", []):
            local = pod_dir / volume["name"]
            if "emptyDir" in volume and local.exists():
                shutil.rmtree(local)
            local.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in volume:
                local.chmod(0o1777 if command.fs_group is None else 0o2777)  # as the kubelet makes an emptyDir
        self.write_container_files(command)

    def write_container_files(self, command: LocalCommand) -> None:
        """The container's volume files, owned as the kubelet owns them (group fsGroup, readable by
        it), and its mount points in the image."""
        for path, (text, mode) in command.files.items():
            write_private_file(path, text, mode if command.fs_group is None else mode | 0o040)
            if command.fs_group is not None:
                os.chown(path, -1, command.fs_group)
        if command.fs_group is not None:
            for bind in command.binds:
                os.chown(bind.source, -1, command.fs_group)
        prepare_mount_points(command.rootfs, command.binds)

    def job_commands(self, job: dict, job_name: str, extra_env: Optional[dict] = None
                     ) -> list[tuple[dict, LocalCommand]]:
        """(rendered container, local command) of each container a Job runs, in order."""
        return [(spec, self.localized(job, spec, job_name, extra_env=extra_env))
                for spec in run_to_completion_containers(job)]

    def pod_name(self, component: str) -> str:
        """Directory name of the current pod: `tracking`, then `tracking-1`, ... after rollouts
        (an old pod keeps its own emptyDir while it drains)."""
        generation = self.pod_generation[component]
        return component if generation == 0 else f"{component}-{generation}"

    def tracking_command(self) -> LocalCommand:
        return self.localized(self.tracking_deployment, self.tracking_container, self.pod_name("tracking"),
                              self.tracking_port, extra_env={EMULATOR_HOST_ENV: self.emulator_url})

    def serving_command(self) -> LocalCommand:
        return self.localized(self.serving_deployment, self.serving_container, self.pod_name("serving"),
                              self.serving_port)

    def challenger_command(self) -> LocalCommand:
        return self.localized(self.challenger_deployment, self.challenger_container, self.pod_name("challenger"),
                              self.challenger_port)

    def _run_job(self, job: dict, job_name: str, replace: Optional[dict[str, str]] = None,
                 extra_env: Optional[dict] = None, stage: Callable[[Path], None] = lambda pod_dir: None
                 ) -> list[JobResult]:
        """The Job's containers in order; `replace` swaps whole words of their args (e.g. a database
        name), not of the launcher around them; `stage` puts files in the new pod's directory."""
        results = []
        for spec, command in self.job_commands(job, job_name, extra_env):
            if replace:
                executable, *args = command.container_argv
                command = relaunched(command, [executable, *(replace.get(part, part) for part in args)])
            self.prepare_pod(job, command, job_name)
            stage(self.workdir / "pods" / job_name)
            log_path = self.logs_dir / f"{job_name}-{spec['name']}.log"
            self.started_containers.add((job["metadata"]["name"], spec["name"]))
            completed = run_to_completion(f"{job_name}/{spec['name']}", command.argv, env=command.env,
                                          cwd=command.cwd, log_path=log_path, timeout=JOB_TIMEOUT_SECONDS)
            results.append(JobResult(spec["name"], completed.returncode, log_path))
            if completed.returncode != 0:
                raise LocalPlatformError(
                    f"{job_name} container {spec['name']} exited with code {completed.returncode}; log {log_path}:\n"
                    f"{log_tail(log_path, self.redact)}")
        return results

    def grant_database_privileges(self, database: Optional[str] = None) -> list[JobResult]:
        """The database-grants Job: the admin identity lets the tracking user create in both
        databases (or in `database` instead of MLflow's two)."""
        if database is None:
            return self._run_job(self.grants_job, "db-grants")
        return self._run_job(self.grants_job, f"db-grants-{database}",
                             replace={TRACKING_DATABASE: database, AUTH_DATABASE: database})

    def run_migrations(self) -> list[JobResult]:
        """The grants Job, then the migration Job's containers, in order (tracking schema, then auth
        schema), as Pulumi orders them."""
        return self.grant_database_privileges() + self._run_job(self.migration_job, "migrate")

    def apply_team_access(self) -> list[JobResult]:
        """The access Job: the stack's teams and their permissions (also what its schedule reruns)."""
        return self._run_job(self.access_job, "access")

    def start_notifications(self) -> None:
        """The webhook receiver, then the Job registering the webhook with tracking (as `pulumi up` orders them)."""
        spec = pod_spec(self.notify_deployment)["containers"][0]
        command = self.localized(self.notify_deployment, spec, "notify", self.notify_port)
        self._start_server(self.notify_deployment, spec, command, "notify", self.notify_port)
        self._run_job(self.notify_register_job, "notify-register")

    def run_drift_job(self) -> Path:
        """One run of the drift CronJob's pod over WORKDIR/payloads.jsonl (the local sink's table: one file is
        one window) in place of BigQuery; its notifications go to the recording sink. Returns its log."""
        job = {"kind": "Job", "metadata": self.drift_schedule["metadata"],
               "spec": self.drift_schedule["spec"]["jobTemplate"]["spec"]}
        source = flag_value(run_to_completion_containers(job)[0]["args"], "--source")

        def stage(pod_dir: Path) -> None:
            staged = pod_dir / "tmp" / PAYLOADS_FILE
            shutil.copyfile(self.workdir / PAYLOADS_FILE, staged)
            staged.chmod(0o644)

        [result] = self._run_job(job, "drift", replace={source: f"/tmp/{PAYLOADS_FILE}"},
                                 extra_env={EMULATOR_HOST_ENV: self.emulator_url}, stage=stage)
        self.sink.scan(result.log_path.read_text(encoding="utf-8", errors="replace").splitlines())
        return result.log_path

    def ensure_serving_user(self) -> list[JobResult]:
        """The serving-user Job: creates/updates the read-only user and its READ grants."""
        return self._run_job(self.serving_user_job, "serving-user")

    def _start_server(self, workload: dict, spec: dict, command: LocalCommand, name: str, port: int,
                      sidecar_of: Optional[str] = None, ready: bool = True) -> None:
        """Start and wait as the kubelet does: the startup probe within its budget, then (if
        `ready`) the readiness probe, both within MAX_STARTUP_SECONDS. The process is registered
        (so `stop` finds it) before it is started. A sidecar joins the already prepared pod of
        `sidecar_of`."""
        if sidecar_of is None:
            self.prepare_pod(workload, command, self.pod_name(name))
        else:
            self.write_container_files(command)
        process = ManagedProcess(name, command.argv, env=command.env, cwd=command.cwd,
                                 log_path=self.logs_dir / f"{name}.log", redact=self.redact)
        setattr(self, name, process)
        process.start()
        self.rescrape()
        self.started_containers.add((workload["metadata"]["name"], spec["name"]))
        started = time.monotonic()
        startup = spec.get("startupProbe") or {}
        budget = min(MAX_STARTUP_SECONDS,
                     float(startup.get("failureThreshold", 30) * startup.get("periodSeconds", 5)))
        live_url = probe_url(port, startup)
        process.wait_until(lambda: http_ok(live_url), budget, f"startup probe {live_url} answering 200")
        if ready:
            ready_url = probe_url(port, spec.get("readinessProbe") or {})
            process.wait_until(lambda: http_ok(ready_url), MAX_STARTUP_SECONDS - (time.monotonic() - started),
                               f"readiness probe {ready_url} answering 200")

    def exporter_command(self) -> LocalCommand:
        """The metrics-exporter container, in the tracking pod (same /tmp, its own port)."""
        return self.localized(self.tracking_deployment, self.exporter_container, self.pod_name("tracking"),
                              self.tracking_metrics_port)

    def start_tracking(self) -> None:
        """A tracking pod (server, metrics sidecar), in the balancer once ready."""
        self._start_server(self.tracking_deployment, self.tracking_container, self.tracking_command(), "tracking",
                           self.tracking_port)
        self._start_server(self.tracking_deployment, self.exporter_container, self.exporter_command(),
                           "tracking_metrics", self.tracking_metrics_port, sidecar_of="tracking")
        self.balancer.add("tracking", self.tracking_port)
        self.balancer.add("tracking_metrics", self.tracking_metrics_port)

    def stop_tracking(self) -> None:
        """The whole tracking pod (server and sidecars) at once, e.g. while its databases are restored."""
        self.balancer.remove("tracking", self.tracking_port)
        self.balancer.remove("tracking_metrics", self.tracking_metrics_port)
        for process in (self.tracking_metrics, self.tracking):
            if process:
                process.stop()
        self.rescrape()

    def restart_tracking(self) -> None:
        self.stop_tracking()
        self.start_tracking()

    def start_serving(self, ready: bool = True) -> None:
        """`ready=False`: return once the process is live, e.g. still waiting for its model; the
        balancer health-checks it and routes to it once /ping answers."""
        self._start_server(self.serving_deployment, self.serving_container, self.serving_command(), "serving",
                           self.serving_port, ready=ready)
        self.balancer.add("serving", self.serving_port, ready=ready)

    def start_challenger(self, ready: bool = True) -> None:
        """The challenger's pod (it waits for its alias, as serving does, unless `ready`)."""
        self._start_server(self.challenger_deployment, self.challenger_container, self.challenger_command(),
                           "challenger", self.challenger_port, ready=ready)
        self.balancer.add("challenger", self.challenger_port, ready=ready)

    @property
    def declared_split(self) -> tuple[int, bool]:
        """(weight, mirror) of the rendered route: what `make local` starts with."""
        return route_split(self.manifests, self.challenger_deployment)

    def restart_challenger(self) -> None:
        """A rollout of the challenger (its alias moved): as restart_serving, for the challenger's pod."""
        self._roll("challenger")

    def restart_serving(self) -> None:
        """A rollout of serving (`make promote`): the new pod loads whatever version the alias
        points to now; see `_roll`. A new pod that never gets ready is stopped and the old one
        keeps serving (maxUnavailable 0), and the error is raised."""
        self._roll("serving")

    def roll_tracking(self) -> None:
        """A rolling restart of tracking (`kubectl rollout restart`), as its strategy declares."""
        self._roll("tracking")

    # --- rollouts as the Deployment controller and the kubelet do them ---------------------------
    def _roll(self, component: str) -> None:
        workload = {"tracking": self.tracking_deployment, "serving": self.serving_deployment,
                    "challenger": self.challenger_deployment}[component]
        old = self._pod(component)
        old_ports = {backend: self._port_of(backend) for backend, _ in old or []}
        surge_first = rollout_order(workload) == SURGE_FIRST
        if not surge_first and old is not None:
            self._retire(workload, old, old_ports, wait=True)
        self.pod_generation[component] += 1
        self._new_ports(component)
        try:
            {"tracking": self.start_tracking, "serving": self.start_serving,
             "challenger": self.start_challenger}[component]()
        except Exception:
            for backend, process in self._pod(component) or []:
                if all(process is not previous for _, previous in old or []):
                    self.balancer.remove(backend, self._port_of(backend))
                    process.stop()
                    setattr(self, backend, None)  # no pod left behind if there was no old one
            if surge_first and old is not None:
                self._restore(component, old, old_ports)  # the old pod was never touched
            self.rescrape()
            raise
        if surge_first and old is not None:
            self._retire(workload, old, old_ports, wait=False)

    def _pod(self, component: str) -> Optional[list[tuple[str, ManagedProcess]]]:
        """(container name, process) of the current pod, with the balancer backend of each."""
        if component in ("serving", "challenger"):
            process = getattr(self, component)
            return [(component, process)] if process else None
        if self.tracking is None:
            return None
        return [("tracking", self.tracking)] + ([("tracking_metrics", self.tracking_metrics)]
                                                if self.tracking_metrics else [])

    def _new_ports(self, component: str) -> None:
        if component in ("serving", "challenger"):
            setattr(self, f"{component}_port", free_port())
        else:
            self.tracking_port, self.tracking_metrics_port = free_port(), free_port()

    def _restore(self, component: str, pod: list[tuple[str, ManagedProcess]], ports: dict[str, int]) -> None:
        for backend, process in pod:
            setattr(self, backend, process)
            setattr(self, f"{backend}_port", ports[backend])
        self.pod_generation[component] -= 1

    def _retire(self, workload: dict, pod: list[tuple[str, ManagedProcess]], ports: dict[str, int],
                wait: bool) -> None:
        """Delete a pod: the balancer stops routing to it ENDPOINT_PROPAGATION_SECONDS later (the
        endpoint removal travelling), while each container runs its preStop hook, gets SIGTERM,
        and is killed at the end of the grace period. Returns once the endpoint is gone (`wait`:
        once the pod has stopped)."""
        plan = termination(workload)
        container_of = {"tracking": self.tracking_container["name"], "tracking_metrics": self.exporter_container["name"],
                        "serving": self.serving_container["name"],
                        "challenger": (self.challenger_container or self.serving_container)["name"]}
        deleted = time.monotonic()

        def endpoint_removed() -> None:
            time.sleep(ENDPOINT_PROPAGATION_SECONDS)
            for backend, _ in pod:
                self.balancer.remove(backend, ports[backend])

        def stop_container(backend: str, process: ManagedProcess) -> None:
            time.sleep(plan.pre_stop_seconds.get(container_of[backend], 0.0))
            process.stop(timeout=max(0.0, plan.grace_seconds - (time.monotonic() - deleted)))

        removal = threading.Thread(target=endpoint_removed, daemon=True)
        threads = [removal] + [threading.Thread(target=stop_container, args=item, daemon=True) for item in pod]
        self.retired += [process for _, process in pod]
        for thread in threads:
            thread.start()
        self.retiring += threads
        # The rollout is over for clients once no request reaches the old pod; its drain goes on.
        removal.join()
        if wait:
            self.wait_retired()

    def _port_of(self, backend: str) -> int:
        return {"tracking": self.tracking_port, "tracking_metrics": self.tracking_metrics_port,
                "serving": self.serving_port, "challenger": self.challenger_port}[backend]

    def wait_retired(self, timeout: float = 120.0) -> None:
        """Until every deleted pod has stopped (their grace periods bound it)."""
        deadline = time.monotonic() + timeout
        for thread in self.retiring:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.retiring = [thread for thread in self.retiring if thread.is_alive()]
        if self.retiring:
            raise LocalPlatformError(f"{len(self.retiring)} pod containers still stopping after {timeout:.0f}s")

    # --- clients in the runtime virtualenv ------------------------------------------------------
    @property
    def clients_home(self) -> Path:
        return self.workdir / "clients"

    def client_env(self) -> dict[str, str]:
        """Environment of helper processes of the runtime virtualenv (clients, the emulator):
        nothing inherited from the caller, no credentials."""
        self.clients_home.mkdir(parents=True, exist_ok=True)
        return self.runtime.env(self.clients_home)

    def run_client(self, script: str | Path, *args: str, user: Optional[str] = "admin",
                   extra_env: Optional[dict] = None, check: bool = True, timeout: float = 300.0) -> ClientResult:
        """Run a script with the runtime virtualenv's python against the tracking server.

        `script`: a path, or the name of one of tools/local/clients/. `user`: "admin", "serving" or None
        (no credentials). Its stdout is returned (print results, never secrets); stderr is logged.
        """
        env = {"MLFLOW_TRACKING_URI": self.tracking_url}
        if user == "admin":
            env.update(MLFLOW_TRACKING_USERNAME=self.admin_username, MLFLOW_TRACKING_PASSWORD=self.admin_password)
        elif user == "serving":
            env.update(MLFLOW_TRACKING_USERNAME=self.serving_username,
                       MLFLOW_TRACKING_PASSWORD=self.serving_password)
        elif user is not None:
            raise ValueError(f"user={user!r}: allowed admin, serving or None")
        return self.run_client_in(self.runtime, script, args, {**env, **(extra_env or {})}, check=check,
                                  timeout=timeout)

    def run_client_in(self, venv: Venv, script: str | Path, args: Sequence[str], env: dict[str, str], *,
                      label: str = "", check: bool = True, timeout: float = 300.0) -> ClientResult:
        """A client script (a path, or the name of one of tools/local/clients/) with `venv`'s python, its
        output logged under logs/clients/ (file names prefixed with `label`)."""
        path = Path(script) if "/" in str(script) or str(script).endswith(".py") else CLIENTS_DIR / f"{script}.py"
        name = f"{label} client {path.name}" if label else f"client {path.name}"
        self._client_runs += 1
        log_path = self.logs_dir / "clients" / f"{label + '-' if label else ''}{self._client_runs:03d}-{path.stem}.log"
        try:
            finished = venv.run([str(path), *args], home=self.clients_home, env=env, cwd=self.clients_home,
                                log_path=log_path, timeout=timeout)
        except VenvError as err:
            raise LocalPlatformError(f"{name}: {err}") from None
        if check and finished.code != 0:
            raise LocalPlatformError(f"{name} {self.redact(' '.join(args))} exited with code {finished.code}; "
                                     f"log {log_path}:\n{log_tail(log_path, self.redact)}")
        return ClientResult(finished.code, finished.stdout, log_path)

    def train_model(self, variant: str = "base", experiment: str = "iris-demo", *, flavor: str = "sklearn",
                    move_alias: bool = True, extra_requirements: tuple[str, ...] = ()) -> dict:
        """Train, log, register a new version of the served model; move the served alias to it
        unless `move_alias` is False (then `make promote` does)."""
        args = ["--model-name", self.model_name, "--experiment", experiment, "--variant", variant, "--flavor", flavor,
                *(["--alias", self.model_alias] if move_alias else [])]
        for requirement in extra_requirements:
            args += ["--extra-requirement", requirement]
        # mlflow_serving.environment (mlflow_image/ is on every runtime client's path): a LightGBM
        # trainer gets LightGBM as a serving pod does.
        return self.run_client("train", *args).json()

    def schema_snapshot(self) -> dict:
        """Tables, columns, indexes and alembic revision of both databases."""
        uris = {name: self.database_uri(name) for name in (TRACKING_DATABASE, AUTH_DATABASE)}
        return self.run_client("schema", user=None, extra_env={"DATABASE_URIS": json.dumps(uris)}).json()
