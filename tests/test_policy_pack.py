"""The policy pack (tools/policy/): its rules pass the committed dev and prod stacks, each rule catches the
problem it exists for, and the pack builds and runs with the real pulumi_policy runtime."""

from __future__ import annotations

import copy
import runpy
import sys
from typing import Any

import pulumi_policy
import pytest
import yaml
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tests.helpers import dig
from tools.offline.mocks import secret
from tools.offline.stack import ROOT, StackRun
from tools.policy import rules

STACKS = ["dev", "prod"]
RULES = {name: check for name, _, check in rules.POLICIES}


@pytest.fixture(scope="module")
def runs(stack_runs) -> dict[str, StackRun]:
    """The real program for dev and prod under mocks (conftest runs each stack once per session)."""
    return stack_runs


def violations(record_type: str, inputs: dict) -> list[str]:
    return [message for check in RULES.values() for message in check(record_type, inputs)]


@pytest.mark.parametrize("stack", STACKS)
def test_every_recorded_resource_complies_with_every_rule(runs, stack):
    found = {r.urn: v for r in runs[stack].resources if (v := violations(r.type, r.inputs))}
    assert found == {}


@pytest.mark.parametrize("stack", STACKS)
def test_rules_meet_the_resources_they_guard(runs, stack):
    # Zero violations only means something if every guarded kind of resource was actually checked.
    types = {r.type for r in runs[stack].resources}
    guarded = {rules.SQL_TYPE, rules.BUCKET_TYPE, rules.CLUSTER_TYPE, rules.NODE_POOL_TYPE,
               "kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job", rules.GATEWAY_TYPE, rules.HTTP_ROUTE_TYPE}
    assert guarded <= types
    assert types & rules.IAM_TYPES
    envs = {rules.get(r.inputs, rules.PROD_PROTECTION[r.type][0])
            for r in runs[stack].resources if r.type in rules.PROD_PROTECTION}
    assert envs == {stack}
    assert rules.STATEFUL_TYPES <= types
    assert {rules.DATASET_TYPE, rules.SINK_TYPE} <= types


def stack_resources(run: StackRun) -> list[rules.StackResource]:
    return [rules.StackResource(r.urn, r.type, r.inputs, r.protect) for r in run.resources]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_complies_with_every_stack_rule(runs, stack):
    assert [v for _, _, check in rules.STACK_POLICIES for v in check(stack_resources(runs[stack]))] == []


@pytest.mark.parametrize("type_token", sorted(rules.STATEFUL_TYPES))
def test_a_stateful_resource_of_prod_without_protect_is_refused(runs, type_token):
    resources = stack_resources(runs["prod"])
    exposed = next(r for r in resources if r.type == type_token)
    found = rules.check_prod_stateful_protected(
        [r._replace(protect=False) if r is exposed else r for r in resources])
    assert len(found) == 1 and found[0].startswith(f"{exposed.urn}: prod's stateful resources must be protected")


def test_dev_stays_destroyable(runs):
    # nothing labelled env=prod: the rule does not ask dev to protect anything, and dev protects nothing
    assert not any(r.protect for r in stack_resources(runs["dev"]))
    assert rules.check_prod_stateful_protected(stack_resources(runs["dev"])) == []


def first(run: StackRun, type_token: str):
    return run.of_type(type_token)[0]


_ABSENT = object()


def has_path(inputs: dict, path: str) -> bool:
    """Whether `a.b.0.c` leads somewhere in `inputs` (the first resource a breakage applies to)."""
    return not path or dig(inputs, path, _ABSENT) is not _ABSENT


def mutated(inputs: dict, path: str, value: Any) -> dict:
    """A copy of `inputs` with `a.b.0.c` set to value (deleted when value is DELETE)."""
    inputs = copy.deepcopy(inputs)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = inputs
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return inputs


DELETE = object()
POD = "spec.template.spec"
BREAKAGES = [
    # (rule, stack, resource type, field, bad value, what the violation must say)
    ("cloud-sql-private-ip-and-tls", "dev", rules.SQL_TYPE, "settings.ipConfiguration.ipv4Enabled", True,
     "ipv4Enabled must be false"),
    ("cloud-sql-private-ip-and-tls", "prod", rules.SQL_TYPE, "settings.ipConfiguration.sslMode",
     "ALLOW_UNENCRYPTED_AND_ENCRYPTED", "sslMode must be 'ENCRYPTED_ONLY'"),
    ("bucket-not-public", "dev", rules.BUCKET_TYPE, "publicAccessPrevention", "inherited",
     "publicAccessPrevention must be 'enforced'"),
    ("bucket-not-public", "prod", rules.BUCKET_TYPE, "uniformBucketLevelAccess", DELETE,
     "uniformBucketLevelAccess must be true"),
    ("iam-no-public-members-or-basic-roles", "dev", "gcp:storage/bucketIAMMember:BucketIAMMember", "member",
     "allUsers", "member 'allUsers'"),
    ("iam-no-public-members-or-basic-roles", "prod", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
     "member", "allAuthenticatedUsers", "member 'allAuthenticatedUsers'"),
    ("iam-no-public-members-or-basic-roles", "prod", "gcp:projects/iAMMember:IAMMember", "role", "roles/editor",
     "basic role 'roles/editor'"),
    ("iam-no-public-members-or-basic-roles", "dev", "gcp:serviceaccount/iAMMember:IAMMember", "role",
     "roles/owner", "basic role 'roles/owner'"),
    ("gke-private-nodes-and-workload-identity", "dev", rules.CLUSTER_TYPE, "privateClusterConfig.enablePrivateNodes",
     False, "enablePrivateNodes must be true"),
    ("gke-private-nodes-and-workload-identity", "prod", rules.CLUSTER_TYPE, "workloadIdentityConfig", DELETE,
     "must enable Workload Identity"),
    ("gke-cluster-first-up", "dev", rules.CLUSTER_TYPE, "securityPostureConfig.vulnerabilityMode",
     "VULNERABILITY_BASIC", "no longer offered by GKE"),
    ("gke-cluster-first-up", "prod", rules.CLUSTER_TYPE, "nodeConfig.serviceAccount", DELETE,
     "Compute Engine default service account"),
    ("gke-cluster-first-up", "prod", rules.CLUSTER_TYPE, "privateClusterConfig.enablePrivateEndpoint", False,
     "prod control plane must not be open to the internet"),
    ("gke-node-pool-metadata-server", "dev", rules.NODE_POOL_TYPE, "nodeConfig.workloadMetadataConfig.mode",
     "GCE_METADATA", "mode must be 'GKE_METADATA'"),
    ("kubernetes-deployments-drain", "dev", "kubernetes:apps/v1:Deployment",
     f"{POD}.containers.0.lifecycle", DELETE, "lifecycle.preStop must drain"),
    ("kubernetes-deployments-drain", "prod", "kubernetes:apps/v1:Deployment",
     f"{POD}.terminationGracePeriodSeconds", 5, "must exceed the preStop drain"),
    ("kubernetes-workload-hardening", "dev", "kubernetes:apps/v1:Deployment",
     f"{POD}.containers.0.securityContext.readOnlyRootFilesystem", DELETE, "readOnlyRootFilesystem must be true"),
    ("kubernetes-workload-hardening", "prod", "kubernetes:apps/v1:Deployment",
     f"{POD}.initContainers.0.securityContext.runAsNonRoot", False, "runAsNonRoot must be true"),
    ("kubernetes-workload-hardening", "dev", "kubernetes:batch/v1:Job",
     f"{POD}.containers.0.securityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation must be false"),
    ("kubernetes-workload-hardening", "prod", "kubernetes:batch/v1:Job",
     f"{POD}.containers.0.securityContext.capabilities.drop", ["NET_RAW"], "capabilities.drop must contain 'ALL'"),
    ("kubernetes-workload-hardening", "dev", "kubernetes:apps/v1:Deployment",
     f"{POD}.containers.0.resources.limits.memory", DELETE, "resources.limits.memory must be set"),
    ("kubernetes-workload-hardening", "prod", "kubernetes:batch/v1:Job", f"{POD}.containers.0.image",
     "us-central1-docker.pkg.dev/p/mlflow-images/mlflow-tracking:3.1", "must be pinned by digest"),
    ("cloud-sql-iam-database-logins", "dev", rules.SQL_USER_TYPE, "type", DELETE, "of type BUILT_IN"),
    ("cloud-sql-iam-database-logins", "prod", rules.SQL_USER_TYPE, "password", "hunter22", "has a password"),
    ("cloud-sql-iam-database-logins", "dev", rules.SQL_TYPE, "settings.databaseFlags", [],
     "cloudsql.iam_authentication must be 'on'"),
    ("prod-encryption-keys", "prod", rules.CLUSTER_TYPE, "databaseEncryption", DELETE,
     "databaseEncryption.keyName must be set"),
    ("prod-encryption-keys", "prod", rules.CLUSTER_TYPE, "databaseEncryption.state", "DECRYPTED",
     "databaseEncryption.state must be 'ENCRYPTED'"),
    ("prod-encryption-keys", "prod", rules.SQL_TYPE, "encryptionKeyName", DELETE, "encryptionKeyName must be set"),
    ("prod-encryption-keys", "prod", rules.BUCKET_TYPE, "encryption", DELETE,
     "encryption.defaultKmsKeyName must be set"),
    ("prod-deletion-protection", "prod", rules.CLUSTER_TYPE, "deletionProtection", False,
     "deletionProtection must be true"),
    ("prod-deletion-protection", "prod", rules.SQL_TYPE, "settings.deletionProtectionEnabled", False,
     "settings.deletionProtectionEnabled must be true"),
    ("prod-deletion-protection", "prod", rules.SQL_TYPE, "deletionProtection", DELETE,
     "deletionProtection must be true"),
    ("prod-deletion-protection", "prod", rules.BUCKET_TYPE, "forceDestroy", True, "forceDestroy must be false"),
    ("prod-deletion-protection", "prod", rules.DATASET_TYPE, "deleteContentsOnDestroy", True,
     "deleteContentsOnDestroy must be false"),
    ("prod-encryption-keys", "prod", rules.DATASET_TYPE, "defaultEncryptionConfiguration", DELETE,
     "defaultEncryptionConfiguration.kmsKeyName must be set"),
    ("bigquery-dataset-private-and-expiring", "dev", rules.DATASET_TYPE, "defaultPartitionExpirationMs", DELETE,
     "must expire its partitions"),
    ("bigquery-dataset-private-and-expiring", "prod", rules.DATASET_TYPE, "accesses",
     [{"role": "READER", "specialGroup": "allAuthenticatedUsers"}], "must not be public"),
    ("bigquery-dataset-private-and-expiring", "dev", rules.DATASET_TYPE, "accesses",
     [{"role": "READER", "iamMember": "allUsers"}], "must not be public"),
    ("iam-no-public-members-or-basic-roles", "prod", "gcp:bigquery/datasetIamMember:DatasetIamMember", "member",
     "allUsers", "member 'allUsers'"),
    # a broken copy of the drift job's identity: its dataset role granted on the project
    ("no-project-wide-data-roles", "dev", "gcp:projects/iAMMember:IAMMember", "role", "roles/bigquery.dataViewer",
     "granted on the whole project"),
    ("gateway-internal-only", "prod", rules.GATEWAY_TYPE, "spec.gatewayClassName", "gke-l7-global-external-managed",
     "is not an internal class"),
    ("http-route-weights-sum-to-100", "dev", rules.HTTP_ROUTE_TYPE, "spec.rules.0.backendRefs.0.weight", 90,
     "weights must sum to 100"),
    ("http-route-weights-sum-to-100", "prod", rules.HTTP_ROUTE_TYPE, "spec.rules.0.backendRefs.0.weight", DELETE,
     "every backend needs a weight"),
]


@pytest.mark.parametrize("rule,stack,type_token,path,value,message", BREAKAGES,
                         ids=[f"{rule}:{stack}:{t.rsplit(':', 1)[1]}.{path}" for rule, stack, t, path, *_ in BREAKAGES])
def test_each_rule_catches_its_problem(runs, rule, stack, type_token, path, value, message):
    record = next(r for r in runs[stack].of_type(type_token) if has_path(r.inputs, path.rpartition(".")[0]))
    assert RULES[rule](record.type, record.inputs) == []
    found = RULES[rule](record.type, mutated(record.inputs, path, value))
    assert any(message in violation for violation in found), found


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("path, value, message", [
    ("destination", "bigquery.googleapis.com/projects/someone-else/datasets/theirs", "is not a BigQuery dataset of this stack"),
    ("destination", "storage.googleapis.com/an-unmanaged-bucket", "is not a BigQuery dataset of this stack"),
    ("bigqueryOptions", DELETE, "usePartitionedTables must be true"),
])
def test_a_sink_writing_elsewhere_than_its_own_partitioned_dataset_is_refused(runs, stack, path, value, message):
    resources = stack_resources(runs[stack])
    sink = next(r for r in resources if r.type == rules.SINK_TYPE)
    found = rules.check_sinks_write_to_own_datasets(
        [r._replace(props=mutated(r.props, path, value)) if r is sink else r for r in resources])
    assert len(found) == 1 and message in found[0]


def with_resource(resources: list, urn_suffix: str, path: str, value: Any) -> list:
    """`resources` with the one whose URN ends in `urn_suffix` changed at `path`."""
    [target] = [r for r in resources if r.urn.endswith(urn_suffix)]
    return [r._replace(props=mutated(r.props, path, value)) if r is target else r for r in resources]


@pytest.fixture(scope="module")
def with_challenger() -> list[rules.StackResource]:
    from tools.offline.stack import run_stack
    return stack_resources(run_stack("prod", overrides={"serving.challenger.weight": 10,
                                                        "serving.challenger.mirror": False}))


def test_a_stack_with_a_challenger_complies_with_every_rule(with_challenger):
    assert [v for _, _, check in rules.STACK_POLICIES for v in check(with_challenger)] == []
    assert [v for r in with_challenger for v in violations(r.type, r.props)] == []


@pytest.mark.parametrize("path,value,what", [
    ("spec.rules.0.backendRefs.1.name", "mlflow-serving-canary", "backend Service"),
    ("spec.parentRefs.0.name", "elsewhere", "parent Gateway"),
    ("spec.rules.0.filters", [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 8080}}}],
     "backend Service"),
])
def test_a_route_to_an_undeclared_service_or_gateway_is_refused(with_challenger, path, value, what):
    broken = with_resource(with_challenger, "mlflow-serving-route", path, value)
    [found] = rules.check_routes_reference_declared_objects(broken)
    assert what in found and "is not declared by the stack" in found


@pytest.mark.parametrize("path,value,field", [
    ("spec.template.spec.containers.0.resources.limits.memory", "64Gi", "resources"),
    ("spec.template.spec.containers.0.readinessProbe", DELETE, "readinessProbe"),
])
def test_a_challenger_unlike_its_champion_is_refused(with_challenger, path, value, field):
    broken = with_resource(with_challenger, "mlflow-serving-challenger-deployment", path, value)
    [found] = rules.check_challenger_like_champion(broken)
    assert f"{field} differs from the champion's" in found


def test_the_packs_health_check_ranges_are_the_programs():
    from infra.cloud_rules import HEALTH_CHECK_RANGES
    assert rules.GOOGLE_HEALTH_CHECK_RANGES == set(HEALTH_CHECK_RANGES)


@pytest.mark.parametrize("sources, extra", [
    (["0.0.0.0/0"], "['0.0.0.0/0']"),
    (["10.129.0.0/23", "35.191.0.0/16", "130.211.0.0/22", "10.0.0.0/8"], "['10.0.0.0/8']"),
    (["35.191.0.0/16", "130.211.0.0/22"], "[]"),  # the proxies' subnet missing: the Gateway reaches no pod
])
def test_a_load_balancer_firewall_open_wider_or_narrower_is_refused(with_challenger, sources, extra):
    assert rules.check_firewall_admits_the_load_balancer_only(with_challenger) == []
    broken = with_resource(with_challenger, "mlflow-serving-allow-load-balancer", "sourceRanges", sources)
    [found] = rules.check_firewall_admits_the_load_balancer_only(broken)
    assert "sourceRanges must be exactly the proxy-only subnet" in found and f"extra {extra}" in found


def test_a_challenger_without_a_champion_is_refused(with_challenger):
    alone = [r for r in with_challenger if not r.urn.endswith("::mlflow-serving-deployment")]
    [found] = rules.check_challenger_like_champion(alone)
    assert "needs a champion Deployment" in found


AUTHORITATIVE = ["gcp:secretmanager/secretIamBinding:SecretIamBinding", "gcp:secretmanager/secretIamPolicy:SecretIamPolicy",
                 "gcp:projects/iAMBinding:IAMBinding", "gcp:projects/iAMPolicy:IAMPolicy",
                 "gcp:serviceaccount/iAMBinding:IAMBinding", "gcp:serviceaccount/iAMPolicy:IAMPolicy",
                 "gcp:storage/bucketIAMBinding:BucketIAMBinding", "gcp:storage/bucketIAMPolicy:BucketIAMPolicy",
                 "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding", "gcp:iap/webIamPolicy:WebIamPolicy"]


@pytest.mark.parametrize("type_token", AUTHORITATIVE)
def test_authoritative_iam_is_refused(type_token):
    found = RULES["iam-members-only"](type_token, {"role": "roles/secretmanager.secretAccessor",
                                                   "members": ["serviceAccount:a@p.iam.gserviceaccount.com"]})
    assert len(found) == 1 and found[0].startswith(f"{type_token} is authoritative")


@pytest.mark.parametrize("stack", STACKS)
def test_a_stack_granting_by_binding_is_refused_by_the_pack(pack, runs, stack):
    # The committed stack grants by members only; the same grant made authoritative is caught.
    member_grants = [r for r in runs[stack].resources if r.type.endswith(("IamMember", "IAMMember"))]
    assert member_grants and not [r for r in runs[stack].resources if rules.AUTHORITATIVE_IAM.search(r.type)]
    grant = member_grants[0]
    binding = grant.type.replace("IamMember", "IamBinding").replace("IAMMember", "IAMBinding")
    inputs = {**{k: v for k, v in grant.inputs.items() if k != "member"}, "members": [grant.inputs["member"]]}
    assert any("is authoritative" in v for v in run_policies(pack, binding, inputs))


def test_passage_through_iap_is_never_public(run_stack_with):
    run = run_stack_with("prod", {"edge.iap": "true", "edge.iapMembers": '["group:ml@example.com"]'})
    [grant] = run.of_type("gcp:iap/webIamMember:WebIamMember")
    assert violations(grant.type, grant.inputs) == []
    found = RULES["iam-no-public-members-or-basic-roles"](grant.type, mutated(grant.inputs, "member", "allUsers"))
    assert found == ["IAM grant to the public: member 'allUsers' is forbidden"]


def test_service_account_keys_are_refused(runs):
    account = first(runs["dev"], "gcp:serviceaccount/account:Account")
    key_inputs = {"serviceAccountId": account.state["name"]}
    assert RULES["no-service-account-keys"](rules.KEY_TYPE, key_inputs) == [
        "service-account keys are forbidden: they leak and never expire; use Workload Identity"]


def test_pod_level_non_root_covers_containers_that_do_not_override_it(runs):
    job = first(runs["dev"], "kubernetes:batch/v1:Job")
    inputs = mutated(job.inputs, f"{POD}.containers.0.securityContext.runAsNonRoot", DELETE)
    assert RULES["kubernetes-workload-hardening"](job.type, inputs) == []
    inputs = mutated(inputs, f"{POD}.securityContext.runAsNonRoot", DELETE)
    assert any("runAsNonRoot must be true" in v for v in RULES["kubernetes-workload-hardening"](job.type, inputs))


def test_deletion_protection_is_only_required_in_prod(runs):
    # dev is destroyable on purpose: its cluster, instance and bucket carry env=dev.
    for type_token in rules.PROD_PROTECTION:
        record = first(runs["dev"], type_token)
        label_path, required = rules.PROD_PROTECTION[type_token]
        assert rules.get(record.inputs, label_path) == "dev"
        relabelled = mutated(record.inputs, label_path, "prod")
        assert RULES["prod-deletion-protection"](type_token, relabelled), f"dev {type_token} would pass as prod"


def test_an_image_unknown_during_preview_is_not_judged(runs):
    deployment = first(runs["dev"], "kubernetes:apps/v1:Deployment")
    inputs = mutated(deployment.inputs, f"{POD}.containers.0.image", rules.UNKNOWN)
    assert RULES["kubernetes-workload-hardening"](deployment.type, inputs) == []


def test_rules_see_through_secrets(runs):
    bucket = first(runs["prod"], rules.BUCKET_TYPE)
    assert violations(bucket.type, mutated(bucket.inputs, "publicAccessPrevention", secret("enforced"))) == []
    assert violations(bucket.type, mutated(bucket.inputs, "labels", secret(bucket.inputs["labels"]))) == []
    found = violations(bucket.type, mutated(bucket.inputs, "publicAccessPrevention", secret("inherited")))
    assert any("publicAccessPrevention" in v for v in found), found


@pytest.fixture
def pack(monkeypatch) -> dict:
    """tools/policy/__main__.py run as the Pulumi CLI runs it, with PolicyPack capturing instead of serving gRPC."""
    captured: dict = {}
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: captured.update(kwargs))
    try:
        runpy.run_path(str(ROOT / "tools" / "policy"), run_name="__main__")
    finally:
        sys.modules.pop("rules", None)  # imported from the pack directory, as the CLI does
    return captured


def test_pack_is_built_from_every_rule(pack):
    assert pack["name"] == "mlflow-platform-security"
    assert pack["enforcement_level"] is pulumi_policy.EnforcementLevel.MANDATORY
    assert [p.name for p in pack["policies"]] == [name for name, _, _ in rules.POLICIES + rules.STACK_POLICIES]
    resource_policies, stack_policies = pack["policies"][:len(rules.POLICIES)], pack["policies"][len(rules.POLICIES):]
    assert all(isinstance(p, pulumi_policy.ResourceValidationPolicy) and p.description for p in resource_policies)
    assert all(isinstance(p, pulumi_policy.StackValidationPolicy) and p.description for p in stack_policies)


def run_policies(pack: dict, type_token: str, inputs: dict) -> list[str]:
    """Every violation the pack's policies report for one resource, through the runtime's own argument types."""
    props = unknown_checking_proxy(deserialize_properties(inputs))
    args = pulumi_policy.ResourceValidationArgs(type_token, props, "urn:test", "test", None, None)
    reported: list[str] = []
    for policy in pack["policies"]:
        if isinstance(policy, pulumi_policy.ResourceValidationPolicy):
            policy.validate(args, lambda message, urn=None: reported.append(message))
    return reported


def run_stack_policies(pack: dict, run: StackRun, unprotected: str = "") -> list[str]:
    """Every violation the pack's stack policies report for the stack, `unprotected` (a name) unprotected."""
    no_timeouts = pulumi_policy.PolicyCustomTimeouts(0, 0, 0)
    resources = [pulumi_policy.PolicyResource(
        r.type, deserialize_properties(r.inputs), r.urn, r.name,
        pulumi_policy.PolicyResourceOptions(r.protect and r.name != unprotected, [], None, [], no_timeouts, []),
        None, None, [], {}) for r in run.resources]
    reported: list[str] = []
    for policy in pack["policies"]:
        if isinstance(policy, pulumi_policy.StackValidationPolicy):
            policy.validate(pulumi_policy.StackValidationArgs(resources),
                            lambda message, urn=None: reported.append(message))
    return reported


@pytest.mark.parametrize("stack", STACKS)
def test_pack_passes_the_stack_through_the_stack_policies(pack, runs, stack):
    assert run_stack_policies(pack, runs[stack]) == []


def test_pack_reports_an_unprotected_prod_database(pack, runs):
    found = run_stack_policies(pack, runs["prod"], unprotected="mlflow-db-mlflow")
    assert len(found) == 1 and "gcp:sql/database:Database::mlflow-db-mlflow: prod's stateful" in found[0], found


@pytest.mark.parametrize("stack", STACKS)
def test_pack_passes_the_stack_through_the_policy_runtime(pack, runs, stack):
    found = {r.urn: v for r in runs[stack].resources if (v := run_policies(pack, r.type, r.inputs))}
    assert found == {}


def test_pack_reports_violations_and_tolerates_preview_unknowns(pack, runs):
    instance = first(runs["prod"], rules.SQL_TYPE)
    found = run_policies(pack, instance.type, mutated(instance.inputs, "settings.ipConfiguration.ipv4Enabled", True))
    assert any("ipv4Enabled must be false" in v for v in found), found

    deployment = first(runs["prod"], "kubernetes:apps/v1:Deployment")
    # During preview an image still to be built is unknown: judged at apply, not an error now.
    assert run_policies(pack, deployment.type,
                        mutated(deployment.inputs, f"{POD}.containers.0.image", UNKNOWN_STRING_VALUE)) == []
    # Other fields unknown in preview fail closed rather than pass unchecked.
    found = run_policies(pack, deployment.type,
                         mutated(deployment.inputs, f"{POD}.containers.0.securityContext.runAsNonRoot",
                                 UNKNOWN_STRING_VALUE))
    assert any("runAsNonRoot must be true (is <unknown until apply>)" in v for v in found), found


def test_pack_runs_in_the_project_virtualenv_which_holds_its_pins():
    """No virtualenv of its own: PulumiPolicy.yaml names .venv (`make install`), and requirements-dev.txt
    pins what the pack's requirements.txt (read when the pack is published) pins."""
    pack_dir = ROOT / "tools" / "policy"
    project = yaml.safe_load((pack_dir / "PulumiPolicy.yaml").read_text())
    assert (pack_dir / project["runtime"]["options"]["virtualenv"]).resolve() == (ROOT / ".venv").resolve()
    installed = {line.strip() for name in ("requirements.txt", "requirements-dev.txt")
                 for line in (ROOT / name).read_text().splitlines()}
    pins = [line.strip() for line in (pack_dir / "requirements.txt").read_text().splitlines() if line.strip()]
    assert pins and all(pin in installed for pin in pins), pins


def test_a_prod_stack_without_iap_is_refused_for_authenticating_people_by_password(run_stack_with, runs):
    without_iap = stack_resources(run_stack_with("prod", {"edge.iap": "false", "access.teams": "{}"}))
    found = rules.check_prod_people_identity(without_iap)
    assert len(found) == 1 and "mlflow-auth-config: prod's tracking server authenticates people with basic-auth" in found[0]
    assert "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" in found[0]
    assert rules.check_prod_people_identity(stack_resources(runs["prod"])) == []
    # dev may keep basic auth: nothing in it is labelled env=prod
    assert rules.check_prod_people_identity(stack_resources(runs["dev"])) == []
    assert [f for _, f in rules.auth_functions(stack_resources(runs["dev"]))] == [rules.BASIC_AUTH_FUNCTION]


def test_an_alert_policy_that_notifies_nobody_is_refused_where_channels_exist(runs):
    resources = stack_resources(runs["prod"])
    assert rules.check_alert_policies_notify(resources) == []
    muted = [r._replace(props={**r.props, "notificationChannels": []}) if r.urn.endswith("mlflow-monitoring-notifications") else r for r in resources]
    found = rules.check_alert_policies_notify(muted)
    assert len(found) == 1 and "mlflow-monitoring-notifications" in found[0] and "names none" in found[0], found
    # a stack with no channel (dev) has nothing to notify
    assert rules.check_alert_policies_notify(stack_resources(runs["dev"])) == []


@pytest.mark.parametrize("path, value, message", [
    ("type", "webhook_tokenauth", "keeps its URL in a plain label"),
    ("type", "webhook_basicauth", "keeps its URL in a plain label"),
    ("labels.topic", "projects/someone-else/topics/mlflow-alerts", "not a topic of this stack"),
    ("labels.topic", "mlflow-alerts", "not a topic of this stack"),
])
def test_a_channel_with_its_url_in_a_label_or_publishing_elsewhere_is_refused(runs, path, value, message):
    resources = stack_resources(runs["prod"])
    assert rules.check_channels_keep_urls_out(resources) == []
    found = rules.check_channels_keep_urls_out(with_resource(resources, "mlflow-chat-channel", path, value))
    assert len(found) == 1 and message in found[0] and "mlflow-chat-channel" in found[0], found
