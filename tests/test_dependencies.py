"""Dependency completeness over the whole graph: no input names a declared resource by a literal
without waiting for it (tools/offline/dependencies.py). Shown failing on deliberately broken copies of
the program: the two defects that would have stopped the first `pulumi up` come back."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pytest

import program
from infra.network import Network
from infra.storage import ArtifactBucket
from tools.offline.dependencies import missing_dependencies
from tools.offline.stack import run_program, run_stack


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_literal_reference_is_a_dependency(stack_runs, stack):
    missing = missing_dependencies(stack_runs[stack])
    assert missing == [], "\n".join(map(str, missing))


class BucketByName(ArtifactBucket):
    """The old hand-off: consumers got the configured name, not the bucket's output."""

    def __init__(self, name, args, opts=None):
        super().__init__(name, args, opts)
        self.bucket_name = args.bucket_name


class AddressAsComputed(Network):
    """The old hand-off: consumers got the address computed from the settings."""

    def __init__(self, name, args, opts=None):
        super().__init__(name, args, opts)
        self.internal_addresses = dict(args.internal_ips)


def test_broken_copy_granting_on_the_bucket_by_name_is_caught(monkeypatch):
    monkeypatch.setattr(program, "ArtifactBucket", BucketByName)
    missing = {(ref.consumer, ref.target) for ref in missing_dependencies(run_stack("dev"))}
    assert ("mlflow-identity-bucket-0", "mlflow-artifacts-bucket") in missing
    assert ("mlflow-deployment", "mlflow-artifacts-bucket") in missing


def test_broken_copy_with_a_computed_load_balancer_address_is_caught(monkeypatch):
    monkeypatch.setattr(program, "Network", AddressAsComputed)
    missing = {(ref.consumer, ref.target) for ref in missing_dependencies(run_stack("prod"))}
    assert {("mlflow-internal-lb", "mlflow-net-tracking-ilb-ip"),
            ("mlflow-serving-deployment", "mlflow-net-tracking-ilb-ip")} <= missing


def test_a_secret_named_twice_instead_of_passed_is_caught():
    def build():
        opts = pulumi.ResourceOptions(provider=k8s.Provider("cluster"))
        namespace = k8s.core.v1.Namespace("ns", metadata={"name": "apps"}, opts=opts)
        k8s.core.v1.Secret("credentials", metadata={"name": "db-credentials", "namespace": namespace.metadata["name"]},
                           string_data={"password": "x"}, opts=opts)
        k8s.apps.v1.Deployment("app", metadata={"name": "app", "namespace": namespace.metadata["name"]}, spec={
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{
                "name": "app", "image": "i",
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}],
            }]}}}, opts=opts)

    run = run_program("test", {"gcp:project": "test-project-1"}, program=lambda: build() or {})
    [reference] = missing_dependencies(run)
    assert (reference.consumer, reference.target, reference.literal) == ("app", "Secret credentials", "db-credentials")
    assert "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef" in reference.path
