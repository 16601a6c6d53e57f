"""Wires the platform's components from validated settings, layer by layer; returns the stack outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pulumi

from infra.apis import IAP_API, REQUIRED_APIS, ProjectApis, ProjectApisArgs
from infra.cluster import GkeCluster, GkeClusterArgs
from infra.config import Settings
from infra.database import Database, DatabaseArgs
from infra.edge import EdgePolicy, EdgePolicyArgs
from infra.images import MlflowImages, MlflowImagesArgs, image_version
from infra.kms import EncryptionKeys, EncryptionKeysArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.naming import gcp_labels, gcp_name
from infra.network import PODS_RANGE_NAME, SERVICES_RANGE_NAME, Network, NetworkArgs
from infra.registry import ImageRepository, ImageRepositoryArgs, PackageSource, PackageSourceArgs
from infra.secrets import ADMIN_PASSWORD, FLASK_SECRET_KEY, SERVING_PASSWORD, AppSecrets, AppSecretsArgs
from infra.storage import ArtifactBucket, ArtifactBucketArgs
from k8s.namespace import SERVING_NAMESPACE, TRACKING_NAMESPACE
from k8s.serving import ModelServing, ModelServingArgs
from k8s.tracking import TrackingServer, TrackingServerArgs

SERVING_PODS_RANGE_NAME = "serving-pods"
SERVING_SERVICES_RANGE_NAME = "serving-services"


@dataclass(frozen=True)
class Foundation:
    """What every later layer builds on: enabled APIs, network, images, keys, application secrets."""

    after_apis: pulumi.ResourceOptions
    """Options of every GCP component: they wait for the project's APIs."""
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


def build_platform(settings: Settings) -> dict[str, pulumi.Output]:
    foundation = build_foundation(settings)
    clusters = build_clusters(settings, foundation)
    data = build_data(settings, foundation)
    tracking = build_tracking(settings, foundation, clusters, data)
    build_observability(settings, foundation, data)
    serving = build_serving(settings, foundation, clusters, tracking) if settings.model_name else None
    return stack_outputs(settings, foundation, clusters, data, tracking, serving)


def build_foundation(settings: Settings) -> Foundation:
    prefix = settings.name_prefix
    labels = gcp_labels(settings.environment)
    apis = ProjectApis(f"{prefix}-apis", ProjectApisArgs(
        project=settings.project, services=REQUIRED_APIS + (IAP_API,) if settings.iap else REQUIRED_APIS))
    after_apis = pulumi.ResourceOptions(depends_on=[apis])
    network = build_network(settings, labels, after_apis)
    registry = ImageRepository(f"{prefix}-images", ImageRepositoryArgs(
        project=settings.project, location=settings.region, repository_id=gcp_name(prefix, "images"), labels=labels,
        keep_versions=settings.registry_keep_versions), after_apis)
    images = MlflowImages(f"{prefix}-build", MlflowImagesArgs(
        repository_url=registry.repository_url, registry_host=f"{settings.region}-docker.pkg.dev",
        prebuilt=(("tracking", settings.tracking_image), ("serving", settings.serving_image))), after_apis)
    keys = EncryptionKeys(f"{prefix}-keys", EncryptionKeysArgs(
        project=settings.project, location=settings.region, labels=labels, data_key=settings.cmek,
        protect=settings.protect), after_apis)
    app_secrets = AppSecrets(f"{prefix}-app-secrets", AppSecretsArgs(
        project=settings.project, location=settings.region, prefix=prefix, labels=labels,
        protect=settings.protect), after_apis)
    return Foundation(after_apis, labels, network, registry, images, keys, app_secrets)


def build_network(settings: Settings, labels: dict[str, str], opts: pulumi.ResourceOptions) -> Network:
    secondary_ranges = {PODS_RANGE_NAME: settings.pods_cidr, SERVICES_RANGE_NAME: settings.services_cidr}
    if settings.serving_cluster:
        secondary_ranges |= {SERVING_PODS_RANGE_NAME: settings.serving_pods_cidr,
                             SERVING_SERVICES_RANGE_NAME: settings.serving_services_cidr}
    return Network(f"{settings.name_prefix}-net", NetworkArgs(
        project=settings.project,
        region=settings.region,
        subnet_cidr=settings.subnet_cidr,
        secondary_ranges=secondary_ranges,
        private_services_cidr=settings.private_services_cidr,
        labels=labels,
        internal_ips=(("tracking", settings.tracking_lb_address),) if settings.serving_cluster else (),
        global_ingress_address=bool(settings.ingress_host),
    ), opts)


@dataclass(frozen=True)
class ClusterShape:
    """One cluster's own settings: its ranges and its node pool."""

    role: Literal["platform", "serving"]
    master_cidr: str
    pods_range_name: str
    services_range_name: str
    machine_type: str
    min_nodes: int
    max_nodes: int
    spot: bool


def build_clusters(settings: Settings, foundation: Foundation) -> Clusters:
    # Each cluster's control-plane peering waits for the VPC's other peerings: private services access,
    # then the platform cluster's (GCP runs one peering operation per network at a time).
    platform = build_cluster(settings, foundation, ClusterShape(
        "platform", settings.master_cidr, PODS_RANGE_NAME, SERVICES_RANGE_NAME, settings.machine_type,
        settings.min_nodes, settings.max_nodes, settings.spot_nodes),
        peerings_before=(foundation.network.private_services_connection,))
    if not settings.serving_cluster:
        return Clusters(platform=platform, serving=platform)
    serving = build_cluster(settings, foundation, ClusterShape(
        "serving", settings.serving_master_cidr, SERVING_PODS_RANGE_NAME, SERVING_SERVICES_RANGE_NAME,
        settings.serving_machine_type, settings.serving_min_nodes, settings.serving_max_nodes,
        settings.serving_spot_nodes),
        peerings_before=(foundation.network.private_services_connection, platform.control_plane))
    return Clusters(platform=platform, serving=serving)


def build_cluster(settings: Settings, foundation: Foundation, shape: ClusterShape,
                  peerings_before: tuple[pulumi.Resource, ...]) -> GkeCluster:
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
        machine_type=shape.machine_type,
        min_nodes=shape.min_nodes,
        max_nodes=shape.max_nodes,
        spot=shape.spot,
        disk_size_gb=settings.node_disk_size_gb,
        disk_type=settings.boot_disk_type(shape.role),
        release_channel=settings.release_channel,
        deletion_protection=settings.cluster_deletion_protection,
        protect=settings.protect,
        master_authorized_cidrs=settings.master_authorized_cidrs,
        dns_endpoint=settings.control_plane_endpoint == "dns",
        secrets_key_id=foundation.keys.secrets_key_id,
        secrets_key_ready=(foundation.keys.grants_propagated,),
        peerings_before=peerings_before,
    ), foundation.after_apis)


def build_data(settings: Settings, foundation: Foundation) -> Data:
    keys = foundation.keys
    bucket = ArtifactBucket(f"{settings.name_prefix}-artifacts", ArtifactBucketArgs(
        project=settings.project,
        bucket_name=settings.bucket_name,
        location=settings.region,
        labels=foundation.labels,
        nearline_after_days=settings.artifact_nearline_after_days,
        noncurrent_retention_days=settings.noncurrent_retention_days,
        force_destroy=settings.bucket_force_destroy,
        protect=settings.protect,
        encryption_key_id=keys.data_key_id,
        encryption_key_ready=(keys.grants_propagated,) if keys.data_key_id is not None else (),
    ), foundation.after_apis)
    database = Database(f"{settings.name_prefix}-db", DatabaseArgs(
        project=settings.project,
        region=settings.region,
        network_id=foundation.network.network_id,
        private_services_connection=foundation.network.private_services_connection,
        tier=settings.db_tier,
        edition=settings.db_edition,
        labels=foundation.labels,
        disk_size_gb=settings.db_disk_size_gb,
        high_availability=settings.db_high_availability,
        backups=settings.db_backups,
        point_in_time_recovery=settings.db_point_in_time_recovery,
        backup_retention_count=settings.db_backup_retention_count,
        log_retention_days=settings.db_log_retention_days,
        deletion_protection=settings.db_deletion_protection,
        protect=settings.protect,
        maintenance_day=settings.maintenance_day_number,
        maintenance_hour=settings.db_maintenance_hour,
        encryption_key_id=keys.data_key_id,
        encryption_key_ready=(keys.grants_propagated,) if keys.data_key_id is not None else (),
    ), foundation.after_apis)
    return Data(bucket=bucket, database=database)


def build_edge(settings: Settings, foundation: Foundation) -> Optional[EdgePolicy]:
    if not settings.ingress_host:
        return None
    return EdgePolicy(f"{settings.name_prefix}-edge", EdgePolicyArgs(
        project=settings.project, labels=foundation.labels,
        requests_per_minute=settings.armor_requests_per_minute if settings.cloud_armor else None,
        iap_members=settings.iap_members if settings.iap else (),
        iap_programmatic_client=settings.iap_oauth_client_id if settings.iap else None,
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
        image_version=image_version(settings.tracking_image),
        bucket_name=data.bucket.bucket_name,
        sql_connection_name=data.database.connection_name,
        sql_instance_name=data.database.instance_name,
        tracking_database=data.database.tracking_database,
        auth_database=data.database.auth_database,
        sql_proxy_image=settings.sql_proxy_image,
        admin_password=foundation.app_secrets.refs[ADMIN_PASSWORD],
        flask_secret_key=foundation.app_secrets.refs[FLASK_SECRET_KEY],
        project_number=foundation.app_secrets.project_number,
        replicas=settings.tracking_replicas,
        workers=settings.tracking_workers,
        cpu=settings.tracking_cpu,
        memory=settings.tracking_memory,
        job_execution=settings.tracking_job_execution,
        default_permission=settings.auth_default_permission,
        auth_cache_ttl_seconds=settings.auth_cache_ttl_seconds,
        ingress_host=settings.ingress_host,
        ingress_static_ip_name=foundation.network.ingress_address_name,
        security_policy_name=edge.security_policy_name if edge else None,
        ssl_policy_name=edge.ssl_policy_name if edge else None,
        iap=settings.iap,
        internal_lb_ip=foundation.network.internal_addresses.get("tracking"),
        serving_pod_cidr=settings.serving_pods_cidr if settings.serving_cluster else None,
    ), foundation.after_apis)


def build_observability(settings: Settings, foundation: Foundation, data: Data) -> Monitoring:
    return Monitoring(f"{settings.name_prefix}-monitoring", MonitoringArgs(
        project=settings.project,
        environment=settings.environment,
        tracking_namespace=TRACKING_NAMESPACE,
        serving_namespace=SERVING_NAMESPACE,
        bucket=data.bucket.bucket_name,
        serving_min_replicas=settings.serving_min_replicas,
        serving_max_replicas=settings.serving_max_replicas,
        labels=foundation.labels,
        alerts_enabled=settings.alerts_enabled,
        alert_email=settings.alert_email,
        serving_p99_ms=settings.alert_serving_p99_ms,
        serving_error_percent=settings.alert_serving_error_percent,
        db_storage_percent=settings.alert_db_storage_percent,
    ), foundation.after_apis)


def build_serving(settings: Settings, foundation: Foundation, clusters: Clusters,
                  tracking: TrackingServer) -> Serving:
    packages = PackageSource(f"{settings.name_prefix}-packages", PackageSourceArgs(
        project=settings.project, location=settings.region, name_prefix=settings.name_prefix,
        labels=foundation.labels, private_repository=settings.private_python_repository), foundation.after_apis)
    serving = ModelServing("mlflow-serving", ModelServingArgs(
        provider=clusters.serving.provider,
        tracking_provider=clusters.platform.provider,
        project=settings.project,
        workload_pool=clusters.serving.workload_pool,
        account_id=settings.service_account_ids["serving"],
        image=foundation.images.serving_image,
        setup_image=foundation.images.tracking_image,
        model_name=settings.model_name,
        model_alias=settings.model_alias,
        rollout_token=settings.rollout_token,
        tracking=tracking.endpoint,
        serving_password=foundation.app_secrets.refs[SERVING_PASSWORD],
        project_number=foundation.app_secrets.project_number,
        tracking_workload_pool=clusters.platform.workload_pool,
        min_replicas=settings.serving_min_replicas,
        max_replicas=settings.serving_max_replicas,
        target_cpu_percent=settings.serving_target_cpu_percent,
        workers=settings.serving_workers,
        max_batch_size=settings.serving_max_batch_size,
        max_batch_delay_ms=settings.serving_max_batch_delay_ms,
        cpu=settings.serving_cpu,
        memory=settings.serving_memory,
        package_index=packages.index,
        env_timeout_seconds=settings.serving_env_timeout_seconds,
        env_cache_gi=settings.serving_env_cache_gi,
    ), foundation.after_apis)
    return Serving(packages=packages, serving=serving)


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
    if settings.ingress_host:
        outputs["tracking_url"] = pulumi.Output.from_input(f"https://{settings.ingress_host}")
        outputs["ingress_ip"] = foundation.network.ingress_ip
    # A separate serving cluster reaches tracking through its internal load balancer.
    if tracking.endpoint.internal_url is not None:
        outputs["tracking_internal_url"] = tracking.endpoint.internal_url
    if serving is not None:
        outputs["serving_in_cluster_url"] = serving.serving.service_url
        outputs["serving_deployment"] = serving.serving.deployment_ref
        outputs["package_index_url"] = serving.packages.index_url
        if serving.packages.private_repository_url is not None:
            outputs["private_python_repository_url"] = serving.packages.private_repository_url
        outputs["serving_model_uri"] = serving.serving.model_uri
    return outputs
