"""Model serving: `mlflow models serve` of the registry alias, a read-only user, autoscaling; with a
challenger, a second track serving another alias, and the internal Gateway splitting traffic between them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.identity import WorkloadIdentity, WorkloadIdentityArgs
from infra.naming import child_options, job_wait, k8s_labels
from infra.registry import PACKAGE_READER_ROLE, PackageIndex
from infra.secrets import ADMIN_PASSWORD, DRIFT_PASSWORD, PAYLOAD_HASH_KEY, SERVING_PASSWORD, SecretRef
from infra.settings import PayloadLogSettings, ServingSettings
from k8s.drift import DRIFT_USERNAME, MONITORING_EXPERIMENT
from k8s.logs import LOGGING_PATH, logging_mount, logging_volume
from k8s.namespace import SERVING_NAMESPACE, workload_namespace
from k8s.secret_files import file_env, principal, secret_files, secrets_mount, secrets_volume, with_file_env
from k8s.pods import container_security_context, drain_on_stop, http_probe, resources, tmp_mount, tmp_volume
from k8s.tracking import TrackingEndpoint
from k8s.traffic import PATCH_FORCE, Backend, gateway_api_gate, health_check_policy, route_spec, traffic_split
from k8s.workload import (
    WorkloadNames, cluster_ip_service_spec, deployment_ref, deployment_spec, ingress_policy_spec,
    pdb_spec, pod_monitoring, pod_monitoring_spec, run_once_job_spec, tcp_ports, workload_pod,
)

SERVING_PORT = 8080
COMPONENT = "serving"
CONTAINER_NAME = "serving"
SERVICE_NAME = "mlflow-serving"
# The two tracks of a served model: pod templates and Services carry TRACK_LABEL, and Managed Prometheus
# copies it onto every series of their pods as TRACK_METRIC_LABEL (tools/ops and tools/local import these).
TRACK_LABEL = "mlflow.org/track"
TRACK_METRIC_LABEL = "track"
CHAMPION = "champion"
CHALLENGER = "challenger"
KSA_NAME = "mlflow-serving"
SETUP_KSA_NAME = "mlflow-serving-setup"
SERVING_USERNAME = "mlflow-serving"
SETUP_MODULE = "mlflow_serving_user"  # in the tracking image (mlflow_image/)
ALIAS_ANNOTATION = "mlflow.org/model-uri"
ROLLOUT_ANNOTATION = "mlflow.org/rollout-token"
LIVE_PATH = "/live"  # mlflow_serving: 200 while the process runs
READY_PATH = "/ping"  # MLflow's: 200 once the model is loaded, 503 with the reason before
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
SETUP_DEADLINE_SECONDS = 600
# Restored model environments (mlflow_serving.environment). An emptyDir: the namespaces enforce the
# restricted Pod Security Standard, which forbids hostPath, and a shared ReadWriteMany volume
# (Filestore) costs more per month than every rebuild it would save. It survives container restarts
# (an OOM kill does not rebuild); a new pod rebuilds in seconds from the regional package cache.
ENV_VOLUME = "model-envs"
ENV_CACHE_PATH = "/var/cache/mlflow-envs"
# Shutdown of a serving pod: the Gateway's internal Application Load Balancer detaches a NEG endpoint
# within ~10 s of the pod's deletion (as tracking's Ingress does), in-cluster callers' kube-proxy rules
# within ~1-2 s; 15 s covers both.
DRAIN_SECONDS = 15
# drain + 20 s for predictions in flight (milliseconds each; large batches take longer).
GRACE_SECONDS = DRAIN_SECONDS + 20


# --- pure builders --------------------------------------------------------------------------
def model_uri(model_name: str, alias: str) -> str:
    return f"models:/{model_name}@{alias}"


def payload_log_args(settings: PayloadLogSettings, track: str = CHAMPION) -> list[str]:
    """The payload log's sample rate, redaction and the track its entries name (mlflow_serving/payload_log.py);
    none when it is off."""
    if settings.sample_rate <= 0:
        return []
    return ["--payload-sample-rate", str(settings.sample_rate), "--track", track,
            *(["--payload-drop", json.dumps(list(settings.redact.drop))] if settings.redact.drop else []),
            *(["--payload-hash", json.dumps(list(settings.redact.hash))] if settings.redact.hash else [])]


def serving_args(model_name: str, alias: str, workers: int = 1, max_batch_size: int = 1,
                 max_batch_delay_ms: int = 0, env_timeout_seconds: int = 300, package_index: Any = "",
                 payload_log: PayloadLogSettings = PayloadLogSettings(), track: str = CHAMPION) -> list:
    """`mlflow models serve` as packaged in the serving image (mlflow_serving): the same answers,
    plus Prometheus metrics at /metrics, concurrent /invocations batched into one predict when
    max_batch_size > 1, the model's recorded environment restored from `package_index`, and a
    sample of requests logged (redacted) on stdout."""
    return [
        "-m", "mlflow_serving",
        "--model-uri", model_uri(model_name, alias),
        "--host", "0.0.0.0",
        "--port", str(SERVING_PORT),
        "--workers", str(workers),
        "--max-batch-size", str(max_batch_size),
        "--max-batch-delay-ms", str(max_batch_delay_ms),
        "--env-cache", ENV_CACHE_PATH,
        "--env-timeout", str(env_timeout_seconds),
        *(["--package-index", package_index] if package_index else []),
        *payload_log_args(payload_log, track),
        "--log-config", LOGGING_PATH,
    ]


def env_volume(size_gi: int) -> dict:
    return {"name": ENV_VOLUME, "emptyDir": {"sizeLimit": f"{size_gi}Gi"}}


def rollout_annotations(model_name: str, alias: str, rollout_token: str) -> dict[str, str]:
    """Pod-template annotations: a new alias or token is a new template, so the pods roll
    and load whatever version the alias points to now."""
    return {ALIAS_ANNOTATION: model_uri(model_name, alias), ROLLOUT_ANNOTATION: rollout_token or "initial"}


def deployment_annotations() -> dict[str, str]:
    """`pulumi up` creates and updates the Deployment without waiting for ready pods: on a fresh
    platform no version is behind the alias yet, so the pods wait (unready) and Pulumi's await
    would fail the whole update after ~10 minutes. `make promote` waits for the rollout itself."""
    return {SKIP_AWAIT_ANNOTATION: "true"}


# Where the serving image's payload log reads its HMAC key (mlflow_serving/payload_log.py).
PAYLOAD_KEY_ENV = "MLFLOW_SERVING_PAYLOAD_KEY"
# Env vars read from the Secret Manager files (mlflow_fileenv): env var -> file name.
SERVING_FILE_ENV = {"MLFLOW_TRACKING_PASSWORD": SERVING_PASSWORD, PAYLOAD_KEY_ENV: PAYLOAD_HASH_KEY}
SETUP_FILE_ENV = {"MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "SERVING_PASSWORD": SERVING_PASSWORD}
# With the drift job, the same Job creates its user too (k8s/drift.py).
DRIFT_SETUP_FILE_ENV = {**SETUP_FILE_ENV, "DRIFT_PASSWORD": DRIFT_PASSWORD}


# Each worker scores on one core: BLAS and OpenMP (scikit-learn, XGBoost) would otherwise start a
# thread per node CPU in every worker and be throttled against the pod's CPU limit.
ONE_THREAD = [{"name": name, "value": "1"} for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")]


def serving_env(tracking_url: Any) -> list[dict]:
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
        {"name": "MLFLOW_TRACKING_USERNAME", "value": SERVING_USERNAME},
        *file_env(SERVING_FILE_ENV),
        *ONE_THREAD,
    ]


def serving_container(*, image: Any, model_name: str, alias: str, workers: int, env: list[dict], cpu: str,
                      memory: str, max_batch_size: int = 1, max_batch_delay_ms: int = 0,
                      env_timeout_seconds: int = 300, package_index: Any = "",
                      payload_log: PayloadLogSettings = PayloadLogSettings(), track: str = CHAMPION) -> dict:
    command, args = with_file_env(["python"], serving_args(model_name, alias, workers, max_batch_size,
                                                           max_batch_delay_ms, env_timeout_seconds, package_index,
                                                           payload_log, track),
                                  SERVING_FILE_ENV)
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "command": command,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": SERVING_PORT}],
        # The server answers /live at once and loads the model in the background; /ping is 503
        # until then (no version behind the alias yet, a download, 403): unready, never killed.
        "startupProbe": http_probe(LIVE_PATH, "http", period=5, failures=24),
        "readinessProbe": http_probe(READY_PATH, "http", period=5, failures=3),
        "livenessProbe": http_probe(LIVE_PATH, "http", period=20, failures=3),
        "lifecycle": drain_on_stop(DRAIN_SECONDS),
        "resources": resources(cpu, memory),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount(), logging_mount(), {"name": ENV_VOLUME, "mountPath": ENV_CACHE_PATH}],
    }


def setup_job_name(model_name: str, alias: str, rollout_token: str) -> str:
    """One Job per (model, alias, token): a change reruns the grants. A new image changes the Job's
    spec, which Pulumi replaces too."""
    digest = hashlib.sha256("|".join([model_name, alias, rollout_token]).encode()).hexdigest()[:10]
    return f"mlflow-serving-user-{digest}"


def setup_container(*, image: Any, tracking_url: Any, admin_username: str, model_name: str,
                    drift: bool = False) -> dict:
    """The image's serving-user module as the admin, the passwords read from the Job's Secret Manager files;
    with `drift`, it also creates the drift job's user and grants it what the job needs."""
    file_env_names = DRIFT_SETUP_FILE_ENV if drift else SETUP_FILE_ENV
    command, args = with_file_env(["python"], ["-m", SETUP_MODULE], file_env_names)
    drift_env = [{"name": "DRIFT_USERNAME", "value": DRIFT_USERNAME},
                 {"name": "MONITORING_EXPERIMENT", "value": MONITORING_EXPERIMENT}] if drift else []
    return {
        "name": "ensure-serving-user",
        "image": image,
        "command": command,
        "args": args,
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
            {"name": "MLFLOW_TRACKING_USERNAME", "value": admin_username},
            {"name": "SERVING_USERNAME", "value": SERVING_USERNAME},
            *file_env(file_env_names),
            {"name": "MODEL_NAME", "value": model_name},
            *drift_env,
        ],
        "resources": resources("100m", "256Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount()],
    }


def track_names(instance: str, track: str) -> WorkloadNames:
    """A track's objects: the champion keeps the names serving always had; the challenger's add
    `-challenger`, its instance too, so no champion selector matches a challenger pod."""
    suffix = "" if track == CHAMPION else f"-{CHALLENGER}"
    return WorkloadNames(instance + suffix, COMPONENT, SERVICE_NAME + suffix, extra_labels={TRACK_LABEL: track})


def hpa_spec(deployment_name: str, min_replicas: int, max_replicas: int, target_cpu_percent: int) -> dict:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target_cpu_percent}}}],
        # Scale down slowly: a model load costs far more than an idle replica.
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    }


# --- component ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelServingArgs:
    provider: k8s.Provider
    """Provider of the cluster serving runs on."""
    tracking_provider: k8s.Provider
    """Provider of the platform cluster, where the serving-user Job talks to tracking."""
    project: str
    """GCP project (Workload Identity)."""
    workload_pool: pulumi.Input[str]
    """PROJECT.svc.id.goog, from the cluster."""
    account_id: str
    """GCP service account id of the serving pods (naming.service_account_id)."""
    image: pulumi.Input[str]
    """Serving image by digest."""
    setup_image: pulumi.Input[str]
    """Image with MLflow's auth client (the tracking image) for the serving-user Job."""
    tracking: TrackingEndpoint
    """Where tracking is, its admin, and when it serves (the serving-user Job waits for it)."""
    serving_password: SecretRef
    """Secret Manager secret of the serving user's password."""
    payload_hash_key: SecretRef
    """Secret Manager secret of the payload log's HMAC key (hashed columns); only the serving pods read it."""
    project_number: pulumi.Input[str]
    """Project number: the Workload Identity principals the Secret Manager add-on authenticates as."""
    tracking_workload_pool: pulumi.Input[str]
    """Workload pool of the platform cluster, where the serving-user Job runs."""
    settings: ServingSettings
    """The model and alias served, replicas and autoscaling, batching, resources, environment restores."""
    namespace: str = SERVING_NAMESPACE
    """Namespace of the serving Deployment."""
    gateway_address_name: pulumi.Input[str] = ""
    """Name of the reserved internal address the serving Gateway listens on."""
    load_balancer_ranges: tuple[str, ...] = ()
    """Where the Gateway's proxies and health checks come from: the proxy-only subnet, Google's probe ranges."""
    gateway_after: tuple[pulumi.Resource, ...] = ()
    """What the Gateway needs first and must outlive on a destroy: its proxy-only subnet, the firewall rule."""
    package_index: Optional[PackageIndex] = None
    """Where the pods restore model environments from (they may read only that repository); None: pypi.org."""
    drift_password: Optional[SecretRef] = None
    """Secret Manager secret of the drift job's MLflow user, which the serving-user Job then creates and grants
    too; None without the drift job."""

    def __post_init__(self) -> None:
        if not self.settings.model_name:
            raise ValueError("ModelServingArgs.settings.model_name: serving needs a registered model to serve")
        if not self.load_balancer_ranges:
            raise ValueError("ModelServingArgs.load_balancer_ranges: the Gateway's proxies and health checks "
                             "need a way to the serving pods")


class ModelServing(pulumi.ComponentResource):
    """Serves `models:/NAME@ALIAS` with a read-only identity, autoscaled and disruption-budgeted."""

    namespace: pulumi.Output[str]
    model_uri: pulumi.Output[str]
    deployment_ref: pulumi.Output[str]
    """NAMESPACE/NAME of the serving Deployment (the champion track)."""
    challenger_deployment_ref: Optional[pulumi.Output[str]]
    """NAMESPACE/NAME of the challenger Deployment; None without a challenger."""
    route_ref: pulumi.Output[str]
    """NAMESPACE/NAME of the HTTPRoute that weights the tracks."""
    users_ready: pulumi.Resource
    """The serving-user Job: the machine users exist with their grants once it completed."""

    def __init__(self, name: str, args: ModelServingArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:serving:ModelServing", name, None, opts)
        names = WorkloadNames(name, COMPONENT, SERVICE_NAME)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = workload_namespace(name, args.namespace, names.labels, k8s_opts)
        ns_name = namespace.name
        # Its own identity: the pods must not inherit the node's service account.
        identity = WorkloadIdentity(f"{name}-identity", WorkloadIdentityArgs(
            project=args.project,
            account_id=args.account_id,
            workload_pool=args.workload_pool,
            namespace=ns_name,
            ksa_name=KSA_NAME,
            provider=args.provider,
            labels=names.labels,
        ), child_options(self, opts))
        serving_class, serving_grants = secret_files(
            name, (args.serving_password, args.payload_hash_key), SERVICE_NAME, ns_name, names.labels, k8s_opts,
            readers=(principal(args.project_number, args.workload_pool, ns_name, identity.ksa_name),
                     pulumi.Output.concat("serviceAccount:", identity.gcp_service_account_email)),
            gcp_opts=child_options(self, opts))
        setup = self._setup_job(name, args, opts)
        self.users_ready = setup
        if args.package_index:
            # Its only GCP role: reading the package index, on that repository alone.
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-package-reader", project=args.project, location=args.package_index.location,
                repository=args.package_index.repository_id, role=PACKAGE_READER_ROLE,
                member=identity.gcp_service_account_email.apply(lambda email: f"serviceAccount:{email}"),
                opts=child_options(self, opts))
        volumes = [tmp_volume("4Gi"), secrets_volume(serving_class), logging_volume(namespace.logging_config_map),
                   env_volume(args.settings.env_cache_gi)]
        # One serving user reads the model whatever its alias: both tracks wait for the same grants.
        track_opts = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[setup, *serving_grants]))
        challenger = args.settings.challenger
        gate = gateway_api_gate(name, ns_name, k8s_labels(name, "gateway-api-gate"), args.image, k8s_opts)
        champion_deployment, champion_service = self._track(
            track_names(name, CHAMPION), args.settings.model_alias, args, identity.ksa_name, volumes, ns_name,
            track_opts, gate)
        challenger_track = self._track(track_names(name, CHALLENGER), challenger.alias, args, identity.ksa_name,
                                       volumes, ns_name, track_opts, gate) if challenger else None
        route = traffic_split(name, names.metadata(ns_name), args.gateway_address_name, route_spec(
            names.name, Backend(SERVICE_NAME, SERVING_PORT),
            Backend(track_names(name, CHALLENGER).name, SERVING_PORT) if challenger else None,
            challenger.weight if challenger else 0, challenger.mirror if challenger else False),
            gateway_after=(*args.gateway_after, gate),
            backends=(champion_service, *([challenger_track[1]] if challenger_track else [])), opts=k8s_opts)
        self.namespace = ns_name
        self.model_uri = pulumi.Output.from_input(model_uri(args.settings.model_name, args.settings.model_alias))
        self.deployment_ref = deployment_ref(champion_deployment)
        self.challenger_deployment_ref = deployment_ref(challenger_track[0]) if challenger_track else None
        self.route_ref = pulumi.Output.concat(route.metadata["namespace"], "/", route.metadata["name"])
        self.register_outputs({"namespace": self.namespace, "model_uri": self.model_uri, "deployment_ref": self.deployment_ref,
                               "challenger_deployment_ref": self.challenger_deployment_ref,
                               "route_ref": self.route_ref})

    def _track(self, names: WorkloadNames, alias: str, args: ModelServingArgs, service_account: pulumi.Output[str],
               volumes: list[dict], ns_name: pulumi.Output[str], opts: pulumi.ResourceOptions,
               gate: k8s.batch.v1.Job) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
        """One track: its Deployment serving `alias`, autoscaled and budgeted alike, its Service and its
        health check (after `gate`, the Job that waits for the HealthCheckPolicy CRD)."""
        deployment = k8s.apps.v1.Deployment(
            f"{names.instance}-deployment",
            metadata=names.metadata(ns_name, deployment_annotations()),
            # No `replicas`: the HPA owns the count.
            spec=deployment_spec(names, workload_pod(
                service_account=service_account, grace_seconds=GRACE_SECONDS,
                containers=[self._container(args, alias, names.labels[TRACK_LABEL])], volumes=volumes), rollout_annotations(
                args.settings.model_name, alias, args.settings.rollout_token), replicas=None),
            opts=opts,
        )
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        service = self._scaling_and_exposure(names.instance, args, names, ns_name, deployment, k8s_opts)
        health_check_policy(f"{names.instance}-health-check", names.metadata(ns_name), names.name, READY_PATH,
                            pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[service, gate])))
        return deployment, service

    def _container(self, args: ModelServingArgs, alias: str, track: str) -> dict:
        serving = args.settings
        return serving_container(
            image=args.image, model_name=serving.model_name, alias=alias, workers=serving.server_workers,
            env=serving_env(args.tracking.client_url), cpu=serving.cpu, memory=serving.memory,
            max_batch_size=serving.max_batch_size, max_batch_delay_ms=serving.max_batch_delay_ms,
            env_timeout_seconds=serving.env_timeout_seconds,
            package_index=args.package_index.url if args.package_index else "", payload_log=serving.payload_log,
            track=track)

    def _setup_job(self, name: str, args: ModelServingArgs, opts: Optional[pulumi.ResourceOptions]) -> k8s.batch.v1.Job:
        """The Job that creates the serving user (and the drift user) runs beside tracking as the admin: its own
        KSA, without a GSA, may read exactly the admin password and those users' passwords."""
        tracking = args.tracking
        tracking_opts = pulumi.ResourceOptions(parent=self, provider=args.tracking_provider)
        labels = k8s_labels(name, "serving-setup")
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-setup-ksa", metadata={"name": SETUP_KSA_NAME, "namespace": tracking.namespace, "labels": labels},
            automount_service_account_token=False, opts=tracking_opts)
        passwords = (tracking.admin_password, args.serving_password, *([args.drift_password] if args.drift_password else []))
        setup_class, setup_grants = secret_files(
            f"{name}-setup", passwords, SETUP_KSA_NAME, tracking.namespace, labels, tracking_opts,
            readers=(principal(args.project_number, args.tracking_workload_pool, tracking.namespace,
                               ksa.metadata["name"]),),
            gcp_opts=child_options(self, opts))
        container = setup_container(image=args.setup_image, tracking_url=tracking.in_cluster_url,
                                    admin_username=tracking.admin_username, model_name=args.settings.model_name,
                                    drift=args.drift_password is not None)
        return k8s.batch.v1.Job(
            f"{name}-setup",
            metadata={"name": setup_job_name(args.settings.model_name, args.settings.model_alias,
                                             args.settings.rollout_token),
                      "namespace": tracking.namespace, "labels": labels},
            spec=run_once_job_spec(labels, SETUP_DEADLINE_SECONDS, ksa.metadata["name"], containers=[container],
                                   volumes=[tmp_volume("64Mi"), secrets_volume(setup_class)],
                                   backoff_limit=6),
            opts=pulumi.ResourceOptions.merge(tracking_opts, pulumi.ResourceOptions(
                depends_on=[tracking.ready, *setup_grants], delete_before_replace=True,
                custom_timeouts=job_wait(SETUP_DEADLINE_SECONDS))),
        )

    def _scaling_and_exposure(self, name: str, args: ModelServingArgs, names: WorkloadNames,
                              ns_name: pulumi.Output[str], deployment: k8s.apps.v1.Deployment,
                              k8s_opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
        """HPA, disruption budget, metrics collection, the Service and who may call it."""
        # A canary holds the champion's minReplicas (field manager mlflow-promote): the next `up` takes it back.
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa", metadata=names.metadata(ns_name, PATCH_FORCE),
            spec=hpa_spec(names.name, args.settings.min_replicas, args.settings.max_replicas,
                          args.settings.target_cpu_percent),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[deployment])),
        )
        if args.settings.min_replicas > 1:
            # Pods waiting for their model are running but unready; evicting them disrupts nothing.
            # The default (IfHealthyBudget) would let a platform still waiting for its first model
            # block every node drain and upgrade.
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb", metadata=names.metadata(ns_name),
                spec=pdb_spec(names.selector, unhealthyPodEvictionPolicy="AlwaysAllow"), opts=k8s_opts)
        pod_monitoring(f"{name}-pod-monitoring", names.metadata(ns_name),
                       pod_monitoring_spec(names.selector, ("http",), {TRACK_LABEL: TRACK_METRIC_LABEL}), k8s_opts)
        service = k8s.core.v1.Service(
            f"{name}-service",
            # Pulumi's Service await wants a ready pod within 10 minutes: none is before a model exists.
            metadata=names.metadata(ns_name, {SKIP_AWAIT_ANNOTATION: "true"}),
            spec=cluster_ip_service_spec(names.selector, SERVING_PORT),
            opts=k8s_opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol", metadata=names.metadata(ns_name),
            # Any pod of this cluster may call the model directly; the Gateway's proxies and health checks
            # too, so any client in the VPC and the region may call it through the Gateway (serving_url).
            spec=ingress_policy_spec(names.selector, [
                {"from": [{"namespaceSelector": {}}], "ports": tcp_ports(SERVING_PORT)},
                {"from": [{"ipBlock": {"cidr": cidr}} for cidr in args.load_balancer_ranges],
                 "ports": tcp_ports(SERVING_PORT)}]),
            opts=k8s_opts,
        )
        return service
