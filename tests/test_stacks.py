"""Whole-program tests: the committed dev and prod stacks under mocks, with policies over every resource."""

from __future__ import annotations

import json

import pytest

from infra.naming import gcp_labels
from tools.offline.mocks import is_secret
from tools.offline.render import resources_document
from tools.policy.rules import STATEFUL_TYPES
from tests.helpers import dig

STACKS = ["dev", "prod"]
# Where each labelable GCP type keeps its labels.
LABEL_PATHS = {
    "gcp:storage/bucket:Bucket": "labels",
    "gcp:artifactregistry/repository:Repository": "labels",
    "gcp:compute/globalAddress:GlobalAddress": "labels",
    "gcp:container/cluster:Cluster": "resourceLabels",
    "gcp:container/nodePool:NodePool": "nodeConfig.resourceLabels",
    "gcp:sql/databaseInstance:DatabaseInstance": "settings.userLabels",
    "gcp:compute/address:Address": "labels",
    "gcp:compute/securityPolicy:SecurityPolicy": "labels",
}
ALWAYS_PRESENT = set(LABEL_PATHS) - {"gcp:compute/address:Address", "gcp:compute/securityPolicy:SecurityPolicy"}
IAM_TYPES = ("gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember",
             "gcp:serviceaccount/iAMMember:IAMMember", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")


def gcp_resources(run):
    return [r for r in run.resources if r.custom and r.type.startswith("gcp:")]


@pytest.mark.parametrize("stack", STACKS)
def test_no_service_account_keys_anywhere(stack_runs, stack):
    assert stack_runs[stack].of_type("gcp:serviceaccount/key:Key") == []


@pytest.mark.parametrize("stack", STACKS)
def test_database_has_no_public_ip_and_requires_tls(stack_runs, stack):
    for instance in stack_runs[stack].of_type("gcp:sql/databaseInstance:DatabaseInstance"):
        assert dig(instance.inputs, "settings.ipConfiguration.ipv4Enabled") is False, instance.urn
        assert not dig(instance.inputs, "settings.ipConfiguration.authorizedNetworks"), instance.urn
        assert dig(instance.inputs, "settings.ipConfiguration.sslMode") == "ENCRYPTED_ONLY", instance.urn


@pytest.mark.parametrize("stack", STACKS)
def test_buckets_are_never_public(stack_runs, stack):
    run = stack_runs[stack]
    for bucket in run.of_type("gcp:storage/bucket:Bucket"):
        assert bucket.inputs["publicAccessPrevention"] == "enforced", bucket.urn
        assert bucket.inputs["uniformBucketLevelAccess"] is True, bucket.urn


@pytest.mark.parametrize("stack", STACKS)
def test_no_iam_grant_to_the_public_and_no_basic_roles(stack_runs, stack):
    for grant in (r for r in stack_runs[stack].resources if r.type in IAM_TYPES):
        assert grant.inputs["member"] not in ("allUsers", "allAuthenticatedUsers"), grant.urn
        assert grant.inputs["role"] not in ("roles/owner", "roles/editor", "roles/viewer"), grant.urn


@pytest.mark.parametrize("stack", STACKS)
def test_every_labelable_resource_carries_the_standard_labels(stack_runs, stack):
    expected = gcp_labels(stack)
    labelled = [r for r in stack_runs[stack].resources if r.type in LABEL_PATHS]
    assert ALWAYS_PRESENT <= {r.type for r in labelled}
    for record in labelled:
        labels = dig(record.inputs, LABEL_PATHS[record.type]) or {}
        assert expected.items() <= labels.items(), f"{record.urn}: labels {labels}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_gcp_resource_waits_for_the_project_apis(stack_runs, stack):
    run = stack_runs[stack]
    services = {r.urn for r in run.of_type("gcp:projects/service:Service")}
    assert services
    for record in gcp_resources(run):
        if record.type != "gcp:projects/service:Service":
            assert services <= set(record.dependencies), f"{record.urn} does not wait for the APIs"


@pytest.mark.parametrize("stack", STACKS)
def test_resources_are_parented_to_components_only(stack_runs, stack):
    run = stack_runs[stack]
    custom = {r.urn for r in run.resources if r.custom}
    for record in run.resources:
        assert record.parent not in custom, f"{record.urn} is parented to a custom resource"


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_never_appear_in_plain_inputs_or_outputs(stack_runs, stack):
    run = stack_runs[stack]
    passwords = [pw.state["result"]["value"] for pw in run.of_type("random:index/randomPassword:RandomPassword")]
    assert passwords
    for record in run.resources:
        plain_inputs = json.dumps({k: v for k, v in record.inputs.items() if not is_secret(v)})
        assert not any(password in plain_inputs for password in passwords), f"{record.urn} holds a password in plain text"
    assert {"platform_kubeconfig", "serving_kubeconfig"} <= run.secret_outputs


def test_dev_is_cheap_and_destroyable(stack_runs):
    run = stack_runs["dev"]
    assert [c.inputs["location"] for c in run.of_type("gcp:container/cluster:Cluster")] == ["us-central1-a"]
    assert all(c.inputs["deletionProtection"] is False for c in run.of_type("gcp:container/cluster:Cluster"))
    assert dig(run.of_type("gcp:container/nodePool:NodePool")[0].inputs, "nodeConfig.spot") is True
    instance = run.of_type("gcp:sql/databaseInstance:DatabaseInstance")[0]
    assert instance.inputs["deletionProtection"] is False
    assert dig(instance.inputs, "settings.availabilityType") == "ZONAL"


def test_prod_is_protected_against_deletion(stack_runs):
    run = stack_runs["prod"]
    for cluster in run.of_type("gcp:container/cluster:Cluster"):
        assert cluster.inputs["deletionProtection"] is True, cluster.urn
    for instance in run.of_type("gcp:sql/databaseInstance:DatabaseInstance"):
        assert instance.inputs["deletionProtection"] is True, instance.urn
        assert dig(instance.inputs, "settings.deletionProtectionEnabled") is True, instance.urn
    for bucket in run.of_type("gcp:storage/bucket:Bucket"):
        assert bucket.inputs["forceDestroy"] is False, bucket.urn


def protected_in_plan(run) -> list[str]:
    """Names that resources.yaml marks `protect: true`."""
    return sorted(entry["name"] for entry in resources_document(run) if entry.get("protect"))


def test_prod_plan_protects_exactly_its_stateful_resources(stack_runs):
    run = stack_runs["prod"]
    stateful = sorted(r.name for r in run.resources if r.type in STATEFUL_TYPES)
    # two clusters, the instance and its two databases, the bucket, the ring and two keys,
    # seven secrets and their first versions, the chat webhook's secret (no version), the payload dataset
    assert len(stateful) == 25
    assert protected_in_plan(run) == stateful


def test_dev_plan_protects_nothing(stack_runs):
    assert protected_in_plan(stack_runs["dev"]) == []


def test_any_deletion_protection_protects_every_stateful_resource(run_stack_with):
    # A destroy that may delete the secrets and keys, then stops at one protected instance, is what
    # `protect` exists to prevent: a dev stack that keeps its database keeps the rest too.
    run = run_stack_with("dev", {"database.deletionProtection": "true"})
    assert protected_in_plan(run) == sorted(r.name for r in run.resources if r.type in STATEFUL_TYPES)


def test_prod_database_is_highly_available_with_point_in_time_recovery(stack_runs):
    instance = stack_runs["prod"].of_type("gcp:sql/databaseInstance:DatabaseInstance")[0]
    assert dig(instance.inputs, "settings.availabilityType") == "REGIONAL"
    assert dig(instance.inputs, "settings.backupConfiguration.pointInTimeRecoveryEnabled") is True


def test_prod_runs_two_regional_clusters_dev_one(stack_runs):
    prod = stack_runs["prod"].of_type("gcp:container/cluster:Cluster")
    assert sorted(c.name for c in prod) == ["mlflow-platform-cluster", "mlflow-serving-cluster"]
    assert {c.inputs["location"] for c in prod} == {"us-central1"}
    assert len(stack_runs["dev"].of_type("gcp:container/cluster:Cluster")) == 1
    pools = {c.name: dig(c.inputs, "ipAllocationPolicy.clusterSecondaryRangeName") for c in prod}
    assert len(set(pools.values())) == 2, f"clusters share a pod range: {pools}"


DEV_PLAN_TYPES = {
    "gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/router:Router",
    "gcp:compute/routerNat:RouterNat", "gcp:servicenetworking/connection:Connection",
    "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool",
    "gcp:sql/databaseInstance:DatabaseInstance", "gcp:sql/database:Database", "gcp:sql/user:User",
    "gcp:storage/bucket:Bucket", "gcp:artifactregistry/repository:Repository",
    "gcp:serviceaccount/account:Account", "random:index/randomPassword:RandomPassword",
}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_declares_the_whole_foundation(stack_runs, stack):
    missing = DEV_PLAN_TYPES - {r.type for r in stack_runs[stack].resources}
    assert not missing, f"{stack} lacks {sorted(missing)}"


def test_changing_a_setting_changes_the_plan(run_stack_with):
    run = run_stack_with("dev", {"clusters.platform.machineType": "n2-standard-8", "clusters.platform.maxNodes": "7"})
    pool = run.of_type("gcp:container/nodePool:NodePool")[0]
    assert dig(pool.inputs, "nodeConfig.machineType") == "n2-standard-8"
    assert dig(pool.inputs, "autoscaling.maxNodeCount") == 7


WORKLOAD_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job")


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_is_hardened_limited_probed_and_digest_pinned(stack_runs, stack):
    run = stack_runs[stack]
    workloads = [r for r in run.resources if r.type in WORKLOAD_TYPES]
    assert len(workloads) >= 4
    for workload in workloads:
        spec = workload.inputs["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload.urn
        assert spec.get("automountServiceAccountToken") is False, workload.urn
        long_running = workload.type == "kubernetes:apps/v1:Deployment"
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{workload.urn} container {c['name']}"
            context = c["securityContext"]
            assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"], where
            assert c["resources"]["requests"]["cpu"], where
            assert "@sha256:" in c["image"], f"{where}: image {c['image']} is not pinned by digest"
            if long_running or c.get("restartPolicy") == "Always":
                assert "readinessProbe" in c and "livenessProbe" in c and "startupProbe" in c, where


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_has_the_recommended_labels(stack_runs, stack):
    keys = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
            "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"}
    for record in stack_runs[stack].resources:
        if record.type.startswith("kubernetes:") and record.custom:
            labels = record.inputs["metadata"].get("labels", {})
            assert keys <= set(labels), f"{record.urn} lacks {sorted(keys - set(labels))}"


def test_dev_plan_lists_the_workloads(stack_runs):
    run = stack_runs["dev"]
    names = {r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:apps/v1:Deployment")}
    assert names == {"mlflow-tracking", "mlflow-serving", "mlflow-notify"}
    for token, minimum in (("kubernetes:batch/v1:Job", 2), ("kubernetes:core/v1:Service", 2),
                           ("kubernetes:core/v1:ServiceAccount", 3),
                           ("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass", 3),
                           ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", 1),
                           ("docker-build:index:Image", 2)):
        assert len(run.of_type(token)) >= minimum, token


# Inputs that carry a name or id GCP keeps unique per project (or, for Cloud SQL, per instance).
NAME_INPUTS = ("name", "accountId", "secretId", "repositoryId", "keyRingId", "cryptoKeyId")


def gcp_names(run) -> dict[tuple, str]:
    """(type, scope, input, value) -> logical name, for every GCP name the program sets itself."""
    names = {}
    for resource in run.resources:
        if not resource.type.startswith("gcp:") or "iam" in resource.type.lower():
            continue  # IAM members name the resource they grant on; they create none
        scope = resource.inputs.get("instance") or resource.inputs.get("keyRing") or ""
        for key in NAME_INPUTS:
            if isinstance(resource.inputs.get(key), str):
                names[(resource.type, scope, key, resource.inputs[key])] = resource.name
    return names


@pytest.mark.parametrize("stack", STACKS)
def test_two_name_prefixes_share_a_project_without_a_gcp_name_in_common(run_stack_with, stack):
    overrides = {"serving.privatePythonRepository": "true"}
    first, second = (gcp_names(run_stack_with(stack, {"namePrefix": prefix, **overrides})) for prefix in ("mlflow", "team2"))
    assert len(first) >= 10, f"{stack}: too few named GCP resources found to compare: {sorted(first)}"
    common = {key: (first[key], second[key]) for key in first.keys() & second.keys()}
    assert not common, f"{stack}: names both prefixes would create in one project: {common}"
