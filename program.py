"""Wires the platform's components from validated settings; returns the stack outputs."""

from __future__ import annotations

import pulumi

from infra.apis import ProjectApis, ProjectApisArgs
from infra.cluster import GkeCluster, GkeClusterArgs
from infra.config import Settings
from infra.database import Database, DatabaseArgs
from infra.naming import gcp_labels
from infra.network import PODS_RANGE_NAME, SERVICES_RANGE_NAME, Network, NetworkArgs
from infra.registry import ImageRepository, ImageRepositoryArgs
from infra.storage import ArtifactBucket, ArtifactBucketArgs

SERVING_PODS_RANGE_NAME = "serving-pods"
SERVING_SERVICES_RANGE_NAME = "serving-services"


def build_platform(settings: Settings) -> dict[str, pulumi.Output]:
    prefix = settings.name_prefix
    labels = gcp_labels(settings.environment)

    apis = ProjectApis(f"{prefix}-apis", ProjectApisArgs(project=settings.project))
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
    ), after_apis)

    registry = ImageRepository(f"{prefix}-images", ImageRepositoryArgs(
        project=settings.project,
        location=settings.region,
        repository_id=f"{prefix}-images",
        labels=labels,
        keep_versions=settings.registry_keep_versions,
    ), after_apis)

    def cluster(role: str, master_cidr: str, pods: str, services: str, machine_type: str,
                min_nodes: int, max_nodes: int, spot: bool) -> GkeCluster:
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
            release_channel=settings.release_channel,
            deletion_protection=settings.cluster_deletion_protection,
            master_authorized_cidrs=settings.master_authorized_cidrs,
        ), after_apis)

    platform = cluster("platform", settings.master_cidr, PODS_RANGE_NAME, SERVICES_RANGE_NAME,
                       settings.machine_type, settings.min_nodes, settings.max_nodes, settings.spot_nodes)
    serving = (
        cluster("serving", settings.serving_master_cidr, SERVING_PODS_RANGE_NAME, SERVING_SERVICES_RANGE_NAME,
                settings.serving_machine_type, settings.serving_min_nodes, settings.serving_max_nodes,
                settings.serving_spot_nodes)
        if settings.serving_cluster else platform
    )

    bucket = ArtifactBucket(f"{prefix}-artifacts", ArtifactBucketArgs(
        project=settings.project,
        location=settings.region,
        labels=labels,
        nearline_after_days=settings.artifact_nearline_after_days,
        noncurrent_retention_days=settings.noncurrent_retention_days,
        force_destroy=settings.bucket_force_destroy,
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
    ), after_apis)

    return {
        "platform_cluster_name": platform.cluster_name,
        "serving_cluster_name": serving.cluster_name,
        "platform_kubeconfig": platform.kubeconfig,
        "serving_kubeconfig": serving.kubeconfig,
        "artifact_bucket": bucket.bucket_name,
        "sql_connection_name": database.connection_name,
        "repository_url": registry.repository_url,
    }
