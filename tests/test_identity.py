import pulumi_kubernetes as k8s
import pytest

from infra.identity import BucketGrant, WorkloadIdentity, WorkloadIdentityArgs


def build(run_component, **changes):
    def program():
        provider = k8s.Provider("k8s", kubeconfig="{}")
        WorkloadIdentity("wi", WorkloadIdentityArgs(**{
            "project": "test-project-1", "account_id": "mlflow-tracking", "workload_pool": "test-project-1.svc.id.goog",
            "namespace": "mlflow", "ksa_name": "mlflow-tracking", "provider": provider, "labels": {"a": "b"},
            "project_roles": ("roles/cloudsql.client",),
            "bucket_grants": (BucketGrant(bucket="art-bucket", role="roles/storage.objectUser"),), **changes,
        }))

    return run_component(program)


def test_ksa_is_annotated_with_the_gcp_service_account(run_component):
    run = build(run_component)
    ksa = run.named("wi-ksa")
    email = run.named("wi-gsa").state["email"]
    assert ksa.inputs["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": email}, ksa.urn
    assert ksa.inputs["automountServiceAccountToken"] is False


def test_only_that_ksa_may_impersonate_the_gcp_service_account(run_component):
    run = build(run_component)
    binding = run.named("wi-wi-binding")
    assert binding.inputs["role"] == "roles/iam.workloadIdentityUser"
    assert binding.inputs["member"] == "serviceAccount:test-project-1.svc.id.goog[mlflow/mlflow-tracking]"
    assert binding.inputs["serviceAccountId"] == run.named("wi-gsa").state["name"]


def test_bucket_access_is_granted_on_the_bucket_only(run_component):
    run = build(run_component)
    grant = run.named("wi-bucket-0")
    assert grant.type == "gcp:storage/bucketIAMMember:BucketIAMMember"
    assert (grant.inputs["bucket"], grant.inputs["role"]) == ("art-bucket", "roles/storage.objectUser")
    project_roles = [r.inputs["role"] for r in run.of_type("gcp:projects/iAMMember:IAMMember")]
    assert project_roles == ["roles/cloudsql.client"]


def test_no_service_account_key_is_created(run_component):
    assert build(run_component).of_type("gcp:serviceaccount/key:Key") == []


def test_basic_roles_are_refused():
    with pytest.raises(ValueError, match="basic roles"):
        WorkloadIdentityArgs(project="p", account_id="mlflow-x", workload_pool="p.svc.id.goog", namespace="n",
                             ksa_name="k", provider=None, labels={}, project_roles=("roles/editor",))
