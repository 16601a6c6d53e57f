"""A private, Workload-Identity-enabled GKE cluster with one autoscaling node pool."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.cloud_rules import MIN_NODE_DISK_GB, SUPPORTED_VULNERABILITY_MODES
from infra.naming import cap_name, child_options
from infra.settings import ClustersSettings, NodePoolSettings

NODE_SA_PROJECT_ROLES = ("roles/container.defaultNodeServiceAccount",)
NODE_SA_REPOSITORY_ROLE = "roles/artifactregistry.reader"
# The default pool GKE creates, then removes: one node per zone, GKE's default machine type. Its boot disks
# still count against the region's quota while the cluster is created; GKE's default, 100 GB pd-balanced,
# counts against SSD_TOTAL_GB (300 GB per regional cluster; a new project often has 250-500). The smallest
# standard disk counts against DISKS_TOTAL_GB instead: balanced and SSD disks have their own quota
# (https://cloud.google.com/kubernetes-engine/docs/how-to/custom-boot-disks); E2 boots from pd-standard.
DEFAULT_POOL_MACHINE_TYPE = "e2-medium"
# GKE's Gateway controller supports only the standard channel of the Gateway API CRDs
# (https://cloud.google.com/kubernetes-engine/docs/how-to/deploying-gateways, Restrictions).
GATEWAY_API_CHANNEL = "CHANNEL_STANDARD"
DEFAULT_POOL_DISK_TYPE = "pd-standard"


@dataclass(frozen=True)
class GkeClusterArgs:
    project: str
    """GCP project."""
    location: str
    """A region (regional cluster) or a zone (zonal cluster)."""
    network_id: pulumi.Input[str]
    """VPC of the cluster."""
    subnet_self_link: pulumi.Input[str]
    """Subnet of the nodes."""
    pods_range_name: str
    """Secondary range of the subnet used for pods."""
    services_range_name: str
    """Secondary range of the subnet used for Services."""
    master_cidr: str
    """/28 for the control plane's private endpoint."""
    workload_pool: str
    """Workload Identity pool, PROJECT.svc.id.goog; bindings to it must wait for the cluster."""
    repository_location: str
    """Region of the Artifact Registry repository the nodes pull from."""
    repository_id: pulumi.Input[str]
    """Repository the node service account may read, and nothing else."""
    labels: dict[str, str]
    """Resource labels of the cluster and its nodes."""
    clusters: ClustersSettings
    """What the stack's clusters share: release channel, disk size, deletion protection, control-plane access."""
    pool: NodePoolSettings
    """This cluster's node pool."""
    protect: bool = True
    """Pulumi refuses to delete or replace the cluster (`protect`): `pulumi destroy` then fails in its
    preview, before it deletes anything."""
    secrets_key_id: Optional[pulumi.Input[str]] = None
    """Cloud KMS key that encrypts Kubernetes Secrets in etcd (application-layer encryption)."""
    secrets_key_ready: tuple[pulumi.Resource, ...] = ()
    """What the cluster waits for: the key's grant to GKE's service agent, propagated (GKE refuses a key its
    agent cannot use yet)."""
    peerings_before: tuple[pulumi.Resource, ...] = ()
    """Other VPC peerings of the same network the cluster waits for: a private cluster with a
    `master_cidr` peers its control plane's network with the VPC, and GCP refuses a peering while another
    is in progress on the same network ("There is a peering operation in progress on the local or peer
    network", hashicorp/terraform-provider-google#3026; sassoftware/viya4-iac-gcp#231)."""
    gateway_api: bool = False
    """Serve the Gateway API's standard channel: the serving Gateway's cluster needs it (GKE's controller
    then runs the `gke-l7-*` GatewayClasses; it also needs the HttpLoadBalancing add-on, on by default)."""
    load_balancer_ranges: tuple[str, ...] = ()
    """With `gateway_api`: where the Gateway's proxies and health checks come from (proxy-only subnet, Google's
    probe ranges), admitted by a firewall rule to `load_balancer_port` of the pods on this cluster's nodes."""
    load_balancer_port: int = 0
    vulnerability_mode: str = "VULNERABILITY_DISABLED"
    """Workload vulnerability scanning; GKE Standard offers no basic tier any more."""

    def __post_init__(self) -> None:
        if self.gateway_api and not (self.load_balancer_ranges and self.load_balancer_port):
            raise ValueError("GkeClusterArgs.gateway_api: the Gateway's load balancer needs load_balancer_ranges "
                             "and load_balancer_port to reach the pods")
        if self.vulnerability_mode not in SUPPORTED_VULNERABILITY_MODES:
            raise ValueError(f"GkeClusterArgs.vulnerability_mode={self.vulnerability_mode!r}: "
                             f"allowed {', '.join(SUPPORTED_VULNERABILITY_MODES)}")


class GkeCluster(pulumi.ComponentResource):
    """The cluster, its node pool and node service account, and a Kubernetes provider for it."""

    cluster_name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_service_account_email: pulumi.Output[str]
    workload_pool: pulumi.Output[str]
    """The pool exists once this cluster does: Workload Identity bindings take it from here."""
    provider: k8s.Provider
    control_plane: gcp.container.Cluster
    """The cluster itself: once it exists, so does its control plane's peering with the VPC."""
    load_balancer_firewall: Optional[gcp.compute.Firewall]
    """With `gateway_api`: the rule admitting the Gateway's load balancer to the pods."""

    def __init__(self, name: str, args: GkeClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:cluster:GkeCluster", name, None, opts)
        child = child_options(self, opts)
        node_sa, node_roles = self._node_account(name, args, child)
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            project=args.project,
            location=args.location,
            network=args.network_id,
            subnetwork=args.subnet_self_link,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=args.pods_range_name,
                services_secondary_range_name=args.services_range_name,
            ),
            **control_plane_access(args),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(workload_pool=args.workload_pool),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.clusters.release_channel),
            enable_shielded_nodes=True,
            enable_legacy_abac=False,
            # Dataplane V2 enforces NetworkPolicy without an extra add-on.
            datapath_provider="ADVANCED_DATAPATH",
            **observability(args),
            maintenance_policy=gcp.container.ClusterMaintenancePolicyArgs(
                daily_maintenance_window=gcp.container.ClusterMaintenancePolicyDailyMaintenanceWindowArgs(start_time="03:00"),
            ),
            **default_pool_replacement(node_sa.email),
            # GKE's Secret Manager add-on: the CSI driver that mounts the application secrets as files.
            # No auto-rotation: MLflow reads them once at start, so a new version takes a rollout
            # (`make rotate-secret`), and re-reading every 2 minutes would only bill access operations.
            secret_manager_config=gcp.container.ClusterSecretManagerConfigArgs(enabled=True),
            gateway_api_config=gcp.container.ClusterGatewayApiConfigArgs(
                channel=GATEWAY_API_CHANNEL) if args.gateway_api else None,
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=args.secrets_key_id) if args.secrets_key_id is not None else None,
            resource_labels=args.labels,
            deletion_protection=args.clusters.deletion_protection,
            # Once the default pool is gone GKE reports no nodeConfig; without this every later `up`
            # would see a difference in a replace-on-change field and replace the cluster.
            opts=child_options(self, opts, depends_on=[*node_roles, *args.secrets_key_ready, *args.peerings_before],
                               ignore_changes=["nodeConfig"], protect=args.protect),
        )
        self.control_plane = cluster
        self.load_balancer_firewall = self._load_balancer_firewall(name, args, node_sa, child)
        pool = gcp.container.NodePool(
            f"{name}-pool",
            project=args.project,
            location=args.location,
            cluster=cluster.name,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                min_node_count=args.pool.min_nodes, max_node_count=args.pool.max_nodes,
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(max_surge=1, max_unavailable=0),
            node_config=node_config(args.pool.machine_type, args.pool.spot, args.clusters.node_disk_size_gb,
                                    args.pool.boot_disk_type, node_sa.email, args.labels, pool_label="default"),
            opts=child,
        )
        self._publish(name, args, cluster, node_sa, pool, opts)

    def _load_balancer_firewall(self, name: str, args: GkeClusterArgs, node_sa: gcp.serviceaccount.Account,
                                child: pulumi.ResourceOptions) -> Optional[gcp.compute.Firewall]:
        """VPC firewall rules apply to a node's alias ranges, where the pods live: the rule targets the nodes
        by their service account. The implied deny-ingress rule drops the proxies' traffic without it
        (https://cloud.google.com/load-balancing/docs/l7-internal#firewall_rules)."""
        if not args.gateway_api:
            return None
        return gcp.compute.Firewall(
            f"{name}-allow-load-balancer", project=args.project, network=args.network_id, direction="INGRESS",
            source_ranges=list(args.load_balancer_ranges), target_service_accounts=[node_sa.email],
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=[str(args.load_balancer_port)])],
            log_config=gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA"), opts=child)

    def _node_account(self, name: str, args: GkeClusterArgs, child: pulumi.ResourceOptions
                      ) -> tuple[gcp.serviceaccount.Account, list[pulumi.Resource]]:
        """The nodes' own account: write logs and metrics, pull from this project's repository; nothing else."""
        node_sa = gcp.serviceaccount.Account(
            f"{name}-nodes-sa",
            project=args.project,
            account_id=cap_name(f"{name}-nodes", 30),
            display_name=f"GKE nodes of {name}",
            opts=child,
        )
        node_member = node_sa.email.apply(lambda email: f"serviceAccount:{email}")
        node_roles = [
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.split('/')[-1].lower()}",
                project=args.project, role=role, member=node_member, opts=child,
            )
            for role in NODE_SA_PROJECT_ROLES
        ]
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-nodes-registry-reader",
            project=args.project,
            location=args.repository_location,
            repository=args.repository_id,
            role=NODE_SA_REPOSITORY_ROLE,
            member=node_member,
            opts=child,
        )
        return node_sa, node_roles

    def _publish(self, name: str, args: GkeClusterArgs, cluster: gcp.container.Cluster,
                 node_sa: gcp.serviceaccount.Account, pool: gcp.container.NodePool,
                 opts: Optional[pulumi.ResourceOptions]) -> None:
        self.cluster_name = cluster.name
        self.endpoint = cluster.endpoint
        if args.clusters.dns_endpoint:
            # The DNS endpoint presents a publicly trusted certificate: no CA data to pin.
            dns_name = cluster.control_plane_endpoints_config.apply(
                lambda config: config.dns_endpoint_config.endpoint)
            self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(cluster.name, dns_name).apply(
                lambda parts: kubeconfig_for(parts[0], parts[1], None)))
        else:
            self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
                cluster.name, cluster.endpoint, cluster.master_auth.cluster_ca_certificate,
            ).apply(lambda parts: kubeconfig_for(*parts)))
        self.node_service_account_email = node_sa.email
        self.workload_pool = cluster.workload_identity_config.apply(lambda config: config.workload_pool)
        # Workloads need nodes to run on: the provider, and so every object it creates, waits for the pool.
        # Without `cluster_identifier` pulumi-kubernetes replaces the provider, and with it every object it
        # created, when the kubeconfig's active cluster changes (server or CA data: `clusters.controlPlaneEndpoint`
        # ip <-> dns, a CA rotation); with it, only a new identifier replaces (kubeProvider.DiffConfig in
        # pulumi-kubernetes provider/pkg/provider/provider.go). The cluster's id changes only with the cluster.
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, cluster_identifier=cluster.id, enable_server_side_apply=True,
            opts=child_options(self, opts, depends_on=[pool]),
        )
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "endpoint": self.endpoint,
            "kubeconfig": self.kubeconfig,
            "node_service_account_email": self.node_service_account_email,
            "workload_pool": self.workload_pool,
        })


def control_plane_access(args: GkeClusterArgs) -> dict:
    """Private nodes; the control plane by IP (optionally only from `master_authorized_cidrs`) or, in
    DNS mode, by its DNS name only."""
    authorized = (
        gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(cidr_blocks=[
            gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(cidr_block=cidr, display_name=cidr)
            for cidr in args.clusters.master_authorized_cidrs
        ])
        if args.clusters.master_authorized_cidrs else None
    )
    return dict(
        private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
            enable_private_nodes=True,
            enable_private_endpoint=args.clusters.dns_endpoint,
            master_ipv4_cidr_block=args.master_cidr,
        ),
        control_plane_endpoints_config=gcp.container.ClusterControlPlaneEndpointsConfigArgs(
            dns_endpoint_config=gcp.container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
                allow_external_traffic=True),
        ) if args.clusters.dns_endpoint else None,
        master_authorized_networks_config=authorized or (
            # DNS mode: the private IP endpoint admits only the cluster's own nodes and pods.
            gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(cidr_blocks=[])
            if args.clusters.dns_endpoint else None),
    )


def observability(args: GkeClusterArgs) -> dict:
    """System and workload logs, Managed Prometheus, the basic security posture."""
    return dict(
        monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
            enable_components=["SYSTEM_COMPONENTS"],
            managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=True),
        ),
        logging_config=gcp.container.ClusterLoggingConfigArgs(enable_components=["SYSTEM_COMPONENTS", "WORKLOADS"]),
        security_posture_config=gcp.container.ClusterSecurityPostureConfigArgs(
            mode="BASIC", vulnerability_mode=args.vulnerability_mode,
        ),
    )


def default_pool_replacement(node_service_account: pulumi.Input[str]) -> dict:
    """The default pool cannot be configured as needed; it is replaced by the component's pool. Until
    it is removed its node runs as the node account, not the Compute Engine default one, on the smallest
    disk that takes no SSD quota."""
    return dict(
        remove_default_node_pool=True,
        initial_node_count=1,
        node_config=gcp.container.ClusterNodeConfigArgs(
            machine_type=DEFAULT_POOL_MACHINE_TYPE,
            disk_type=DEFAULT_POOL_DISK_TYPE,
            disk_size_gb=MIN_NODE_DISK_GB,
            service_account=node_service_account,
            oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
        ),
    )


def node_config(machine_type: str, spot: bool, disk_size_gb: int, disk_type: str, service_account: pulumi.Input[str],
                labels: pulumi.Input[dict[str, str]], *, pool_label: str,
                taints: tuple[dict, ...] = ()) -> gcp.container.NodePoolNodeConfigArgs:
    """Hardened nodes: shielded, Workload Identity metadata, the least-privilege node account."""
    return gcp.container.NodePoolNodeConfigArgs(
        machine_type=machine_type,
        spot=spot,
        disk_size_gb=disk_size_gb,
        disk_type=disk_type,
        image_type="COS_CONTAINERD",
        service_account=service_account,
        oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
        workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
        shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
            enable_secure_boot=True, enable_integrity_monitoring=True,
        ),
        metadata={"disable-legacy-endpoints": "true"},
        labels={"pool": pool_label},
        taints=[gcp.container.NodePoolNodeConfigTaintArgs(**taint) for taint in taints] or None,
        resource_labels=labels,
    )


def kubeconfig_for(cluster_name: str, endpoint: str, ca_certificate: Optional[str]) -> str:
    """A kubeconfig that authenticates through gke-gcloud-auth-plugin: no static credentials inside."""
    context = f"gke-{cluster_name}"
    server = {"server": f"https://{endpoint}"}
    if ca_certificate:
        server["certificate-authority-data"] = ca_certificate
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": server}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "users": [{"name": context, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
        }}}],
    }, indent=2, sort_keys=True)
