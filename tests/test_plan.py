"""`make plan` and the generated configuration reference."""

from __future__ import annotations

import re

import pytest

from tools.offline import plan, reference
from tools.offline.stack import ROOT


@pytest.fixture(autouse=True)
def plan_dir(tmp_path, monkeypatch):
    """`make plan` writes plan/<stack>/; tests write to a scratch copy instead of the repository."""
    monkeypatch.setattr(plan, "PLAN_DIR", tmp_path / "plan")
    return tmp_path / "plan"


def plan_output(capsys, stack: str) -> tuple[int, str, str]:
    code = plan.main(["--stack", stack])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_prints_full_type_tokens_indented_under_parents(capsys):
    code, out, _ = plan_output(capsys, "dev")
    assert code == 0
    assert "\n    + mlflow:program:MlflowPlatform platform\n" in out
    assert "\n        + mlflow:cluster:GkeCluster mlflow-platform\n" in out
    assert "\n            + gcp:container/cluster:Cluster mlflow-platform-cluster\n" in out
    assert "\n            + gcp:servicenetworking/connection:Connection mlflow-net-psa-connection\n" in out


def test_plan_counts_resources_by_type(capsys):
    _, out, _ = plan_output(capsys, "prod")
    counts = dict(re.findall(r"^    (\S+[^:\s])\s+(\d+)$", out, re.M))  # type counts, not "name: value" outputs
    assert counts["gcp:container/cluster:Cluster"] == "2"
    assert int(counts["total"]) == sum(int(v) for k, v in counts.items() if k != "total")


def test_plan_never_prints_secrets(capsys, stack_runs):
    _, out, _ = plan_output(capsys, "dev")
    passwords = [pw.state["result"]["value"]
                 for pw in stack_runs["dev"].of_type("random:index/randomPassword:RandomPassword")]
    assert passwords and not any(password in out for password in passwords)
    assert "platform_kubeconfig: [secret]" in out and "gke-gcloud-auth-plugin" not in out


def test_plan_of_an_invalid_stack_names_the_problem(capsys, tmp_path, monkeypatch):
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n  gcp:project: my-proj-123\n  mlflow-platform:environment: dev\n  mlflow-platform:clusters:\n    platform:\n      minNodes: 9\n")
    monkeypatch.setattr("tools.offline.stack.ROOT", tmp_path)
    code, out, err = plan_output(capsys, "broken")
    assert code == 2 and out == ""
    assert ("mlflow-platform:clusters.platform.minNodes = 9: must be <= mlflow-platform:clusters.platform.maxNodes (3)"
            in err)


def test_plan_of_an_unknown_stack_lists_the_known_ones(capsys):
    code, _, err = plan_output(capsys, "staging")
    assert code == 2 and "stacks: dev, prod" in err


def test_pulumi_yaml_declares_every_setting_of_the_model():
    assert (ROOT / "Pulumi.yaml").read_text() == reference.pulumi_yaml(), "run `make reference`"


def test_configuration_reference_matches_the_model():
    assert reference.CONFIGURATION_MD.read_text() == reference.configuration_md(), "run `make reference`"


def test_plan_writes_the_rendered_files(capsys, plan_dir):
    code, out, _ = plan_output(capsys, "dev")
    assert code == 0 and "Wrote plan/dev/" in out
    assert (plan_dir / "dev" / "resources.yaml").exists()
    names = sorted(p.name.split("-", 1)[1] for p in (plan_dir / "dev" / "k8s").glob("*-deployment-*"))
    assert names == ["deployment-mlflow-mlflow-notify.yaml", "deployment-mlflow-mlflow-tracking.yaml",
                     "deployment-mlflow-serving-mlflow-serving.yaml"]
