"""The MLflow tracking server: migrations Job, Deployment with the Cloud SQL proxy, auth, exposure."""

from __future__ import annotations

import json
from urllib.parse import quote
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.cloud_rules import GOOGLE_LB_RANGES, MANAGED_COLLECTOR_NAMESPACES
from infra.database import DATABASE_ADMIN_ROLE, iam_database_user
from infra.identity import BucketGrant, WorkloadIdentity, WorkloadIdentityArgs
from infra.naming import child_options, job_wait, k8s_labels
from infra.secrets import ADMIN_PASSWORD, FLASK_SECRET_KEY, WEBHOOK_ENCRYPTION_KEY, SecretRef
from infra.settings import TrackingSettings
from k8s.logs import LOGGING_PATH, logging_mount, logging_volume
from k8s.namespace import SERVING_NAMESPACE, TRACKING_NAMESPACE, workload_namespace
from k8s.secret_files import file_env, principal, secret_files, secrets_mount, secrets_volume, with_file_env
from k8s.pods import (
    SQL_PROXY_HTTP_PORT, SQL_PROXY_PORT, container_security_context, drain_on_stop, http_probe, resources,
    sql_proxy_sidecar, tmp_mount, tmp_volume,
)
from k8s.workload import (
    WorkloadNames, cluster_ip_service_spec, deployment_ref, deployment_spec, fail_job_on_exit, http_service_port,
    in_cluster_url, ingress_policy_spec, pdb_spec, pod_monitoring, pod_monitoring_spec, run_once_job_spec, tcp_ports,
    workload_pod,
)

TRACKING_PORT = 5000
COMPONENT = "tracking"
SERVICE_NAME = "mlflow-tracking"
KSA_NAME = "mlflow-tracking"
DB_ADMIN_KSA_NAME = "mlflow-db-admin"
# Reach Cloud SQL through the proxy (client) and log in as an IAM database user (instanceUser).
DATABASE_ROLES = ("roles/cloudsql.client", "roles/cloudsql.instanceUser")
BACKEND_CONFIG_NAME = "mlflow-tracking"
FRONTEND_CONFIG_NAME = "mlflow-tracking"
ADMIN_USERNAME = "admin"
# The load-test project's own user (loadtest/ensure_user.py makes it, as the admin): it runs in the cluster,
# without IAP, so behind IAP it too may log in by password.
LOAD_TEST_USERNAME = "mlflow-loadtest"
AUTH_CONFIG_DIR = "/etc/mlflow-auth"
AUTH_CONFIG_FILE = "basic_auth.ini"
AUTH_CONFIG_MAP = "mlflow-auth-config"
PROMETHEUS_DIR = "/tmp/prometheus"
BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
# mlflow_image/mlflow_iap_auth: people and service accounts are who IAP's signed assertion names.
IAP_AUTH_FUNCTION = "mlflow_iap_auth:authenticate_request"
# IAP's public keys, a JSON map of key id to PEM (https://cloud.google.com/iap/docs/signed-headers-howto).
GOOGLE_IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
# Secret keys, referenced by the pods; their values are never in a manifest.
# Env vars the tracking server reads from its Secret Manager files (mlflow_fileenv).
FILE_ENV = {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_SECRET_KEY,
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_ENCRYPTION_KEY}
# MLflow delivers registry webhooks only over https to public addresses unless told otherwise
# (mlflow/utils/validation.py, webhooks/ssrf.py in 3.17); the platform's receiver is a ClusterIP Service
# over plain HTTP, its deliveries signed. Only admins may create webhooks, so no one else can aim one inward.
WEBHOOK_ENV = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"}
METRICS_PORT = 9102
# How long the migration Job waits for its first database connection: IAM changes usually apply
# within 2 minutes, sometimes 7 or more. The Job's activeDeadlineSeconds still bounds the whole Job.
DB_WAIT_SECONDS = 420
# Pulumi waits 10 minutes for a Job by default: the grants Job may wait up to DB_WAIT_SECONDS per
# database for IAM to propagate, the migration Job after it; each wait covers its Job's deadline.
GRANTS_DEADLINE_SECONDS = 900
# mlflow_dbgrant's exit status when the tracking user holds cloudsqlsuperuser (EXIT_ADMIN_MEMBER): only an
# operator can mend it (README, Troubleshooting), so the Job fails at once instead of retrying.
GRANTS_EXIT_ADMIN_MEMBER = 3
GRANTS_CONTAINER = "grant-database-privileges"
MIGRATION_DEADLINE_SECONDS = 1200


# Shutdown of a tracking pod: the prod Ingress's container-native load balancer detaches a NEG
# endpoint within ~10 s of the pod's deletion; 15 s covers it and kube-proxy's ~1 s.
DRAIN_SECONDS = 15
# drain + 30 s for the longest request in flight (an artifact upload through the proxy) + 15 s for
# the Cloud SQL proxy sidecar, which stops after the server (--max-sigterm-delay) in the same budget.
GRACE_SECONDS = DRAIN_SECONDS + 30 + 15
# The GCLB keeps idle connections to a backend for 600 s and needs the backend to keep them open
# longer, or a request sent as the pod closes an idle connection fails with a 502 (uvicorn's
# default is 5 s). 620 s is Google's recommendation.
KEEPALIVE_SECONDS = 620


# --- pure builders --------------------------------------------------------------------------
def service_hosts(service: str, namespace: str) -> list[str]:
    """Every in-cluster DNS name of a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def allowed_hosts(namespace: str, ingress_host: Optional[str], internal_ip: Optional[str]) -> list[str]:
    """Host headers the server accepts (its DNS-rebinding guard answers 403 to any other)."""
    hosts = [f"{host}:{TRACKING_PORT}" for host in service_hosts(SERVICE_NAME, namespace)]
    hosts += service_hosts(SERVICE_NAME, namespace)
    if internal_ip:
        hosts.append(f"{internal_ip}:{TRACKING_PORT}")
    if ingress_host:
        hosts.append(ingress_host)
    # kubectl port-forward
    hosts += [f"localhost:{TRACKING_PORT}", f"127.0.0.1:{TRACKING_PORT}"]
    return hosts


def postgres_uri(user: str, database: str, host: str = "127.0.0.1", port: int = SQL_PROXY_PORT) -> str:
    """SQLAlchemy URI through the proxy, with no password: the proxy logs the pod's IAM identity in
    (--auto-iam-authn). psycopg2 explicitly (SQLAlchemy 2.1 defaults to psycopg 3); the user name
    (`NAME@PROJECT.iam`) is percent-encoded."""
    return f"postgresql+psycopg2://{quote(user, safe='')}@{host}:{port}/{database}"


def ini_value(text: str) -> str:
    """`text` as MLflow's auth config reader (ConfigParser, `%` interpolation) gives it back: the
    percent-encoded `@` of an IAM user in a URI would otherwise be an interpolation error."""
    return text.replace("%", "%%")


def auth_config_ini(default_permission: str, cache_ttl_seconds: int, database_uri: str, iap: bool = False) -> str:
    """The basic-auth app's config: no credential in it (a ConfigMap); the admin password comes
    from MLFLOW_AUTH_ADMIN_PASSWORD. Behind IAP, the identity hook decides who a request is."""
    return "\n".join([
        "[mlflow]",
        f"default_permission = {default_permission}",
        f"database_uri = {ini_value(database_uri)}",
        f"admin_username = {ADMIN_USERNAME}",
        f"authorization_function = {IAP_AUTH_FUNCTION if iap else BASIC_AUTH_FUNCTION}",
        f"auth_cache_ttl_seconds = {cache_ttl_seconds}",
        "",
    ])


def tracking_args(*, bucket: str, namespace: str, workers: int, ingress_host: Optional[str],
                  internal_ip: Optional[str]) -> list[str]:
    args = [
        "server",
        "--host", "0.0.0.0",
        "--port", str(TRACKING_PORT),
        "--workers", str(workers),
        "--app-name", "basic-auth",
        "--serve-artifacts",
        "--artifacts-destination", f"gs://{bucket}/artifacts",
        "--allowed-hosts", ",".join(allowed_hosts(namespace, ingress_host, internal_ip)),
        "--expose-prometheus", PROMETHEUS_DIR,
        "--uvicorn-opts", f"--log-config {LOGGING_PATH} --timeout-keep-alive {KEEPALIVE_SECONDS}",
    ]
    if ingress_host:
        # MLflow's CORS guard answers 403 to a state-changing /api or /ajax-api call whose Origin is
        # neither localhost (always allowed: port-forwards) nor listed: the UI behind the Ingress.
        args += ["--cors-allowed-origins", f"https://{ingress_host}"]
    return args


def tracking_env(job_execution: bool, backend_uri: Any) -> list[dict]:
    return [
        {"name": "MLFLOW_BACKEND_STORE_URI", "value": backend_uri},
        *file_env(FILE_ENV),
        {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": f"{AUTH_CONFIG_DIR}/{AUTH_CONFIG_FILE}"},
        {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "true" if job_execution else "false"},
        {"name": "MLFLOW_TRACKING_DIR", "value": "/tmp/mlruns"},
        *({"name": name, "value": value} for name, value in WEBHOOK_ENV.items()),
    ]


def iap_env(*, keys_url: str, project_number: Any, backend_service_id: Optional[str],
            machine_users: tuple[str, ...], domain_roles: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """What mlflow_iap_auth trusts: the keys, the audience (this project's backend services, or the one
    whose id is known), who may still use a password without IAP (the break-glass admin and the
    in-cluster machine users, never through Google's load balancers), and the team roles a new user of a
    domain joins at first sign-in."""
    env = [{"name": "MLFLOW_IAP_KEYS_URL", "value": keys_url},
           {"name": "MLFLOW_IAP_PROJECT_NUMBER", "value": project_number},
           {"name": "MLFLOW_IAP_BASIC_AUTH_USERS", "value": ",".join((ADMIN_USERNAME, *machine_users))},
           {"name": "MLFLOW_IAP_LOAD_BALANCER_RANGES", "value": ",".join(GOOGLE_LB_RANGES)}]
    if backend_service_id:
        env.append({"name": "MLFLOW_IAP_BACKEND_SERVICE_ID", "value": backend_service_id})
    if domain_roles:
        env.append({"name": "MLFLOW_IAP_DOMAIN_ROLES", "value": ",".join(f"{d}={r}" for d, r in domain_roles)})
    return env


def auth_config_volume(config_map_name: Any) -> dict:
    return {"name": "auth-config", "configMap": {"name": config_map_name, "defaultMode": 0o444}}


def auth_config_mount() -> dict:
    return {"name": "auth-config", "mountPath": AUTH_CONFIG_DIR, "readOnly": True}


def tracking_container(*, image: Any, args: Any, env: list[dict], cpu: str, memory: str) -> dict:
    """`mlflow server ARGS` under mlflow_fileenv, which reads the admin password and Flask key files."""
    command, wrapped_args = with_file_env(["mlflow"], args, FILE_ENV)
    return {
        "name": "mlflow",
        "image": image,
        "command": command,
        "args": wrapped_args,
        "env": env,
        "ports": [{"name": "http", "containerPort": TRACKING_PORT}],
        "startupProbe": http_probe("/health", "http", period=5, failures=60),
        "readinessProbe": http_probe("/health", "http", period=10, failures=3),
        "livenessProbe": http_probe("/health", "http", period=20, failures=3),
        "lifecycle": drain_on_stop(DRAIN_SECONDS),
        "resources": resources(cpu, memory),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), auth_config_mount(), secrets_mount(), logging_mount()],
    }


def metrics_exporter_container(*, image: Any) -> dict:
    """Serves the server's multiprocess metrics files (shared /tmp) on METRICS_PORT.

    MLflow answers /metrics only to admins once basic auth is on; giving the scraper an admin
    password would be worse than this sidecar, which only the collector may reach.
    """
    return {
        "name": "metrics-exporter",
        "image": image,
        "command": ["python"],
        "args": ["-m", "mlflow_metrics", "--dir", PROMETHEUS_DIR, "--host", "0.0.0.0",
                 "--port", str(METRICS_PORT)],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "startupProbe": http_probe("/metrics", "metrics", period=2, failures=30),
        "readinessProbe": http_probe("/metrics", "metrics", period=15, failures=3),
        "livenessProbe": http_probe("/metrics", "metrics", period=30, failures=3),
        "resources": resources("50m", "128Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount()],
    }


def migration_containers(*, image: Any, backend_uri: Any, auth_uri: Any) -> tuple[list[dict], list[dict]]:
    """(init containers after the proxy, main containers) of the migration Job.

    First the database is waited for (mlflow_dbwait: the proxy refuses connections until the IAM
    bindings propagate, which can take minutes on a new project); then the tracking schema is
    upgraded, then the auth schema; each runs once per image version. Kubernetes expands $(VAR)
    from the container's env.
    """
    base = {"image": image, "resources": resources("250m", "512Mi"),
            "securityContext": container_security_context(), "volumeMounts": [tmp_mount()]}
    wait_for_database = {
        **base, "name": "wait-for-database", "resources": resources("100m", "256Mi"),
        "command": ["python"], "args": ["-m", "mlflow_dbwait", "--url-env", "MLFLOW_BACKEND_STORE_URI",
                                        "--timeout", str(DB_WAIT_SECONDS)],
        "env": [{"name": "MLFLOW_BACKEND_STORE_URI", "value": backend_uri}],
    }
    upgrade_tracking = {
        **base, "name": "upgrade-tracking-db",
        "command": ["mlflow"], "args": ["db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"],
        "env": [{"name": "MLFLOW_BACKEND_STORE_URI", "value": backend_uri}],
    }
    upgrade_auth = {
        **base, "name": "upgrade-auth-db",
        "command": ["python"], "args": ["-m", "mlflow.server.auth", "db", "upgrade", "--url",
                                        "$(MLFLOW_AUTH_DATABASE_URI)"],
        "env": [{"name": "MLFLOW_AUTH_DATABASE_URI", "value": auth_uri}],
    }
    return [wait_for_database, upgrade_tracking], [upgrade_auth]


def grants_container(*, image: Any, admin_uri: Any, grantee: Any, databases: list) -> dict:
    """The database-admin identity grants the tracking user its privileges (mlflow_dbgrant),
    waiting as the migration does for IAM to let it in."""
    return {
        "name": GRANTS_CONTAINER,
        "image": image,
        "command": ["python"],
        "args": ["-m", "mlflow_dbgrant", "--url-env", "DATABASE_ADMIN_URI", "--grantee", grantee,
                 *[part for database in databases for part in ("--database", database)],
                 "--timeout", str(DB_WAIT_SECONDS)],
        "env": [{"name": "DATABASE_ADMIN_URI", "value": admin_uri}],
        "resources": resources("100m", "256Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount()],
    }


def namespace_peer(namespace: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def collector_peers() -> list[dict]:
    """Managed Prometheus' collectors, wherever GKE runs them (Standard or Autopilot)."""
    return [namespace_peer(namespace) for namespace in MANAGED_COLLECTOR_NAMESPACES]


def network_policy_ingress(namespace: str, serving_namespace: str, serving_pod_cidr: Optional[str],
                           expose_ingress: bool) -> list[dict]:
    """Who may reach the tracking pods: its namespace, serving, managed Prometheus, the load balancers.
    Rigs beside the platform (loadtest/'s stack) add their own policy: NetworkPolicies add up.

    A separate serving cluster's pods are admitted by their pod range: the internal load balancer
    keeps their source address because its Service has `externalTrafficPolicy: Local`.
    """
    peers: list[dict] = [{"podSelector": {}}, namespace_peer(serving_namespace), *collector_peers()]
    if serving_pod_cidr:
        peers.append({"ipBlock": {"cidr": serving_pod_cidr}})
    if expose_ingress:
        peers += [{"ipBlock": {"cidr": cidr}} for cidr in GOOGLE_LB_RANGES]
    return [{"from": peers, "ports": tcp_ports(TRACKING_PORT)},
            {"from": collector_peers(), "ports": tcp_ports(METRICS_PORT, SQL_PROXY_HTTP_PORT)}]


def internal_lb_service_spec(selector: dict, address: Any) -> dict:
    """Tracking for the VPC (a separate serving cluster) on a reserved internal address.

    `externalTrafficPolicy: Local` keeps the client's pod address (with `Cluster` GKE source-NATs to
    a node address, which the NetworkPolicy above drops); the load balancer's health check then
    asks each node's healthCheckNodePort and sends traffic only to nodes running a ready pod.
    """
    return {"type": "LoadBalancer", "loadBalancerIP": address, "externalTrafficPolicy": "Local",
            "selector": selector, "ports": [http_service_port(TRACKING_PORT)]}


# --- component ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackingServerArgs:
    provider: k8s.Provider
    """Provider of the platform cluster."""
    project: str
    """GCP project (Workload Identity)."""
    workload_pool: pulumi.Input[str]
    """PROJECT.svc.id.goog, from the cluster."""
    account_id: str
    """GCP service account id of the server (naming.service_account_id)."""
    db_admin_account_id: str
    """GCP service account id of the database-grants Job."""
    image: pulumi.Input[str]
    """Tracking image by digest."""
    image_version: str
    """Content hash of the image sources: names the migration Job."""
    bucket_name: pulumi.Input[str]
    """Artifact bucket (its output: grants and the server wait for it)."""
    sql_connection_name: pulumi.Input[str]
    """PROJECT:REGION:INSTANCE of the Cloud SQL instance."""
    sql_instance_name: pulumi.Input[str]
    """The instance's name: the tracking and database-admin identities become its IAM users."""
    tracking_database: pulumi.Input[str]
    """MLflow's database (the Database resource's output: URIs wait for it)."""
    auth_database: pulumi.Input[str]
    """The basic-auth app's database (the Database resource's output)."""
    admin_password: SecretRef
    """Secret Manager secret of the admin password (mounted, read by the server at start)."""
    flask_secret_key: SecretRef
    """Secret Manager secret of the Flask secret key shared by all replicas."""
    webhook_encryption_key: SecretRef
    """Secret Manager secret of the key stored webhook secrets are encrypted with, shared by all replicas."""
    project_number: pulumi.Input[str]
    """Project number: the Workload Identity principal the Secret Manager add-on authenticates as."""
    settings: TrackingSettings
    """Replicas, workers, resources, the Auth Proxy image, basic-auth defaults."""
    namespace: str = TRACKING_NAMESPACE
    """Namespace of the tracking server."""
    serving_namespace: str = SERVING_NAMESPACE
    """Namespace of model serving, admitted by the NetworkPolicy."""
    ingress_host: Optional[str] = None
    """Public host served through an Ingress with a managed certificate."""
    ingress_static_ip_name: Optional[pulumi.Input[str]] = None
    """Name of the global address the Ingress uses."""
    security_policy_name: Optional[pulumi.Input[str]] = None
    """Cloud Armor policy attached to the Ingress backend."""
    ssl_policy_name: Optional[pulumi.Input[str]] = None
    """SSL policy of the Ingress's HTTPS proxy (its FrontendConfig)."""
    iap: bool = False
    """Identity-Aware Proxy on the Ingress, with IAP's Google-managed OAuth client; the server then
    takes people's identity from IAP's signed assertion."""
    iap_backend_service_id: Optional[str] = None
    """The Ingress backend service's numeric id, once known: pins the assertions' audience to it."""
    machine_users: tuple[str, ...] = ()
    """Basic-auth users of in-cluster workloads (the serving user, the load test's), still allowed a password
    behind IAP."""
    domain_roles: tuple[tuple[str, str], ...] = ()
    """(domain, team role): a new user of the domain joins the role at first sign-in."""
    internal_lb_ip: Optional[pulumi.Input[str]] = None
    """Reserved internal address (the Address resource's output): exposes tracking to the VPC
    through an internal load balancer."""
    serving_pod_cidr: Optional[str] = None
    """Pod range of a separate serving cluster, admitted by the NetworkPolicy."""

    def __post_init__(self) -> None:
        if (self.security_policy_name is not None or self.iap) and not self.ingress_host:
            raise ValueError("TrackingServerArgs: Cloud Armor and IAP need ingress_host")
        if self.ingress_host and self.ssl_policy_name is None:
            raise ValueError("TrackingServerArgs.ssl_policy_name: an Ingress needs an SSL policy "
                             "(GCLB's default still accepts TLS 1.0)")


@dataclass(frozen=True)
class TrackingEndpoint:
    """What tracking's clients in the clusters (serving, the load test) take from it."""

    in_cluster_url: pulumi.Output[str]
    """URL of the ClusterIP Service, inside the platform cluster."""
    internal_url: Optional[pulumi.Output[str]]
    """URL of the internal load balancer (for a separate serving cluster); None without one."""
    namespace: pulumi.Output[str]
    """Namespace of tracking, where Jobs that act as the admin run."""
    admin_username: str
    """The basic-auth admin user."""
    admin_password: SecretRef
    """Secret Manager secret of the admin's password."""
    ready: pulumi.Resource
    """The Deployment: whatever needs a serving tracking waits for it."""
    selector: dict
    """Labels of the tracking pods (a NetworkPolicy admitting them names these)."""

    @property
    def client_url(self) -> pulumi.Output[str]:
        """How a workload of the serving cluster reaches tracking."""
        return self.internal_url if self.internal_url is not None else self.in_cluster_url


class TrackingServer(pulumi.ComponentResource):
    """Namespace, identity, secrets, migrations, Deployment, Service(s), optional Ingress, policies."""

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    in_cluster_url: pulumi.Output[str]
    admin_username: pulumi.Output[str]
    deployment_ref: pulumi.Output[str]
    """NAMESPACE/NAME of the tracking Deployment."""
    endpoint: TrackingEndpoint

    def __init__(self, name: str, args: TrackingServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:tracking:TrackingServer", name, None, opts)
        names = WorkloadNames(name, COMPONENT, SERVICE_NAME)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = workload_namespace(name, args.namespace, names.labels, k8s_opts)
        ns_name = namespace.name
        identity, db_user = self._identity(name, args, ns_name, opts)
        grants = self._database_grants(name, args, ns_name, db_user, k8s_opts, opts)
        provider_class, secret_grants = secret_files(
            f"{name}-tracking", (args.admin_password, args.flask_secret_key, args.webhook_encryption_key), SERVICE_NAME, ns_name, names.labels,
            k8s_opts, readers=(principal(args.project_number, args.workload_pool, ns_name, identity.ksa_name),
                               pulumi.Output.concat("serviceAccount:", identity.gcp_service_account_email)),
            gcp_opts=child_options(self, opts))
        # URIs name the IAM user's output, so they wait for Cloud SQL to know the user.
        backend_uri, auth_uri = (pulumi.Output.all(db_user.name, database).apply(lambda values: postgres_uri(*values))
                                 for database in (args.tracking_database, args.auth_database))
        auth = args.settings
        auth_config = k8s.core.v1.ConfigMap(
            f"{name}-auth-config",
            metadata={"name": AUTH_CONFIG_MAP, "namespace": ns_name, "labels": names.labels},
            data=auth_uri.apply(lambda uri: {
                AUTH_CONFIG_FILE: auth_config_ini(auth.auth_default_permission, auth.auth_cache_ttl_seconds, uri,
                                                  iap=args.iap)}),
            opts=k8s_opts,
        )
        migration = self._migration(name, args, ns_name, identity, backend_uri, auth_uri,
                                    pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(
                                        depends_on=[*identity.grants, grants])))
        pod = workload_pod(
            service_account=identity.ksa_name, grace_seconds=GRACE_SECONDS,
            init_containers=[sql_proxy_sidecar(args.sql_connection_name, image=args.settings.sql_proxy_image)],
            containers=[self._server_container(args, backend_uri), metrics_exporter_container(image=args.image)],
            volumes=[tmp_volume(), auth_config_volume(auth_config.metadata["name"]), secrets_volume(provider_class),
                     logging_volume(namespace.logging_config_map)])
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=names.metadata(ns_name),
            # The auth config is read only at start: a change must roll the pods (IAP on or off changes the
            # container's env, which rolls them too).
            spec=deployment_spec(names, pod, {
                "mlflow.org/auth-settings": f"{auth.auth_default_permission},ttl={auth.auth_cache_ttl_seconds}"},
                replicas=auth.replicas),
            # The add-on mounts the files only once the pod's identity may read them.
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(
                depends_on=[migration, *secret_grants])),
        )
        service = self._exposure(name, args, names, ns_name, deployment, k8s_opts)
        self._policies(name, args, names, ns_name, k8s_opts)
        self._publish(args, names, ns_name, service, deployment)

    def _publish(self, args: TrackingServerArgs, names: WorkloadNames, ns_name: pulumi.Output[str],
                 service: k8s.core.v1.Service, deployment: k8s.apps.v1.Deployment) -> None:
        self.namespace = ns_name
        self.service_name = service.metadata["name"]
        self.in_cluster_url = pulumi.Output.all(service.metadata["name"], ns_name).apply(
            lambda parts: in_cluster_url(parts[0], parts[1], TRACKING_PORT))
        self.admin_username = pulumi.Output.from_input(ADMIN_USERNAME)
        self.deployment_ref = deployment_ref(deployment)
        self.endpoint = TrackingEndpoint(
            in_cluster_url=self.in_cluster_url,
            internal_url=(pulumi.Output.concat("http://", args.internal_lb_ip, f":{TRACKING_PORT}")
                          if args.internal_lb_ip is not None else None),
            namespace=ns_name, admin_username=ADMIN_USERNAME, admin_password=args.admin_password, ready=deployment,
            selector=names.selector)
        self.register_outputs({
            "namespace": self.namespace,
            "service_name": self.service_name,
            "in_cluster_url": self.in_cluster_url,
            "admin_username": self.admin_username,
            "deployment_ref": self.deployment_ref,
        })

    def _identity(self, name: str, args: TrackingServerArgs, ns_name: pulumi.Output[str],
                  opts: Optional[pulumi.ResourceOptions]) -> tuple[WorkloadIdentity, pulumi.Resource]:
        """The server's identity (bucket objects, Cloud SQL) and its IAM database user."""
        identity = WorkloadIdentity(f"{name}-identity", WorkloadIdentityArgs(
            project=args.project, account_id=args.account_id, workload_pool=args.workload_pool, namespace=ns_name,
            ksa_name=KSA_NAME, provider=args.provider, labels=k8s_labels(name, COMPONENT),
            project_roles=DATABASE_ROLES,
            bucket_grants=(BucketGrant(bucket=args.bucket_name, role="roles/storage.objectUser"),),
        ), child_options(self, opts))
        db_user = iam_database_user(
            f"{name}-tracking-db-user", project=args.project, instance=args.sql_instance_name,
            service_account_email=identity.gcp_service_account_email, opts=child_options(self, opts))
        return identity, db_user

    def _server_container(self, args: TrackingServerArgs, backend_uri: pulumi.Output[str]) -> dict:
        server_args = pulumi.Output.all(args.bucket_name, args.internal_lb_ip).apply(
            lambda values: tracking_args(bucket=values[0], namespace=args.namespace, workers=args.settings.workers,
                                         ingress_host=args.ingress_host, internal_ip=values[1]))
        env = tracking_env(args.settings.job_execution, backend_uri)
        if args.iap:
            env += iap_env(keys_url=GOOGLE_IAP_KEYS_URL, project_number=args.project_number,
                           backend_service_id=args.iap_backend_service_id, machine_users=args.machine_users,
                           domain_roles=args.domain_roles)
        return tracking_container(image=args.image, args=server_args, env=env,
                                  cpu=args.settings.cpu, memory=args.settings.memory)

    def _migration(self, name: str, args: TrackingServerArgs, ns_name: pulumi.Output[str],
                   identity: WorkloadIdentity, backend_uri: pulumi.Output[str], auth_uri: pulumi.Output[str],
                   opts: pulumi.ResourceOptions) -> k8s.batch.v1.Job:
        """Never patched in place: a new image version is a new Job. It reaches Cloud SQL through
        Workload Identity as the tracking user, so it waits (`opts`) for that identity's IAM bindings
        and for the grants that let the user create MLflow's tables."""
        migrate_init, migrate_main = migration_containers(image=args.image, backend_uri=backend_uri, auth_uri=auth_uri)
        labels = k8s_labels(name, "migration")
        return k8s.batch.v1.Job(
            f"{name}-migrate",
            metadata={"name": f"mlflow-migrate-{args.image_version[:12]}", "namespace": ns_name, "labels": labels},
            spec=run_once_job_spec(
                labels, MIGRATION_DEADLINE_SECONDS, identity.ksa_name,
                init_containers=[sql_proxy_sidecar(args.sql_connection_name, image=args.settings.sql_proxy_image),
                                 *migrate_init],
                containers=migrate_main, volumes=[tmp_volume("256Mi")]),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                delete_before_replace=True, custom_timeouts=job_wait(MIGRATION_DEADLINE_SECONDS))),
        )

    def _exposure(self, name: str, args: TrackingServerArgs, names: WorkloadNames, ns_name: pulumi.Output[str],
                  deployment: k8s.apps.v1.Deployment, k8s_opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
        """The ClusterIP Service, the internal load balancer and the Ingress, as the stack asks."""
        # Pulumi waits up to 10 minutes for a Service to reach a ready pod; created before the
        # Deployment it would time out behind Cloud SQL's creation and the migration Job.
        after_pods = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[deployment]))
        # The Service names its BackendConfig: that exists first, so the NEG is health-checked on /health.
        backend = self._backend_config(name, args, ns_name, names.labels, k8s_opts) if args.ingress_host else None
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=names.metadata(ns_name, backend.metadata["name"].apply(ingress_backend_annotations)
                                    if backend is not None else {}),
            spec=cluster_ip_service_spec(names.selector, TRACKING_PORT),
            opts=after_pods,
        )
        if args.internal_lb_ip is not None:
            k8s.core.v1.Service(
                f"{name}-internal-lb",
                metadata={"name": f"{SERVICE_NAME}-internal", "namespace": ns_name, "labels": names.labels,
                          "annotations": {"networking.gke.io/load-balancer-type": "Internal"}},
                spec=internal_lb_service_spec(names.selector, args.internal_lb_ip),
                opts=after_pods,
            )
        if args.ingress_host:
            self._ingress(name, args, ns_name, names.labels, service.metadata["name"], k8s_opts)
        return service

    def _policies(self, name: str, args: TrackingServerArgs, names: WorkloadNames, ns_name: pulumi.Output[str],
                  k8s_opts: pulumi.ResourceOptions) -> None:
        """Disruption budget, metrics collection, who may connect."""
        if args.settings.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb", metadata=names.metadata(ns_name), spec=pdb_spec(names.selector), opts=k8s_opts)
        pod_monitoring(f"{name}-pod-monitoring", names.metadata(ns_name),
                       pod_monitoring_spec(names.selector, ("metrics", "proxy-http")), k8s_opts)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=names.metadata(ns_name),
            spec=ingress_policy_spec(names.selector, network_policy_ingress(
                args.namespace, args.serving_namespace, args.serving_pod_cidr, bool(args.ingress_host))),
            opts=k8s_opts,
        )

    def _database_grants(self, name: str, args: TrackingServerArgs, ns_name: pulumi.Output[str],
                         tracking_db_user: pulumi.Resource, k8s_opts: pulumi.ResourceOptions,
                         opts: Optional[pulumi.ResourceOptions]) -> k8s.batch.v1.Job:
        """The database-admin identity (Cloud SQL's admin role, no password) and its Job granting
        the tracking user exactly MLflow's privileges: the running server holds no admin right."""
        job_labels = k8s_labels(name, "database-grants")
        admin = WorkloadIdentity(f"{name}-db-admin-identity", WorkloadIdentityArgs(
            project=args.project, account_id=args.db_admin_account_id, workload_pool=args.workload_pool,
            namespace=ns_name, ksa_name=DB_ADMIN_KSA_NAME, provider=args.provider, labels=job_labels,
            project_roles=DATABASE_ROLES,
        ), child_options(self, opts))
        admin_db_user = iam_database_user(
            f"{name}-db-admin-user", project=args.project, instance=args.sql_instance_name,
            service_account_email=admin.gcp_service_account_email, database_roles=(DATABASE_ADMIN_ROLE,),
            opts=child_options(self, opts))
        grant = grants_container(
            image=args.image, admin_uri=admin_db_user.name.apply(lambda user: postgres_uri(user, "postgres")),
            grantee=tracking_db_user.name, databases=[args.tracking_database, args.auth_database])
        return k8s.batch.v1.Job(
            f"{name}-db-grants",
            metadata={"name": f"mlflow-db-grants-{args.image_version[:12]}", "namespace": ns_name,
                      "labels": job_labels},
            spec=run_once_job_spec(
                job_labels, GRANTS_DEADLINE_SECONDS, admin.ksa_name,
                init_containers=[sql_proxy_sidecar(args.sql_connection_name, image=args.settings.sql_proxy_image)],
                containers=[grant], volumes=[tmp_volume("64Mi")],
                pod_failure_policy=fail_job_on_exit(GRANTS_CONTAINER, GRANTS_EXIT_ADMIN_MEMBER)),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(
                delete_before_replace=True, depends_on=[*admin.grants, admin_db_user],
                custom_timeouts=job_wait(GRANTS_DEADLINE_SECONDS))),
        )

    def _backend_config(self, name: str, args: TrackingServerArgs, ns_name: pulumi.Output[str], labels: dict,
                        k8s_opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            f"{name}-backend-config",
            api_version="cloud.google.com/v1",
            kind="BackendConfig",
            metadata={"name": BACKEND_CONFIG_NAME, "namespace": ns_name, "labels": labels},
            spec=backend_config_spec(args.security_policy_name, args.iap),
            opts=k8s_opts,
        )

    def _ingress(self, name: str, args: TrackingServerArgs, ns_name: pulumi.Output[str], labels: dict,
                 service_name: pulumi.Output[str], k8s_opts: pulumi.ResourceOptions) -> None:
        certificate = k8s.apiextensions.CustomResource(
            f"{name}-certificate",
            api_version="networking.gke.io/v1",
            kind="ManagedCertificate",
            metadata={"name": SERVICE_NAME, "namespace": ns_name, "labels": labels},
            spec={"domains": [args.ingress_host]},
            opts=k8s_opts,
        )
        frontend = k8s.apiextensions.CustomResource(
            f"{name}-frontend-config",
            api_version="networking.gke.io/v1beta1",
            kind="FrontendConfig",
            metadata={"name": FRONTEND_CONFIG_NAME, "namespace": ns_name, "labels": labels},
            spec={"sslPolicy": args.ssl_policy_name},
            opts=k8s_opts,
        )
        annotations = {
            "kubernetes.io/ingress.class": "gce",
            "networking.gke.io/managed-certificates": certificate.metadata["name"],
            "networking.gke.io/v1beta1.FrontendConfig": frontend.metadata["name"],
            "kubernetes.io/ingress.allow-http": "false",
        }
        if args.ingress_static_ip_name is not None:
            annotations["kubernetes.io/ingress.global-static-ip-name"] = args.ingress_static_ip_name
        k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata={"name": SERVICE_NAME, "namespace": ns_name, "labels": labels, "annotations": annotations},
            spec={"defaultBackend": {"service": {"name": service_name,
                                                 "port": {"number": TRACKING_PORT}}}},
            opts=k8s_opts,
        )


def backend_config_spec(security_policy: Any = None, iap: bool = False) -> dict:
    """Load-balancer backend settings: health check on /health, optional Cloud Armor and IAP."""
    spec: dict = {"healthCheck": {"type": "HTTP", "requestPath": "/health", "port": TRACKING_PORT},
                  "timeoutSec": 300, "connectionDraining": {"drainingTimeoutSec": 30},
                  "logging": {"enable": True, "sampleRate": 1.0}}
    if security_policy is not None:
        spec["securityPolicy"] = {"name": security_policy}
    if iap:
        # No oauthclientCredentials: IAP's Google-managed OAuth client (GKE 1.29.4-gke.1043000+), so
        # no OAuth client secret exists to be kept in a Kubernetes Secret.
        # https://cloud.google.com/kubernetes-engine/docs/how-to/ingress-configuration#enable_with_google_managed_oauth_client
        spec["iap"] = {"enabled": True}
    return spec


def ingress_backend_annotations(backend_config_name: str) -> dict[str, str]:
    """Container-native load balancing, health-checked on /health (the root answers 401)."""
    return {"cloud.google.com/neg": json.dumps({"ingress": True}),
            "cloud.google.com/backend-config": json.dumps({"default": backend_config_name})}
