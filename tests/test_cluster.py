import json

import pulumi
import pytest

from infra.cluster import GkeCluster, GkeClusterArgs, kubeconfig_for
from infra.settings import ClustersSettings, NodePoolSettings
from tools.offline.mocks import is_secret
from tests.helpers import dig

ARGS = dict(
    project="test-project-1", location="us-central1-a", network_id="net-id", subnet_self_link="subnet-link",
    pods_range_name="pods", services_range_name="services", master_cidr="172.16.0.0/28",
    workload_pool="test-project-1.svc.id.goog", repository_location="us-central1", repository_id="images",
    labels={"app": "mlflow", "env": "dev", "managed-by": "pulumi"},
    clusters=ClustersSettings(control_plane_endpoint="ip"), pool=NodePoolSettings(),
)


def build(run_component, **changes):
    """The component with `changes` to its pool's or the clusters' settings."""
    outputs = {}
    pool = {k: v for k, v in changes.items() if k in NodePoolSettings.model_fields}
    clusters = {k: v for k, v in changes.items() if k not in pool}

    def program():
        cluster = GkeCluster("gke", GkeClusterArgs(**{
            **ARGS, "clusters": ARGS["clusters"].model_copy(update=clusters), "pool": NodePoolSettings(**pool)}))
        outputs["kubeconfig"] = cluster.kubeconfig
        return outputs

    return run_component(program)


def test_nodes_are_private_and_control_plane_uses_the_master_range(run_component):
    cluster = build(run_component).named("gke-cluster")
    assert dig(cluster.inputs, "privateClusterConfig.enablePrivateNodes") is True, cluster.urn
    assert dig(cluster.inputs, "privateClusterConfig.masterIpv4CidrBlock") == "172.16.0.0/28"


def test_cluster_is_vpc_native_on_the_named_secondary_ranges(run_component):
    cluster = build(run_component).named("gke-cluster")
    assert cluster.inputs["networkingMode"] == "VPC_NATIVE"
    assert dig(cluster.inputs, "ipAllocationPolicy.clusterSecondaryRangeName") == "pods"
    assert dig(cluster.inputs, "ipAllocationPolicy.servicesSecondaryRangeName") == "services"


def test_workload_identity_is_on_for_cluster_and_node_pool(run_component):
    run = build(run_component)
    assert dig(run.named("gke-cluster").inputs, "workloadIdentityConfig.workloadPool") == "test-project-1.svc.id.goog"
    assert dig(run.named("gke-pool").inputs, "nodeConfig.workloadMetadataConfig.mode") == "GKE_METADATA"


def test_default_pool_is_removed_and_shielded_nodes_enabled(run_component):
    run = build(run_component)
    cluster = run.named("gke-cluster")
    assert cluster.inputs["removeDefaultNodePool"] is True and cluster.inputs["enableShieldedNodes"] is True
    assert dig(run.named("gke-pool").inputs, "nodeConfig.shieldedInstanceConfig.enableSecureBoot") is True


def test_release_channel_and_managed_prometheus(run_component):
    cluster = build(run_component, release_channel="STABLE").named("gke-cluster")
    assert dig(cluster.inputs, "releaseChannel.channel") == "STABLE"
    assert dig(cluster.inputs, "monitoringConfig.managedPrometheus.enabled") is True


def test_pool_autoscales_within_bounds_and_can_use_spot(run_component):
    pool = build(run_component, min_nodes=2, max_nodes=6, spot=True).named("gke-pool")
    assert dig(pool.inputs, "autoscaling.minNodeCount") == 2 and dig(pool.inputs, "autoscaling.maxNodeCount") == 6
    assert dig(pool.inputs, "nodeConfig.spot") is True
    assert dig(pool.inputs, "management.autoRepair") is True and dig(pool.inputs, "management.autoUpgrade") is True


def test_nodes_run_as_a_dedicated_least_privilege_service_account(run_component):
    run = build(run_component)
    account = run.named("gke-nodes-sa")
    pool = run.named("gke-pool")
    assert dig(pool.inputs, "nodeConfig.serviceAccount") == account.state["email"]
    project_roles = {r.inputs["role"] for r in run.of_type("gcp:projects/iAMMember:IAMMember")}
    assert project_roles == {"roles/container.defaultNodeServiceAccount"}
    reader = run.named("gke-nodes-registry-reader")
    assert (reader.inputs["repository"], reader.inputs["role"]) == ("images", "roles/artifactregistry.reader")


def test_deletion_protection_follows_args(run_component):
    assert build(run_component).named("gke-cluster").inputs["deletionProtection"] is True
    assert build(run_component, deletion_protection=False).named("gke-cluster").inputs["deletionProtection"] is False


def test_master_authorized_networks_only_when_listed(run_component):
    assert "masterAuthorizedNetworksConfig" not in build(run_component).named("gke-cluster").inputs
    restricted = build(run_component, master_authorized_cidrs=("203.0.113.0/24",)).named("gke-cluster")
    assert dig(restricted.inputs, "masterAuthorizedNetworksConfig.cidrBlocks.0.cidrBlock") == "203.0.113.0/24"


def test_kubeconfig_is_a_secret_with_exec_auth_and_no_static_credentials(run_component):
    run = build(run_component)
    assert "kubeconfig" in run.secret_outputs
    config = json.loads(run.outputs["kubeconfig"])
    user = config["users"][0]["user"]
    assert set(user) == {"exec"} and user["exec"]["command"] == "gke-gcloud-auth-plugin"
    provider = run.named("gke-k8s")
    assert is_secret(provider.inputs["kubeconfig"]), provider.urn


def test_kubernetes_provider_waits_for_the_node_pool(run_component):
    run = build(run_component)
    assert run.named("gke-pool").urn in run.named("gke-k8s").dependencies


def test_kubernetes_provider_is_identified_by_the_cluster_not_its_kubeconfig(run_component):
    # Otherwise a new endpoint or CA in the kubeconfig replaces the provider and every object it created.
    run = build(run_component)
    provider = run.named("gke-k8s")
    assert provider.inputs.get("clusterIdentifier") == f"{run.named('gke-cluster').name}-id", provider.urn


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_kubernetes_provider_of_a_stack_has_a_cluster_identifier(stack_runs, stack):
    run = stack_runs[stack]
    cluster_ids = {f"{cluster.name}-id" for cluster in run.of_type("gcp:container/cluster:Cluster")}
    providers = run.of_type("pulumi:providers:kubernetes")
    assert len(providers) == len(cluster_ids) == {"dev": 1, "prod": 2}[stack]
    assert {p.inputs.get("clusterIdentifier") for p in providers} == cluster_ids, [p.urn for p in providers]


def test_cluster_waits_for_the_peerings_named_before_it(run_component):
    def program():
        earlier = pulumi.CustomResource("test:index:Peering", "earlier-peering")
        GkeCluster("gke", GkeClusterArgs(**ARGS, peerings_before=(earlier,)))
        return {}

    run = run_component(program)
    cluster = run.named("gke-cluster")
    assert run.named("earlier-peering").urn in cluster.dependencies, cluster.urn


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_clusters_peer_one_at_a_time_after_private_services_access(stack_runs, stack):
    # A private cluster with a master range peers its control plane with the VPC; GCP refuses a peering
    # while another runs on the same network, so the first `up` must not create them in parallel.
    run = stack_runs[stack]
    connection = run.named("mlflow-net-psa-connection")
    clusters = {c.name: c for c in run.of_type("gcp:container/cluster:Cluster")}
    for cluster in clusters.values():
        assert connection.urn in cluster.dependencies, cluster.urn
    if stack == "prod":
        serving = clusters["mlflow-serving-cluster"]
        assert clusters["mlflow-platform-cluster"].urn in serving.dependencies, serving.urn


def test_kubeconfig_points_at_the_endpoint():
    config = json.loads(kubeconfig_for("c", "203.0.113.1", "Q0E="))
    assert config["clusters"][0]["cluster"] == {"server": "https://203.0.113.1", "certificate-authority-data": "Q0E="}
