"""The GitHub workflows: valid against GitHub's schema, and doing what reviewers and deployers rely on.

Each behaviour is a `*_problems(workflow)` reader returning what is wrong, so every check is tested
twice: clean on the committed files, and failing on a copy broken the way a careless edit would.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
PULUMI_ACTION = "pulumi/actions@"
AUTH_ACTION = "google-github-actions/auth@"
WIF_PROVIDER = "${{ vars.GCP_WIF_PROVIDER }}"
STACKS = {"dev", "prod"}
MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}")


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    return {on: None} if isinstance(on, str) else {event: None for event in on} if isinstance(on, list) else on


def substitute(value: Any, matrix: dict) -> Any:
    if isinstance(value, str):
        return MATRIX_REF.sub(lambda m: str(matrix.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {key: substitute(item, matrix) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, matrix) for item in value]
    return value


def job_runs(workflow: dict) -> Iterator[tuple[str, dict]]:
    """Every (job id, job) the workflow runs, one per matrix combination, `${{ matrix.* }}` filled in."""
    for job_id, job in workflow["jobs"].items():
        matrix = dict((job.get("strategy") or {}).get("matrix") or {})
        include = matrix.pop("include", [])
        matrix.pop("exclude", None)
        combos = [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())] if matrix else []
        for combo in combos or include or [{}]:
            yield job_id, substitute(job, combo)


def pulumi_steps(workflow: dict) -> Iterator[tuple[str, dict, int, dict]]:
    """(job id, job, step index, step) of every step running pulumi/actions."""
    for job_id, job in job_runs(workflow):
        for index, step in enumerate(job.get("steps", [])):
            if step.get("uses", "").startswith(PULUMI_ACTION):
                yield job_id, job, index, step


def keys_anywhere(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from keys_anywhere(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_anywhere(item)


def preview_problems(workflow: dict) -> list[str]:
    problems = []
    if "pull_request" not in triggers(workflow):
        problems.append("previews do not run on pull_request")
    steps = list(pulumi_steps(workflow))
    previewed = {step["with"].get("stack-name") for _, _, _, step in steps if step["with"].get("command") == "preview"}
    if previewed != STACKS:
        problems.append(f"previewed stacks are {sorted(map(str, previewed))}, not {sorted(STACKS)}")
    for job_id, _, _, step in steps:
        if step["with"].get("comment-on-pr") not in (True, "true"):
            problems.append(f"{job_id}: preview of {step['with'].get('stack-name')} does not comment on the PR")
    if (workflow.get("permissions") or {}).get("pull-requests") != "write":
        problems.append("no pull-requests: write permission, so the preview comment cannot be posted")
    if "github.event.pull_request.number" not in str((workflow.get("concurrency") or {}).get("group")):
        problems.append("concurrency is not per pull request")
    return problems


def auth_problems(workflow: dict) -> list[str]:
    """GCP access only through Workload Identity Federation, with the deploy account of the stack."""
    problems = []
    if "credentials_json" in keys_anywhere(workflow):
        problems.append("credentials_json found: a stored service-account key instead of Workload Identity")
    for job_id, job, index, step in pulumi_steps(workflow):
        stack = step["with"].get("stack-name")
        auth = [s for s in job["steps"][:index] if s.get("uses", "").startswith(AUTH_ACTION)]
        if not auth:
            problems.append(f"{job_id}: no {AUTH_ACTION} step before pulumi")
            continue
        inputs = auth[-1].get("with") or {}
        if inputs.get("workload_identity_provider") != WIF_PROVIDER:
            problems.append(f"{job_id}: workload_identity_provider is not {WIF_PROVIDER}")
        expected_sa = f"${{{{ vars.GCP_DEPLOY_SA_{str(stack).upper()} }}}}"
        if inputs.get("service_account") != expected_sa:
            problems.append(f"{job_id}: service_account for {stack} is {inputs.get('service_account')!r}, "
                            f"not {expected_sa}")
        permissions = {**(workflow.get("permissions") or {}), **(job.get("permissions") or {})}
        if permissions.get("id-token") != "write":
            problems.append(f"{job_id}: no id-token: write permission, so no OIDC token for the federation")
    return problems


def policy_problems(workflow: dict) -> list[str]:
    problems = []
    for job_id, job, index, step in pulumi_steps(workflow):
        packs = str(step["with"].get("policyPacks", "")).split()
        if "policy" not in packs:
            problems.append(f"{job_id}: pulumi {step['with'].get('command')} runs without the policy pack")
        if not any(s.get("run", "").strip() in ("make install", "make test") for s in job["steps"][:index]):
            problems.append(f"{job_id}: .venv, the policy pack's virtualenv, is not installed before pulumi")
    return problems


def deploy_problems(workflow: dict) -> list[str]:
    problems = []
    on = triggers(workflow)
    if "main" not in ((on.get("push") or {}).get("branches") or []) or "workflow_dispatch" not in on:
        problems.append("deploy does not run on push to main and on workflow_dispatch")
    by_stack = {step["with"].get("stack-name"): (job_id, job, index, step)
                for job_id, job, index, step in pulumi_steps(workflow) if step["with"].get("command") == "up"}
    if set(by_stack) != STACKS:
        return problems + [f"`pulumi up` runs for {sorted(map(str, by_stack))}, not {sorted(STACKS)}"]
    dev_job, prod_job = by_stack["dev"][0], by_stack["prod"][1]
    needs = prod_job.get("needs") or []
    if dev_job not in ([needs] if isinstance(needs, str) else needs):
        problems.append("the prod deployment does not need the dev deployment")
    for stack, environment in (("dev", "dev"), ("prod", "production")):
        job_id, job, index, _ = by_stack[stack]
        actual = job.get("environment")
        actual = actual.get("name") if isinstance(actual, dict) else actual
        if actual != environment:
            problems.append(f"{job_id}: environment is {actual!r}, not {environment!r}")
        concurrency = job.get("concurrency") or {}
        if concurrency.get("group") != f"deploy-{stack}" or concurrency.get("cancel-in-progress") is not False:
            problems.append(f"{job_id}: concurrency must be group deploy-{stack} without cancel-in-progress")
        if not any(s.get("uses", "").startswith("docker/setup-buildx-action@") for s in job["steps"][:index]):
            problems.append(f"{job_id}: no docker buildx set up before pulumi up builds the images")
    return problems


WORKFLOW_CHECKS = {
    "preview.yml": [preview_problems, auth_problems, policy_problems],
    "deploy.yml": [deploy_problems, auth_problems, policy_problems],
}


def validate_with_schema(path: Path) -> subprocess.CompletedProcess:
    # A proxy that refuses every connection: the vendored schema must be enough, with no download.
    offline = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, env=offline, timeout=120)


@pytest.mark.parametrize("name", sorted(WORKFLOW_CHECKS))
def test_workflow_is_valid_against_the_github_workflow_schema(name):
    result = validate_with_schema(WORKFLOWS / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validation_rejects_a_broken_workflow(tmp_path):
    broken = load("deploy.yml")
    del broken["jobs"]["dev"]["runs-on"]
    broken["permissions"]["id-token"] = "sometimes"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    result = validate_with_schema(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "runs-on" in result.stdout and "sometimes" in result.stdout, result.stdout


@pytest.mark.parametrize("name,check", [(name, check) for name, checks in WORKFLOW_CHECKS.items() for check in checks],
                         ids=lambda value: getattr(value, "__name__", value))
def test_workflow_behaves_as_promised(name, check):
    assert check(load(name)) == []


def test_every_action_is_pinned_to_a_major_version():
    for name in WORKFLOW_CHECKS:
        for job_id, job in load(name)["jobs"].items():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), f"{name} {job_id}: {step['uses']}"


def test_preview_runs_the_offline_suite_before_previewing():
    workflow = load("preview.yml")
    test_jobs = [job_id for job_id, job in workflow["jobs"].items()
                 if any(step.get("run") == "make test" for step in job.get("steps", []))]
    assert test_jobs, "no job runs make test"
    for job_id, job, _, _ in pulumi_steps(workflow):
        needs = job.get("needs") or []
        assert set(test_jobs) & set([needs] if isinstance(needs, str) else needs), f"{job_id} does not wait for the tests"


def set_path(data: dict, path: str, value: Any) -> dict:
    """`data` with the value at `jobs.prod.steps.@google-github-actions/auth.with` replaced (deleted when
    value is DELETE); `@prefix` is the step whose `uses` starts with prefix, digits are list indices."""
    def child(node: Any, part: str) -> Any:
        if part.startswith("@"):
            return next(i for i, step in enumerate(node) if step.get("uses", "").startswith(part[1:]))
        return int(part) if part.isdigit() else part

    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[child(target, part)]
    if value is DELETE:
        del target[child(target, last)]
    else:
        target[child(target, last)] = value
    return data


DELETE = object()
AUTH, PULUMI, BUILDX = "@google-github-actions/auth", "@pulumi/actions", "@docker/setup-buildx-action"
BREAKAGES = [
    # (workflow, where a careless edit lands, the value it leaves, the check that must catch it, what it says)
    ("preview.yml", f"jobs.preview.steps.{AUTH}.with.credentials_json", "${{ secrets.GCP_KEY }}", auth_problems,
     "credentials_json"),
    ("deploy.yml", f"jobs.prod.steps.{AUTH}.with", {"credentials_json": "${{ secrets.GCP_KEY }}"}, auth_problems,
     "credentials_json"),
    ("deploy.yml", f"jobs.prod.steps.{AUTH}.with.service_account", "${{ vars.GCP_DEPLOY_SA_DEV }}",
     auth_problems, "service_account for prod"),
    ("preview.yml", "jobs.preview.strategy.matrix.include.1.service_account", "${{ vars.GCP_DEPLOY_SA_DEV }}",
     auth_problems, "service_account for prod"),
    ("preview.yml", "permissions.id-token", DELETE, auth_problems, "id-token"),
    ("preview.yml", f"jobs.preview.steps.{PULUMI}.with.comment-on-pr", False, preview_problems, "does not comment"),
    ("preview.yml", "jobs.preview.strategy.matrix.include.1", DELETE, preview_problems, "previewed stacks"),
    ("preview.yml", "on", {"push": None}, preview_problems, "pull_request"),
    ("preview.yml", f"jobs.preview.steps.{PULUMI}.with.policyPacks", DELETE, policy_problems,
     "without the policy pack"),
    ("deploy.yml", f"jobs.prod.steps.{PULUMI}.with.policyPacks", DELETE, policy_problems, "without the policy pack"),
    ("deploy.yml", "jobs.prod.needs", DELETE, deploy_problems, "does not need the dev"),
    ("deploy.yml", "jobs.prod.environment", "prod", deploy_problems, "not 'production'"),
    ("deploy.yml", "jobs.dev.concurrency.cancel-in-progress", True, deploy_problems, "concurrency"),
    ("deploy.yml", f"jobs.dev.steps.{BUILDX}", DELETE, deploy_problems, "buildx"),
]


@pytest.mark.parametrize("name,path,value,check,message", BREAKAGES,
                         ids=[f"{name}:{path}" for name, path, *_ in BREAKAGES])
def test_a_broken_workflow_is_caught(name, path, value, check, message):
    workflow = load(name)
    # Bare `on` loads as True; address it by its real name.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    assert check(workflow) == []
    broken = set_path(copy.deepcopy(workflow), path, value)
    assert any(message in problem for problem in check(broken)), check(broken)
