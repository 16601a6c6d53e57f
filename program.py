"""Wires the platform's components from validated settings; returns the stack outputs."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.apis import IAP_API, REQUIRED_APIS, ProjectApis, ProjectApisArgs
from infra.cloud_rules import default_boot_disk_type
from infra.cluster import GkeCluster, GkeClusterArgs, LoadTestPool
from infra.config import Settings
from infra.database import Database, DatabaseArgs
from infra.edge import EdgePolicy, EdgePolicyArgs
from infra.images import MlflowImages, MlflowImagesArgs, content_hash, image_version, pushed_image, registry_token
from infra.kms import EncryptionKeys, EncryptionKeysArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.naming import gcp_labels
from infra.network import PODS_RANGE_NAME, SERVICES_RANGE_NAME, Network, NetworkArgs
from infra.registry import ImageRepository, ImageRepositoryArgs, PackageSource, PackageSourceArgs
from infra.secrets import ADMIN_PASSWORD, FLASK_SECRET_KEY, SERVING_PASSWORD, AppSecrets, AppSecretsArgs
from infra.storage import ArtifactBucket, ArtifactBucketArgs
from k8s.loadtest import NAMESPACE as LOAD_TEST_NAMESPACE, LoadTest, LoadTestArgs
from k8s.serving import ModelServing, ModelServingArgs
from k8s.tracking import TRACKING_PORT, TrackingServer, TrackingServerArgs

LOAD_TEST_DIR = Path(__file__).resolve().parent / "loadtest"
SERVING_PODS_RANGE_NAME = "serving-pods"
SERVING_SERVICES_RANGE_NAME = "serving-services"


def build_platform(settings: Settings) -> dict[str, pulumi.Output]:
    prefix = settings.name_prefix
    labels = gcp_labels(settings.environment)

    apis = ProjectApis(f"{prefix}-apis", ProjectApisArgs(
        project=settings.project, services=REQUIRED_APIS + (IAP_API,) if settings.iap else REQUIRED_APIS))
    after_apis = pulumi.ResourceOptions(depends_on=[apis])

    secondary_ranges = {PODS_RANGE_NAME: settings.pods_cidr, SERVICES_RANGE_NAME: settings.services_cidr}
    if settings.serving_cluster:
        secondary_ranges |= {SERVING_PODS_RANGE_NAME: settings.serving_pods_cidr,
                             SERVING_SERVICES_RANGE_NAME: settings.serving_services_cidr}
    network = Network(f"{prefix}-net", NetworkArgs(
        project=settings.project,
        region=settings.region,
        subnet_cidr=settings.subnet_cidr,
        secondary_ranges=secondary_ranges,
        private_services_cidr=settings.private_services_cidr,
        labels=labels,
        internal_ips=(("tracking", settings.tracking_lb_address),) if settings.serving_cluster else (),
        global_ingress_address=bool(settings.ingress_host),
    ), after_apis)

    registry = ImageRepository(f"{prefix}-images", ImageRepositoryArgs(
        project=settings.project,
        location=settings.region,
        repository_id=f"{prefix}-images",
        labels=labels,
        keep_versions=settings.registry_keep_versions,
    ), after_apis)
    images = MlflowImages(f"{prefix}-build", MlflowImagesArgs(
        repository_url=registry.repository_url,
        registry_host=f"{settings.region}-docker.pkg.dev",
        version=image_version(None),
        prebuilt=(("tracking", settings.tracking_image), ("serving", settings.serving_image)),
    ), after_apis)

    keys = EncryptionKeys(f"{prefix}-keys", EncryptionKeysArgs(
        project=settings.project, location=settings.region, labels=labels, data_key=settings.cmek), after_apis)

    app_secrets = AppSecrets(f"{prefix}-app-secrets", AppSecretsArgs(
        project=settings.project, location=settings.region, prefix=prefix, labels=labels), after_apis)

    def cluster(role: str, master_cidr: str, pods: str, services: str, machine_type: str,
                min_nodes: int, max_nodes: int, spot: bool, disk_type: str) -> GkeCluster:
        return GkeCluster(f"{prefix}-{role}", GkeClusterArgs(
            project=settings.project,
            location=settings.cluster_location,
            network_id=network.network_id,
            subnet_self_link=network.subnet_self_link,
            pods_range_name=pods,
            services_range_name=services,
            master_cidr=master_cidr,
            workload_pool=settings.workload_pool,
            repository_location=settings.region,
            repository_id=registry.repository_id,
            labels=labels,
            machine_type=machine_type,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            spot=spot,
            disk_size_gb=settings.node_disk_size_gb,
            disk_type=disk_type,
            release_channel=settings.release_channel,
            deletion_protection=settings.cluster_deletion_protection,
            master_authorized_cidrs=settings.master_authorized_cidrs,
            dns_endpoint=settings.control_plane_endpoint == "dns",
            secrets_key_id=keys.secrets_key_id,
            secrets_key_grants=tuple(keys.secrets_key_grants),
            load_test_pool=load_test_pool if role == load_test_role else None,
        ), after_apis)

    # The load generators run where serving's clients do: on the serving cluster (see README, Load testing).
    load_test_role = "serving" if settings.serving_cluster else "platform"
    load_test_pool = LoadTestPool(
        machine_type=settings.load_test_machine_type, max_nodes=settings.load_test_max_nodes,
        spot=settings.load_test_spot_nodes, disk_size_gb=settings.node_disk_size_gb,
        disk_type=default_boot_disk_type(settings.load_test_machine_type), zone=settings.zone,
    ) if settings.load_testing else None

    platform = cluster("platform", settings.master_cidr, PODS_RANGE_NAME, SERVICES_RANGE_NAME,
                       settings.machine_type, settings.min_nodes, settings.max_nodes, settings.spot_nodes,
                       settings.boot_disk_type("platform"))
    serving_cluster = (
        cluster("serving", settings.serving_master_cidr, SERVING_PODS_RANGE_NAME, SERVING_SERVICES_RANGE_NAME,
                settings.serving_machine_type, settings.serving_min_nodes, settings.serving_max_nodes,
                settings.serving_spot_nodes, settings.boot_disk_type("serving"))
        if settings.serving_cluster else platform
    )

    bucket = ArtifactBucket(f"{prefix}-artifacts", ArtifactBucketArgs(
        project=settings.project,
        bucket_name=settings.bucket_name,
        location=settings.region,
        labels=labels,
        nearline_after_days=settings.artifact_nearline_after_days,
        noncurrent_retention_days=settings.noncurrent_retention_days,
        force_destroy=settings.bucket_force_destroy,
        encryption_key_id=keys.data_key_id,
        encryption_key_grants=tuple(keys.data_key_grants),
    ), after_apis)

    database = Database(f"{prefix}-db", DatabaseArgs(
        project=settings.project,
        region=settings.region,
        network_id=network.network_id,
        private_services_connection=network.private_services_connection,
        tier=settings.db_tier,
        edition=settings.db_edition,
        labels=labels,
        disk_size_gb=settings.db_disk_size_gb,
        high_availability=settings.db_high_availability,
        backups=settings.db_backups,
        point_in_time_recovery=settings.db_point_in_time_recovery,
        backup_retention_count=settings.db_backup_retention_count,
        log_retention_days=settings.db_log_retention_days,
        deletion_protection=settings.db_deletion_protection,
        maintenance_day=settings.maintenance_day_number,
        maintenance_hour=settings.db_maintenance_hour,
        encryption_key_id=keys.data_key_id,
        encryption_key_grants=tuple(keys.data_key_grants),
    ), after_apis)

    edge = (EdgePolicy(f"{prefix}-edge", EdgePolicyArgs(
        project=settings.project, labels=labels,
        requests_per_minute=settings.armor_requests_per_minute if settings.cloud_armor else None,
        iap_members=settings.iap_members if settings.iap else ()), after_apis)
        if settings.ingress_host else None)
    tracking_lb_address = network.internal_addresses.get("tracking")
    iap_secret = settings.iap_oauth_client_secret
    tracking_version = image_version(settings.tracking_image)
    tracking = TrackingServer("mlflow", TrackingServerArgs(
        provider=platform.provider,
        project=settings.project,
        workload_pool=platform.workload_pool,
        account_id=settings.service_account_ids["tracking"],
        db_admin_account_id=settings.service_account_ids["dbadmin"],
        image=images.tracking_image,
        image_version=tracking_version,
        bucket_name=bucket.bucket_name,
        sql_connection_name=database.connection_name,
        sql_instance_name=database.instance_name,
        tracking_database=database.tracking_database,
        auth_database=database.auth_database,
        sql_proxy_image=settings.sql_proxy_image,
        admin_password=app_secrets.refs[ADMIN_PASSWORD],
        flask_secret_key=app_secrets.refs[FLASK_SECRET_KEY],
        project_number=app_secrets.project_number,
        replicas=settings.tracking_replicas,
        workers=settings.tracking_workers,
        cpu=settings.tracking_cpu,
        memory=settings.tracking_memory,
        job_execution=settings.tracking_job_execution,
        default_permission=settings.auth_default_permission,
        auth_cache_ttl_seconds=settings.auth_cache_ttl_seconds,
        ingress_host=settings.ingress_host,
        ingress_static_ip_name=network.ingress_address_name,
        security_policy_name=edge.security_policy_name if edge else None,
        ssl_policy_name=edge.ssl_policy_name if edge else None,
        iap_client_id=settings.iap_oauth_client_id if settings.iap else None,
        iap_client_secret=pulumi.Output.secret(iap_secret.get_secret_value()) if settings.iap and iap_secret else None,
        internal_lb_ip=tracking_lb_address,
        serving_pod_cidr=settings.serving_pods_cidr if settings.serving_cluster else None,
        # On its own cluster serving's pod range, and so the load test's, is admitted already.
        load_test_namespace=LOAD_TEST_NAMESPACE if settings.load_testing and not settings.serving_cluster else None,
    ), after_apis)

    Monitoring(f"{prefix}-monitoring", MonitoringArgs(
        project=settings.project,
        environment=settings.environment,
        tracking_namespace="mlflow",
        serving_namespace="mlflow-serving",
        bucket=bucket.bucket_name,
        serving_min_replicas=settings.serving_min_replicas,
        serving_max_replicas=settings.serving_max_replicas,
        labels=labels,
        alerts_enabled=settings.alerts_enabled,
        alert_email=settings.alert_email,
        serving_p99_ms=settings.alert_serving_p99_ms,
        serving_error_percent=settings.alert_serving_error_percent,
        db_storage_percent=settings.alert_db_storage_percent,
    ), after_apis)

    outputs: dict[str, pulumi.Output] = {
        "platform_cluster_name": platform.cluster_name,
        "serving_cluster_name": serving_cluster.cluster_name,
        "platform_kubeconfig": platform.kubeconfig,
        "serving_kubeconfig": serving_cluster.kubeconfig,
        "artifact_bucket": bucket.bucket_name,
        "sql_connection_name": database.connection_name,
        "repository_url": registry.repository_url,
        "tracking_image": images.tracking_image,
        "serving_image": images.serving_image,
        "tracking_in_cluster_url": tracking.in_cluster_url,
        "tracking_admin_username": tracking.admin_username,
        # The secrets, not their values: `make rotate-secret` adds versions the stack does not know.
        "app_secrets": app_secrets.secret_ids,
    }
    if settings.ingress_host:
        outputs["tracking_url"] = pulumi.Output.from_input(f"https://{settings.ingress_host}")
        outputs["ingress_ip"] = network.ingress_ip
    # A separate serving cluster reaches tracking through its internal load balancer.
    tracking_internal_url = (pulumi.Output.concat("http://", tracking_lb_address, f":{TRACKING_PORT}")
                             if tracking_lb_address is not None else None)
    if tracking_internal_url is not None:
        outputs["tracking_internal_url"] = tracking_internal_url

    if settings.model_name:
        packages = PackageSource(f"{prefix}-packages", PackageSourceArgs(
            project=settings.project, location=settings.region, name_prefix=prefix, labels=labels,
            private_repository=settings.private_python_repository), after_apis)
        serving = ModelServing("mlflow-serving", ModelServingArgs(
            provider=serving_cluster.provider,
            tracking_provider=platform.provider,
            project=settings.project,
            workload_pool=serving_cluster.workload_pool,
            account_id=settings.service_account_ids["serving"],
            image=images.serving_image,
            setup_image=images.tracking_image,
            model_name=settings.model_name,
            model_alias=settings.model_alias,
            rollout_token=settings.rollout_token,
            tracking_url=tracking_internal_url or tracking.in_cluster_url,
            tracking_in_cluster_url=tracking.in_cluster_url,
            tracking_namespace=tracking.namespace,
            admin_password=app_secrets.refs[ADMIN_PASSWORD],
            serving_password=app_secrets.refs[SERVING_PASSWORD],
            project_number=app_secrets.project_number,
            tracking_workload_pool=platform.workload_pool,
            admin_username=tracking.admin_username_value,
            tracking_ready=tracking.deployment,
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
        ), after_apis)
        outputs["serving_in_cluster_url"] = serving.service_url
        outputs["package_index_url"] = packages.index_url
        if packages.private_repository_url is not None:
            outputs["private_python_repository_url"] = packages.private_repository_url
        outputs["serving_model_uri"] = serving.model_uri
        if settings.load_testing:
            outputs["load_test_namespace"] = load_test(settings, registry, serving_cluster, serving.service_url,
                                                       tracking_internal_url or tracking.in_cluster_url, tracking,
                                                       app_secrets, after_apis)
    return outputs


def load_test(settings: Settings, registry: ImageRepository, cluster: GkeCluster, serving_url: pulumi.Output[str],
              tracking_url: pulumi.Output[str], tracking: TrackingServer, app_secrets: AppSecrets,
              opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The Locust image (built like the platform's, tagged by loadtest/'s content) and the load test's
    templates on the serving cluster; returns its namespace."""
    image = pushed_image(
        f"{settings.name_prefix}-build-loadtest", context="loadtest", target="locust",
        image=pulumi.Output.concat(registry.repository_url, "/mlflow-loadtest"),
        version=content_hash(LOAD_TEST_DIR), registry_host=f"{settings.region}-docker.pkg.dev",
        token=registry_token(), opts=opts)
    return LoadTest("mlflow-loadtest", LoadTestArgs(
        provider=cluster.provider, image=image, serving_url=serving_url, tracking_url=tracking_url,
        tracking_username=tracking.admin_username_value, tracking_password=app_secrets.refs[ADMIN_PASSWORD],
        project_number=app_secrets.project_number, workload_pool=cluster.workload_pool,
        workers=settings.load_test_workers,
    ), opts).namespace
