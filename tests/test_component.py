"""The platform as one component: in the committed stacks, where it keeps every URN an existing stack has,
and in a team's own program (examples/team_program) run under the same mocks."""

from __future__ import annotations

import runpy

import pytest

from tools.offline.stack import ROOT, run_program

PLATFORM_TYPE = "mlflow:program:MlflowPlatform"
EXAMPLE = ROOT / "examples" / "team_program" / "__main__.py"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_platforms_children_alias_the_stack_they_were_declared_in_before(stack_runs, stack):
    # pulumi.Alias(parent=ROOT_STACK_RESOURCE) reaches the engine as a spec without a parent; the engine
    # derives each descendant's old URN from its parent's alias.
    run = stack_runs[stack]
    [platform] = run.of_type(PLATFORM_TYPE)
    children = [r for r in run.resources if r.parent == platform.urn]
    assert len(children) >= 13
    for child in children:
        assert {"spec": {"noParent": True}} in child.aliases, child.urn
    assert [r.urn for r in run.resources if r.parent not in {platform.urn} | {c.urn for c in run.resources}] == [
        platform.urn]


def test_a_team_program_declares_the_platform_beside_its_own_resources():
    run = run_program("dev", {"gcp:project": "fraud-ml-dev"},
                      program=lambda: runpy.run_path(str(EXAMPLE), run_name="__main__") and {})
    [platform] = run.of_type(PLATFORM_TYPE)
    assert platform.name == "fraud-mlflow"
    assert {r.name for r in run.resources if r.parent == platform.urn} >= {"fraud-net", "fraud-platform", "fraud-db",
                                                                          "mlflow", "mlflow-serving"}
    bucket = run.named("fraud-training-data")
    assert bucket.parent != platform.urn and bucket.inputs["publicAccessPrevention"] == "enforced"
    serving = run.named("mlflow-serving-deployment")
    assert "models:/fraud-scorer@champion" in str(serving.inputs)
    pool = run.named("fraud-platform-pool")
    assert pool.inputs["nodeConfig"]["spot"] is True and pool.inputs["autoscaling"]["maxNodeCount"] == 2
