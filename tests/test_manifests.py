"""The committed plan: current, schema-valid for the clusters' Kubernetes, scanned clean, lint clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tools.offline import plan
from tools.offline.crd_validate import is_custom_resource, validate_custom_resource
from tools.offline.render import SECRET_MASK, render
from tools.offline.stack import ROOT
from tools import venvs

# The REGULAR/STABLE release channels' default minor when this was written (GKE, Nov 2026).
KUBERNETES_VERSION = "1.35.0"
BUILTIN_GROUPS = ("v1", "apps/", "batch/", "autoscaling/", "policy/", "networking.k8s.io/", "rbac.authorization.k8s.io/")
CHECKOV = venvs.TOOLS.bin("checkov")
STACKS = ["dev", "prod"]


def manifests(stack: str) -> list[tuple[Path, dict]]:
    paths = sorted((ROOT / "plan" / stack / "k8s").glob("*.yaml"))
    assert paths, f"plan/{stack}/k8s is empty: run `make plan-all`"
    return [(path, yaml.safe_load(path.read_text())) for path in paths]


@pytest.mark.parametrize("stack", STACKS)
def test_committed_plan_is_current(stack_runs, stack):
    report = plan.stale_report(render(stack_runs[stack]), ROOT / "plan" / stack)
    assert not report, f"plan/{stack} is stale; run `make plan-all` and commit:\n" + "".join(report[:80])


@pytest.mark.parametrize("stack", STACKS)
def test_render_is_byte_identical_across_runs(stack_runs, stack):
    from tools.offline.stack import run_stack

    assert render(run_stack(stack)) == render(stack_runs[stack])


def test_plan_check_fails_with_a_diff_when_stale(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "plan"
    (stale / "dev").mkdir(parents=True)
    (stale / "dev" / "resources.yaml").write_text("[]\n")
    monkeypatch.setattr(plan, "PLAN_DIR", stale)
    assert plan.main(["--stack", "dev", "--check"]) == 1
    err = capsys.readouterr().err
    assert "plan/dev is stale" in err and "+++ rendered/resources.yaml" in err


@pytest.mark.parametrize("stack", STACKS)
def test_every_builtin_manifest_is_valid_for_the_cluster_version_strictly(stack):
    checked = 0
    for path, document in manifests(stack):
        if document["apiVersion"].startswith(BUILTIN_GROUPS):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= 15


CHALLENGERS = {"split": {"serving.challenger.weight": 10}, "mirror": {"serving.challenger.mirror": True}}


@pytest.fixture(scope="module")
def challenger_plans() -> dict[tuple[str, str], dict[str, dict]]:
    """Each stack's rendered manifests with a challenger track, split and mirrored: (stack, mode) -> file -> doc."""
    from tools.offline.stack import run_stack

    return {(stack, mode): {name: yaml.safe_load(text) for name, text in render(run_stack(stack, overrides=changes)).items()
                            if name.startswith("k8s/")}
            for stack in STACKS for mode, changes in CHALLENGERS.items()}


@pytest.mark.parametrize("mode", sorted(CHALLENGERS))
@pytest.mark.parametrize("stack", STACKS)
def test_a_plan_with_a_challenger_validates_strictly(challenger_plans, tmp_path, stack, mode):
    documents = challenger_plans[stack, mode]
    kinds = {}
    for name, document in documents.items():
        if document["apiVersion"].startswith(BUILTIN_GROUPS):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        else:
            assert is_custom_resource(document) and validate_custom_resource(document) == [], name
        kinds.setdefault(document["kind"], []).append(document["metadata"]["name"])
        (tmp_path / name.removeprefix("k8s/")).write_text(yaml.safe_dump(document))
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy", "PodMonitoring", "HealthCheckPolicy"):
        assert "mlflow-serving-challenger" in kinds[kind], kind
    [route] = [d for d in documents.values() if d["kind"] == "HTTPRoute"]
    [rule] = route["spec"]["rules"]
    assert [ref["weight"] for ref in rule["backendRefs"]] == ([90, 10] if mode == "split" else [100, 0])
    assert ("filters" in rule) == (mode == "mirror")
    assert checkov("-d", str(tmp_path), "--framework", "kubernetes")["failed"] == []


def test_strict_validation_catches_a_misspelt_field():
    _, document = next((p, d) for p, d in manifests("dev") if d["kind"] == "Deployment")
    document["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_manifests_hold_no_secret_values(stack_runs, stack):
    run = stack_runs[stack]
    secrets = [r.state["result"]["value"] for r in run.of_type("random:index/randomPassword:RandomPassword")]
    text = "".join(p.read_text() for p in (ROOT / "plan" / stack).rglob("*") if p.is_file())
    assert secrets and not any(secret in text for secret in secrets)
    for path, document in manifests(stack):
        if document["kind"] == "Secret":
            assert set(document["stringData"].values()) == {SECRET_MASK}, path.name


@pytest.mark.parametrize("stack", STACKS)
def test_integers_render_as_integers(stack):
    deployment = next(d for _, d in manifests(stack) if d["kind"] == "Deployment")
    ports = [p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
    assert all(isinstance(port, int) for port in ports)


def checkov(*args: str) -> dict:
    assert CHECKOV.exists(), f"checkov is not installed: run `make {venvs.TOOLS.make_target}`"
    result = subprocess.run([str(CHECKOV), "--skip-download", "--compact", "-o", "json", *args],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return {"failed": [f"{c['check_id']} {c['file_path']} {c['resource']}" for r in reports
                       for c in r["results"]["failed_checks"]],
            "passed": sum(r["summary"]["passed"] for r in reports),
            "skipped": [c for r in reports for c in r["results"].get("skipped_checks", [])]}


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_nothing_in_the_manifests(stack):
    result = checkov("-d", f"plan/{stack}/k8s", "--framework", "kubernetes")
    assert result["passed"] > 100
    assert result["failed"] == [], "\n".join(result["failed"])
    for skipped in result["skipped"]:
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20, f"skip without a reason: {skipped['check_id']}"


def test_checkov_finds_nothing_in_the_dockerfile():
    result = checkov("-f", "mlflow_image/Dockerfile", "--framework", "dockerfile")
    assert result["passed"] > 10
    assert result["failed"] == [], "\n".join(result["failed"])


def test_checkov_would_catch_a_privileged_container(tmp_path):
    path, document = next((p, d) for p, d in manifests("dev") if d["kind"] == "Deployment")
    document["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    (tmp_path / path.name).write_text(yaml.safe_dump(document))
    assert checkov("-d", str(tmp_path), "--framework", "kubernetes")["failed"]


def test_yaml_is_lint_clean():
    result = subprocess.run([sys.executable, "-m", "yamllint", "-s", "."], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
