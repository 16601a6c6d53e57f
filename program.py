"""The platform as one component: wires its components from validated settings, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pulumi

from infra.cloud_rules import HEALTH_CHECK_RANGES
from infra.apis import IAP_API, PUBSUB_API, REQUIRED_APIS, ProjectApis, ProjectApisArgs
from infra.chat import ChatChannel, ChatChannelArgs
from infra.cluster import GkeCluster, GkeClusterArgs
from infra.database import Database, DatabaseArgs
from infra.edge import EdgePolicy, EdgePolicyArgs
from infra.images import MlflowImages, MlflowImagesArgs, image_version
from infra.kms import EncryptionKeys, EncryptionKeysArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.naming import gcp_labels, gcp_name
from infra.network import PODS_RANGE_NAME, SERVICES_RANGE_NAME, Network, NetworkArgs
from infra.payload_store import PayloadStore, PayloadStoreArgs, dataset_id
from infra.registry import ImageRepository, ImageRepositoryArgs, PackageSource, PackageSourceArgs
from infra.secrets import (
    ADMIN_PASSWORD, DRIFT_PASSWORD, FLASK_SECRET_KEY, PAYLOAD_HASH_KEY, SERVING_PASSWORD, WEBHOOK_ENCRYPTION_KEY,
    WEBHOOK_SECRET, AppSecrets, AppSecretsArgs,
)
from infra.settings import NodePoolSettings, Settings
from infra.storage import ArtifactBucket, ArtifactBucketArgs
from k8s.namespace import SERVING_NAMESPACE, TRACKING_NAMESPACE
from k8s.access import TeamAccess, TeamAccessArgs, domain_roles
from k8s.drift import DRIFT_USERNAME, DriftJob, DriftJobArgs
from k8s.notify import ChatRelay, Notifications, NotificationsArgs
from k8s.serving import CONTAINER_NAME, SERVING_PORT, SERVING_USERNAME, ModelServing, ModelServingArgs
from k8s.tracking import LOAD_TEST_USERNAME, TrackingServer, TrackingServerArgs
from k8s.traffic import gateway_url

# The platform component's name in the stack `__main__.py` declares.
PLATFORM_NAME = "platform"
SERVING_PODS_RANGE_NAME = "serving-pods"
SERVING_SERVICES_RANGE_NAME = "serving-services"


@dataclass(frozen=True)
class Foundation:
    """What every later layer builds on: enabled APIs, network, images, keys, application secrets."""

    after_apis: pulumi.ResourceOptions
    """Options of every later component: a child of the platform that waits for the project's APIs."""
    labels: dict[str, str]
    network: Network
    registry: ImageRepository
    images: MlflowImages
    keys: EncryptionKeys
    app_secrets: AppSecrets


@dataclass(frozen=True)
class Clusters:
    platform: GkeCluster
    serving: GkeCluster
    """The serving cluster; the platform cluster itself when serving has none of its own."""


@dataclass(frozen=True)
class Data:
    bucket: ArtifactBucket
    database: Database


@dataclass(frozen=True)
class Serving:
    packages: PackageSource
    serving: ModelServing
    payloads: PayloadStore


class MlflowPlatform(pulumi.ComponentResource):
    """The whole platform for one stack's settings; `outputs` are the stack outputs it offers.

    A program of one's own declares it beside its other resources (examples/team_program)."""

    outputs: dict[str, pulumi.Output]

    def __init__(self, name: str, settings: Settings, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:program:MlflowPlatform", name, None, opts)
        # Its components were the stack's own children before this component existed: the alias keeps their
        # URNs, and the engine derives their descendants' old URNs from it, so existing stacks replace nothing.
        children = pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)])
        self.outputs = build_platform(settings, children)
        self.register_outputs(self.outputs)


def build_platform(settings: Settings, opts: pulumi.ResourceOptions) -> dict[str, pulumi.Output]:
    """Every component, each declared with `opts`; returns the stack outputs."""
    foundation = build_foundation(settings, opts)
    clusters = build_clusters(settings, foundation)
    data = build_data(settings, foundation)
    tracking = build_tracking(settings, foundation, clusters, data)
    chat = build_chat(settings, foundation) if settings.monitoring.notify.chat else None
    build_observability(settings, foundation, data, chat)
    build_notifications(settings, foundation, clusters, tracking, chat)
    serving = build_serving(settings, foundation, clusters, tracking) if settings.serving.model_name else None
    # With IAP, even without teams: the Job then deletes the roles of the last teams removed.
    if settings.edge.iap:
        build_access(settings, foundation, clusters, tracking)
    outputs = stack_outputs(settings, foundation, clusters, data, tracking, serving)
    if chat is not None:
        # The secret, not its value: `make chat-webhook` adds the URL as a version.
        outputs["chat_webhook_secret"] = pulumi.Output.from_input(chat.url_secret.secret_id)
    return outputs


def build_foundation(settings: Settings, opts: pulumi.ResourceOptions) -> Foundation:
    prefix = settings.name_prefix
    labels = gcp_labels(settings.environment)
    services = (REQUIRED_APIS + ((IAP_API,) if settings.edge.iap else ())
                + ((PUBSUB_API,) if settings.monitoring.notify.chat else ()))
    apis = ProjectApis(f"{prefix}-apis", ProjectApisArgs(project=settings.project, services=services), opts)
    after_apis = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[apis]))
    network = build_network(settings, labels, after_apis)
    registry = ImageRepository(f"{prefix}-images", ImageRepositoryArgs(
        project=settings.project, location=settings.region, repository_id=gcp_name(prefix, "images"), labels=labels,
        keep_versions=settings.storage.registry_keep_versions), after_apis)
    images = MlflowImages(f"{prefix}-build", MlflowImagesArgs(
        repository_url=registry.repository_url, registry_host=f"{settings.region}-docker.pkg.dev",
        prebuilt=(("tracking", settings.tracking.image), ("serving", settings.serving.image))), after_apis)
    keys = EncryptionKeys(f"{prefix}-keys", EncryptionKeysArgs(
        project=settings.project, location=settings.region, labels=labels, data_key=settings.cmek,
        protect=settings.protect), after_apis)
    app_secrets = AppSecrets(f"{prefix}-app-secrets", AppSecretsArgs(
        project=settings.project, location=settings.region, prefix=prefix, labels=labels,
        protect=settings.protect), after_apis)
    return Foundation(after_apis, labels, network, registry, images, keys, app_secrets)


def build_network(settings: Settings, labels: dict[str, str], opts: pulumi.ResourceOptions) -> Network:
    network, separate_serving = settings.network, settings.clusters.separate_serving
    secondary_ranges = {PODS_RANGE_NAME: network.pods_cidr, SERVICES_RANGE_NAME: network.services_cidr}
    if separate_serving:
        secondary_ranges |= {SERVING_PODS_RANGE_NAME: network.serving_pods_cidr,
                             SERVING_SERVICES_RANGE_NAME: network.serving_services_cidr}
    return Network(f"{settings.name_prefix}-net", NetworkArgs(
        project=settings.project,
        region=settings.region,
        subnet_cidr=network.subnet_cidr,
        secondary_ranges=secondary_ranges,
        private_services_cidr=network.private_services_cidr,
        labels=labels,
        internal_ips=(("tracking", network.tracking_lb_address),) if separate_serving else (),
        global_ingress_address=bool(settings.edge.ingress_host),
        proxy_only_cidr=network.proxy_only_cidr if settings.serving.model_name else None,
    ), opts)


def load_balancer_ranges(settings: Settings) -> tuple[str, ...]:
    """Where the serving Gateway's load balancer reaches the pods from: its proxies, Google's health checks."""
    return (settings.network.proxy_only_cidr, *HEALTH_CHECK_RANGES)


@dataclass(frozen=True)
class ClusterShape:
    """What differs between the two clusters: their ranges and their node pool."""

    role: Literal["platform", "serving"]
    master_cidr: str
    pods_range_name: str
    services_range_name: str
    pool: NodePoolSettings


def build_clusters(settings: Settings, foundation: Foundation) -> Clusters:
    # Each cluster's control-plane peering waits for the VPC's other peerings: private services access,
    # then the platform cluster's (GCP runs one peering operation per network at a time).
    network, clusters = settings.network, settings.clusters
    platform = build_cluster(settings, foundation, ClusterShape(
        "platform", network.master_cidr, PODS_RANGE_NAME, SERVICES_RANGE_NAME, clusters.platform),
        peerings_before=(foundation.network.private_services_connection,))
    if not clusters.separate_serving:
        return Clusters(platform=platform, serving=platform)
    serving = build_cluster(settings, foundation, ClusterShape(
        "serving", network.serving_master_cidr, SERVING_PODS_RANGE_NAME, SERVING_SERVICES_RANGE_NAME, clusters.serving),
        peerings_before=(foundation.network.private_services_connection, platform.control_plane))
    return Clusters(platform=platform, serving=serving)


def build_cluster(settings: Settings, foundation: Foundation, shape: ClusterShape,
                  peerings_before: tuple[pulumi.Resource, ...]) -> GkeCluster:
    gateway = bool(settings.serving.model_name) and (shape.role == "serving" or not settings.clusters.separate_serving)
    return GkeCluster(f"{settings.name_prefix}-{shape.role}", GkeClusterArgs(
        project=settings.project,
        location=settings.cluster_location,
        network_id=foundation.network.network_id,
        subnet_self_link=foundation.network.subnet_self_link,
        pods_range_name=shape.pods_range_name,
        services_range_name=shape.services_range_name,
        master_cidr=shape.master_cidr,
        workload_pool=settings.workload_pool,
        repository_location=settings.region,
        repository_id=foundation.registry.repository_id,
        labels=foundation.labels,
        clusters=settings.clusters,
        pool=shape.pool,
        protect=settings.protect,
        secrets_key_id=foundation.keys.secrets_key_id,
        secrets_key_ready=(foundation.keys.grants_propagated,),
        peerings_before=peerings_before,
        # The serving Gateway lives on the cluster serving runs on.
        gateway_api=gateway,
        load_balancer_ranges=load_balancer_ranges(settings) if gateway else (),
        load_balancer_port=SERVING_PORT if gateway else 0,
    ), foundation.after_apis)


def build_data(settings: Settings, foundation: Foundation) -> Data:
    keys = foundation.keys
    key_ready = (keys.grants_propagated,) if keys.data_key_id is not None else ()
    bucket = ArtifactBucket(f"{settings.name_prefix}-artifacts", ArtifactBucketArgs(
        project=settings.project,
        bucket_name=settings.bucket_name,
        location=settings.region,
        labels=foundation.labels,
        settings=settings.storage,
        protect=settings.protect,
        encryption_key_id=keys.data_key_id,
        encryption_key_ready=key_ready,
    ), foundation.after_apis)
    database = Database(f"{settings.name_prefix}-db", DatabaseArgs(
        project=settings.project,
        region=settings.region,
        network_id=foundation.network.network_id,
        private_services_connection=foundation.network.private_services_connection,
        settings=settings.database,
        labels=foundation.labels,
        protect=settings.protect,
        encryption_key_id=keys.data_key_id,
        encryption_key_ready=key_ready,
    ), foundation.after_apis)
    return Data(bucket=bucket, database=database)


def build_edge(settings: Settings, foundation: Foundation) -> Optional[EdgePolicy]:
    if not settings.edge.ingress_host:
        return None
    return EdgePolicy(f"{settings.name_prefix}-edge", EdgePolicyArgs(
        project=settings.project, labels=foundation.labels, settings=settings.edge,
        project_number=foundation.app_secrets.project_number), foundation.after_apis)


def build_tracking(settings: Settings, foundation: Foundation, clusters: Clusters, data: Data) -> TrackingServer:
    edge = build_edge(settings, foundation)
    return TrackingServer("mlflow", TrackingServerArgs(
        provider=clusters.platform.provider,
        project=settings.project,
        workload_pool=clusters.platform.workload_pool,
        account_id=settings.service_account_ids["tracking"],
        db_admin_account_id=settings.service_account_ids["dbadmin"],
        image=foundation.images.tracking_image,
        image_version=image_version(settings.tracking.image),
        bucket_name=data.bucket.bucket_name,
        sql_connection_name=data.database.connection_name,
        sql_instance_name=data.database.instance_name,
        tracking_database=data.database.tracking_database,
        auth_database=data.database.auth_database,
        admin_password=foundation.app_secrets.refs[ADMIN_PASSWORD],
        flask_secret_key=foundation.app_secrets.refs[FLASK_SECRET_KEY],
        webhook_encryption_key=foundation.app_secrets.refs[WEBHOOK_ENCRYPTION_KEY],
        project_number=foundation.app_secrets.project_number,
        settings=settings.tracking,
        ingress_host=settings.edge.ingress_host,
        ingress_static_ip_name=foundation.network.ingress_address_name,
        security_policy_name=edge.security_policy_name if edge else None,
        ssl_policy_name=edge.ssl_policy_name if edge else None,
        iap=settings.edge.iap,
        iap_backend_service_id=settings.edge.iap_backend_service_id,
        machine_users=((SERVING_USERNAME,) if settings.serving.model_name else ())
        + ((DRIFT_USERNAME,) if has_drift_job(settings) else ()) + (LOAD_TEST_USERNAME,),
        domain_roles=domain_roles(settings.access),
        internal_lb_ip=foundation.network.internal_addresses.get("tracking"),
        serving_pod_cidr=settings.network.serving_pods_cidr if settings.clusters.separate_serving else None,
    ), foundation.after_apis)


def build_access(settings: Settings, foundation: Foundation, clusters: Clusters, tracking: TrackingServer) -> TeamAccess:
    return TeamAccess("mlflow-access", TeamAccessArgs(
        provider=clusters.platform.provider, tracking=tracking.endpoint, image=foundation.images.tracking_image,
        image_version=image_version(settings.tracking.image), project_number=foundation.app_secrets.project_number,
        workload_pool=clusters.platform.workload_pool, settings=settings.access), foundation.after_apis)


def build_chat(settings: Settings, foundation: Foundation) -> ChatChannel:
    return ChatChannel(f"{settings.name_prefix}-chat", ChatChannelArgs(
        project=settings.project, location=settings.region, prefix=settings.name_prefix,
        environment=settings.environment, labels=foundation.labels,
        project_number=foundation.app_secrets.project_number, protect=settings.protect), foundation.after_apis)


def build_notifications(settings: Settings, foundation: Foundation, clusters: Clusters,
                        tracking: TrackingServer, chat: Optional[ChatChannel]) -> Notifications:
    return Notifications("mlflow-notify", NotificationsArgs(
        provider=clusters.platform.provider, tracking=tracking.endpoint, image=foundation.images.serving_image,
        image_version=image_version(settings.serving.image),
        webhook_secret=foundation.app_secrets.refs[WEBHOOK_SECRET],
        project_number=foundation.app_secrets.project_number,
        workload_pool=clusters.platform.workload_pool,
        chat=ChatRelay(chat.subscription, chat.url_secret) if chat else None), foundation.after_apis)


def build_observability(settings: Settings, foundation: Foundation, data: Data,
                        chat: Optional[ChatChannel]) -> Monitoring:
    return Monitoring(f"{settings.name_prefix}-monitoring", MonitoringArgs(
        project=settings.project,
        environment=settings.environment,
        tracking_namespace=TRACKING_NAMESPACE,
        serving_namespace=SERVING_NAMESPACE,
        bucket=data.bucket.bucket_name,
        serving_min_replicas=settings.serving.min_replicas,
        serving_max_replicas=settings.serving.max_replicas,
        labels=foundation.labels,
        settings=settings.monitoring,
        metric_prefix=settings.name_prefix,
        drift=has_drift_job(settings),
        chat_channel=chat.channel_id if chat else None,
    ), foundation.after_apis)


def build_serving(settings: Settings, foundation: Foundation, clusters: Clusters,
                  tracking: TrackingServer) -> Serving:
    packages = PackageSource(f"{settings.name_prefix}-packages", PackageSourceArgs(
        project=settings.project, location=settings.region, name_prefix=settings.name_prefix,
        labels=foundation.labels, private_repository=settings.serving.private_python_repository),
        foundation.after_apis)
    serving = ModelServing("mlflow-serving", ModelServingArgs(
        provider=clusters.serving.provider,
        tracking_provider=clusters.platform.provider,
        project=settings.project,
        workload_pool=clusters.serving.workload_pool,
        account_id=settings.service_account_ids["serving"],
        image=foundation.images.serving_image,
        setup_image=foundation.images.tracking_image,
        tracking=tracking.endpoint,
        serving_password=foundation.app_secrets.refs[SERVING_PASSWORD],
        payload_hash_key=foundation.app_secrets.refs[PAYLOAD_HASH_KEY],
        drift_password=foundation.app_secrets.refs[DRIFT_PASSWORD] if has_drift_job(settings) else None,
        project_number=foundation.app_secrets.project_number,
        tracking_workload_pool=clusters.platform.workload_pool,
        settings=settings.serving,
        package_index=packages.index,
        gateway_address_name=foundation.network.gateway_address_name,
        load_balancer_ranges=load_balancer_ranges(settings),
        gateway_after=(foundation.network.proxy_only_subnet, clusters.serving.load_balancer_firewall),
    ), foundation.after_apis)
    keys = foundation.keys
    payloads = PayloadStore(f"{settings.name_prefix}-payloads", PayloadStoreArgs(
        project=settings.project,
        location=settings.region,
        dataset_id=dataset_id(settings.name_prefix, settings.environment),
        sink_name=gcp_name(settings.name_prefix, "payloads"),
        cluster_name=clusters.serving.cluster_name,
        namespace=SERVING_NAMESPACE,
        container=CONTAINER_NAME,
        retention_days=settings.serving.payload_log.retention_days,
        labels=foundation.labels,
        # As the artifact bucket: what dev may lose with the stack, prod keeps (its destroy then fails).
        delete_contents_on_destroy=settings.storage.force_destroy,
        protect=settings.protect,
        encryption_key_id=keys.data_key_id,
        encryption_key_ready=(keys.grants_propagated,) if keys.data_key_id is not None else (),
    ), foundation.after_apis)
    if has_drift_job(settings):
        build_drift(settings, foundation, clusters, tracking, payloads, serving)
    return Serving(packages=packages, serving=serving, payloads=payloads)


def has_drift_job(settings: Settings) -> bool:
    """The drift job reads what the payload log samples; with no sample there is nothing to score."""
    return bool(settings.serving.model_name) and settings.serving.payload_log.sample_rate > 0


def build_drift(settings: Settings, foundation: Foundation, clusters: Clusters, tracking: TrackingServer,
                payloads: PayloadStore, serving: ModelServing) -> DriftJob:
    """The drift job, as its own MLflow user, which the serving-user Job creates (`serving.users_ready`)."""
    redact = settings.serving.payload_log.redact
    return DriftJob("mlflow-drift", DriftJobArgs(
        provider=clusters.platform.provider, tracking=tracking.endpoint, project=settings.project,
        account_id=settings.service_account_ids["drift"], workload_pool=clusters.platform.workload_pool,
        project_number=foundation.app_secrets.project_number, image=foundation.images.serving_image,
        password=foundation.app_secrets.refs[DRIFT_PASSWORD], user_ready=serving.users_ready,
        dataset=payloads.dataset, redacted=tuple(sorted({*redact.drop, *redact.hash})),
        settings=settings.monitoring.drift), foundation.after_apis)


def stack_outputs(settings: Settings, foundation: Foundation, clusters: Clusters, data: Data,
                  tracking: TrackingServer, serving: Optional[Serving]) -> dict[str, pulumi.Output]:
    """Every stack output, in one place; `make promote` and `rotate-secret` read the Deployments'."""
    outputs: dict[str, pulumi.Output] = {
        "platform_cluster_name": clusters.platform.cluster_name,
        "serving_cluster_name": clusters.serving.cluster_name,
        "platform_kubeconfig": clusters.platform.kubeconfig,
        "serving_kubeconfig": clusters.serving.kubeconfig,
        "artifact_bucket": data.bucket.bucket_name,
        "sql_connection_name": data.database.connection_name,
        "repository_url": foundation.registry.repository_url,
        "tracking_image": foundation.images.tracking_image,
        "serving_image": foundation.images.serving_image,
        "tracking_in_cluster_url": tracking.in_cluster_url,
        "tracking_admin_username": tracking.admin_username,
        "tracking_deployment": tracking.deployment_ref,
        # The secrets, not their values: `make rotate-secret` adds versions the stack does not know.
        "app_secrets": foundation.app_secrets.secret_ids,
        # What a rig beside the platform (loadtest/'s stack) needs to add its node pool and identities.
        "project": pulumi.Output.from_input(settings.project),
        "region": pulumi.Output.from_input(settings.region),
        "zone": pulumi.Output.from_input(settings.zone),
        "environment": pulumi.Output.from_input(settings.environment),
        "project_number": foundation.app_secrets.project_number,
        "serving_cluster_location": pulumi.Output.from_input(settings.cluster_location),
        "serving_workload_pool": clusters.serving.workload_pool,
        "serving_node_service_account": clusters.serving.node_service_account_email,
    }
    if settings.edge.ingress_host:
        outputs["tracking_url"] = pulumi.Output.from_input(f"https://{settings.edge.ingress_host}")
        outputs["ingress_ip"] = foundation.network.ingress_ip
    # A separate serving cluster reaches tracking through its internal load balancer.
    if tracking.endpoint.internal_url is not None:
        outputs["tracking_internal_url"] = tracking.endpoint.internal_url
    if serving is not None:
        outputs["serving_deployment"] = serving.serving.deployment_ref
        outputs["package_index_url"] = serving.packages.index_url
        if serving.packages.private_repository_url is not None:
            outputs["private_python_repository_url"] = serving.packages.private_repository_url
        outputs["serving_model_uri"] = serving.serving.model_uri
        # Where the payload log lands (the drift job reads the table).
        outputs["payload_log_dataset"] = serving.payloads.dataset
        outputs["payload_log_table"] = serving.payloads.table
        # The split: callers inside the VPC (and the load rig) send requests to serving_url/invocations;
        # the champion's Service would bypass the split and the mirror.
        outputs["serving_route"] = serving.serving.route_ref
        outputs["serving_gateway_address"] = foundation.network.gateway_address
        outputs["serving_url"] = foundation.network.gateway_address.apply(gateway_url)
        if serving.serving.challenger_deployment_ref is not None:
            outputs["serving_challenger_deployment"] = serving.serving.challenger_deployment_ref
    return outputs
