"""The first `pulumi up` on an empty project: what a GCP engineer found that mocks did not.

Each test names the defect it guards (issue 12); each failed on the code before the fix.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from infra.apis import REQUIRED_APIS
from infra.cloud_rules import (AUTONAME_SUFFIX_LENGTH, MIN_NODE_DISK_GB, NAME_RULES, SUPPORTED_VULNERABILITY_MODES,
                               name_problem, reserved_addresses)
from infra.cluster import GkeClusterArgs
from infra.settings import NAME_PREFIX_MAX_LENGTH, ClustersSettings, NodePoolSettings
from tests.helpers import plain

STACKS = ("dev", "prod")


def clusters(run):
    return run.of_type("gcp:container/cluster:Cluster")


# 1. the tracking internal load balancer's address ------------------------------------------------
def test_internal_lb_address_is_one_gcp_lets_an_address_take(stack_runs):
    run = stack_runs["prod"]
    address = run.named("mlflow-net-tracking-ilb-ip")
    subnet = run.named("mlflow-net-subnet").inputs["ipCidrRange"]
    assert ipaddress.IPv4Address(address.inputs["address"]) in ipaddress.IPv4Network(subnet)
    assert address.inputs["address"] not in reserved_addresses(subnet)


def test_internal_lb_service_waits_for_the_reserved_address(stack_runs):
    run = stack_runs["prod"]
    address = run.named("mlflow-net-tracking-ilb-ip")
    service = run.named("mlflow-internal-lb")
    assert service.inputs["spec"]["loadBalancerIP"] == address.state["address"]
    assert address.urn in service.dependencies


# 3. serving-cluster traffic through the internal load balancer keeps its source address ----------
def test_internal_lb_keeps_the_client_address_so_the_network_policy_sees_the_pod_range(stack_runs):
    spec = stack_runs["prod"].named("mlflow-internal-lb").inputs["spec"]
    assert spec["externalTrafficPolicy"] == "Local"


# 5. vulnerability scanning mode ------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_clusters_ask_for_a_vulnerability_mode_gke_still_offers(stack_runs, stack):
    for cluster in clusters(stack_runs[stack]):
        assert cluster.inputs["securityPostureConfig"]["vulnerabilityMode"] in SUPPORTED_VULNERABILITY_MODES


def test_cluster_args_refuse_the_removed_basic_vulnerability_mode():
    with pytest.raises(ValueError, match="vulnerability_mode='VULNERABILITY_BASIC': allowed VULNERABILITY_DISABLED"):
        GkeClusterArgs(project="p", location="us-central1-a", network_id="n", subnet_self_link="s",
                       pods_range_name="pods", services_range_name="services", master_cidr="172.16.0.0/28",
                       workload_pool="p.svc.id.goog", repository_location="us-central1", repository_id="r",
                       labels={}, clusters=ClustersSettings(), pool=NodePoolSettings(),
                       vulnerability_mode="VULNERABILITY_BASIC")


# 6. the migration Job races IAM propagation -----------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_migration_job_waits_for_the_identitys_iam_bindings(stack_runs, stack):
    run = stack_runs[stack]
    job = run.named("mlflow-migrate")
    for grant in ("mlflow-identity-cloudsql-client", "mlflow-identity-wi-binding", "mlflow-identity-bucket-0"):
        assert run.named(grant).urn in job.dependencies, f"{job.urn} does not wait for {grant}"


# 7. the bucket grant names the bucket by its output ----------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_bucket_grant_waits_for_the_bucket(stack_runs, stack):
    run = stack_runs[stack]
    bucket = run.named("mlflow-artifacts-bucket")
    grant = run.named("mlflow-identity-bucket-0")
    assert grant.inputs["bucket"] == bucket.state["name"]
    assert bucket.urn in grant.dependencies


# 8. the prod control plane is not open to the internet -------------------------------------------
def test_prod_control_plane_has_no_public_ip_endpoint_and_is_reached_by_its_dns_name(stack_runs):
    run = stack_runs["prod"]
    for cluster in clusters(run):
        assert cluster.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is True
        assert cluster.inputs["controlPlaneEndpointsConfig"]["dnsEndpointConfig"]["allowExternalTraffic"] is True
        # the private IP endpoint admits the cluster's own nodes and pods, not the whole VPC
        assert cluster.inputs["masterAuthorizedNetworksConfig"] == {"cidrBlocks": []}
    kubeconfig = json.loads(run.outputs["platform_kubeconfig"])
    server = kubeconfig["clusters"][0]["cluster"]
    assert server["server"].endswith(".gke.goog") and "certificate-authority-data" not in server


def test_dev_control_plane_keeps_its_ip_endpoint_with_the_cluster_ca(stack_runs):
    [cluster] = clusters(stack_runs["dev"])
    assert cluster.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is False
    server = json.loads(stack_runs["dev"].outputs["platform_kubeconfig"])["clusters"][0]["cluster"]
    assert "certificate-authority-data" in server


# 9. the temporary default node pool -------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_default_node_pool_runs_as_the_node_account_not_compute_default(stack_runs, stack):
    run = stack_runs[stack]
    for cluster in clusters(run):
        role = cluster.name.removesuffix("-cluster")
        account = run.named(f"{role}-nodes-sa")
        assert cluster.inputs["nodeConfig"]["serviceAccount"] == account.state["email"]
        assert run.named(f"{role}-nodes-container.defaultnodeserviceaccount").urn in cluster.dependencies
        # GKE reports no nodeConfig once the default pool is gone: a later `up` must not replace the cluster
        assert cluster.ignore_changes == ["nodeConfig"]


@pytest.mark.parametrize("stack", STACKS)
def test_default_node_pool_boots_from_the_smallest_standard_disk(stack_runs, stack):
    # GKE's default, 100 GB pd-balanced per zone, takes 300 GB of SSD quota per regional cluster
    for cluster in clusters(stack_runs[stack]):
        node = cluster.inputs["nodeConfig"]
        assert (node["diskType"], node["diskSizeGb"]) == ("pd-standard", MIN_NODE_DISK_GB), cluster.name


# 10. destroying dev -----------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_private_services_connection_removes_its_peering_on_destroy(stack_runs, stack):
    # ABANDON would leave the peering, and the peering blocks the network's deletion
    [connection] = stack_runs[stack].of_type("gcp:servicenetworking/connection:Connection")
    assert connection.inputs["deletionPolicy"] == "REMOVE_PEERING"


# 12. boot disks GCP accepts for the machine series -----------------------------------------------
def test_c4_pools_boot_from_hyperdisk(run_stack_with):
    run = run_stack_with("prod", {"clusters.serving.machineType": "c4-standard-4"})
    pool = run.named("mlflow-serving-pool")
    assert pool.inputs["nodeConfig"]["diskType"] == "hyperdisk-balanced"
    assert run.named("mlflow-platform-pool").inputs["nodeConfig"]["diskType"] == "pd-balanced"
    # the temporary default pool is GKE's e2-medium, whatever the pools run: E2 boots from pd-standard
    default_pool = run.named("mlflow-serving-cluster").inputs["nodeConfig"]
    assert (default_pool["machineType"], default_pool["diskType"]) == ("e2-medium", "pd-standard")


# Services wait for their pods -----------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_tracking_services_are_created_once_their_pods_are_ready(stack_runs, stack):
    run = stack_runs[stack]
    deployment = run.named("mlflow-deployment")
    for service in ("mlflow-service", "mlflow-internal-lb"):
        if any(r.name == service for r in run.resources):
            # Pulumi gives a Service 10 minutes to reach a ready pod: not enough behind Cloud SQL's creation
            assert deployment.urn in run.named(service).dependencies


def test_iap_grants_are_named_by_member_so_editing_the_list_keeps_the_others(run_stack_with):
    members = ["group:a@example.com", "user:b@example.com"]
    names = {}
    for listed in (members, members[1:]):
        run = run_stack_with("prod", {"edge.iap": "true", "edge.iapMembers": json.dumps(listed), "access.teams": "{}"})
        names[len(listed)] = {g.inputs["member"]: g.name for g in run.of_type("gcp:iap/webIamMember:WebIamMember")}
    assert names[1]["user:b@example.com"] == names[2]["user:b@example.com"]


# the plan shows the order `pulumi up` takes -----------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_committed_plan_records_each_resources_dependencies(stack, stack_runs):
    from tools.offline.render import resources_document

    document = {entry["name"]: entry for entry in resources_document(stack_runs[stack])}
    assert "mlflow-artifacts-bucket" in document["mlflow-identity-bucket-0"]["dependsOn"]
    apis = len(REQUIRED_APIS) + (2 if stack == "prod" else 0)  # prod also enables IAP's API and Pub/Sub's (chat)
    assert f"mlflow-apis (all {apis})" in document["mlflow-net-vpc"]["dependsOn"]
    assert {"mlflow-identity-cloudsql-client", "mlflow-identity-wi-binding"} <= set(document["mlflow-migrate"]["dependsOn"])


def test_make_plan_warns_about_an_open_dev_control_plane(capsys):
    from tools.offline.plan import main

    assert main(["--stack", "dev", "--stack", "prod", "--check"]) == 0
    err = capsys.readouterr().err
    assert "warning: stack 'dev': the control plane's public IP endpoint accepts connections from any address" in err
    assert "stack 'prod': the control plane" not in err


def test_make_plan_warns_until_the_iap_audience_is_pinned_to_one_backend_service():
    from infra.config import settings_from_values
    from tools.offline.plan import warnings
    from tools.offline.stack import read_stack_config

    values = read_stack_config("prod")[0]
    unpinned = " ".join(warnings(settings_from_values(values)))
    assert "any other IAP-protected app in it mints assertions this server accepts" in unpinned
    assert "gcloud compute backend-services describe" in unpinned
    edge = {**json.loads(values["mlflow-platform:edge"]), "iapBackendServiceId": "4242"}
    pinned = settings_from_values({**values, "mlflow-platform:edge": json.dumps(edge)})
    assert not any("IAP" in warning for warning in warnings(pinned))


def test_secrets_stay_masked_in_the_dependency_plan(stack_runs):
    from tools.offline.render import render

    resources = render(stack_runs["prod"])["resources.yaml"]
    password = plain(stack_runs["prod"].named("mlflow-app-secrets-admin-password-value").state["result"])
    assert password not in resources


def minutes(duration: str) -> float:
    """A Pulumi custom timeout (`21m`, `1h`, `90s`) in minutes."""
    value, unit = float(duration[:-1]), duration[-1]
    return value * {"s": 1 / 60, "m": 1, "h": 60}[unit]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pulumi_waits_for_every_job_as_long_as_the_job_may_run(stack_runs, stack):
    """Pulumi gives up on a Job after 10 minutes unless told: a Job still within its deadline (waiting
    for IAM to propagate) would fail the `up` although it then succeeds."""
    jobs = stack_runs[stack].of_type("kubernetes:batch/v1:Job")
    assert len(jobs) >= 3
    for job in jobs:
        deadline = job.inputs["spec"]["activeDeadlineSeconds"] / 60
        waits = job.custom_timeouts
        assert all(minutes(waits.get(operation, "10m")) >= deadline for operation in ("create", "update")), \
            f"{job.name}: activeDeadlineSeconds {deadline:.0f} min, Pulumi waits {waits or 'the default 10 min'}"


# 13. names at the longest namePrefix -------------------------------------------------------------
# Every optional part on, so every name the program can build is built (dev hosts the load-test pool on its
# platform cluster, prod on the serving one); project ids are 6-30 characters, and the bucket and the IAM
# database users carry the project's.
EVERYTHING_ON = {"serving.privatePythonRepository": "true", "cmek": "true",
                 "edge.ingressHost": "mlflow.example.com", "edge.cloudArmor": "true", "edge.iap": "true",
                 "edge.iapMembers": '["group:ml@example.com"]', "gcp:project": "p" * 30}
# What Pulumi appends to a name the program leaves to it (cloud_rules.AUTONAME_SUFFIX_LENGTH characters).
AUTONAME_SUFFIX = "-1a2b3c4"
# GCP resources with no name of their own to fit: grants, enabled APIs, versions, the peering, monitoring
# objects GCP names itself, and IAP settings addressed by a fixed path.
UNNAMED_TYPES = frozenset({
    "gcp:projects/service:Service", "gcp:projects/serviceIdentity:ServiceIdentity",
    "gcp:projects/iAMMember:IAMMember", "gcp:serviceaccount/iAMMember:IAMMember",
    "gcp:storage/bucketIAMMember:BucketIAMMember", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:secretmanager/secretVersion:SecretVersion", "gcp:servicenetworking/connection:Connection",
    "gcp:monitoring/alertPolicy:AlertPolicy", "gcp:monitoring/dashboard:Dashboard",
    "gcp:monitoring/notificationChannel:NotificationChannel", "gcp:iap/webIamMember:WebIamMember",
    "gcp:iap/settings:Settings", "gcp:bigquery/datasetIamMember:DatasetIamMember",
    "gcp:pubsub/topicIAMMember:TopicIAMMember", "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
})


def generated_name(record, rule) -> str:
    """The name GCP gets: the program's, or the one Pulumi makes from the logical name."""
    assert len(AUTONAME_SUFFIX) == AUTONAME_SUFFIX_LENGTH
    given = record.inputs.get(rule.field)
    assert given or rule.field == "name", f"{record.urn}: no {rule.field}"
    return given or record.name + AUTONAME_SUFFIX


@pytest.mark.parametrize("stack", STACKS)
def test_every_gcp_name_fits_at_the_longest_name_prefix(run_stack_with, stack):
    run = run_stack_with(stack, {"namePrefix": "x" * NAME_PREFIX_MAX_LENGTH, **EVERYTHING_ON})
    gcp = [r for r in run.resources if r.custom and r.type.startswith("gcp:")]
    assert {r.type for r in gcp} - UNNAMED_TYPES <= set(NAME_RULES), "a GCP type with no name rule"
    problems = [problem for r in gcp if r.type in NAME_RULES
                if (problem := name_problem(r.type, generated_name(r, NAME_RULES[r.type])))]
    assert problems == []
    assert run.of_type("gcp:container/nodePool:NodePool") and run.of_type("gcp:compute/sSLPolicy:SSLPolicy")
