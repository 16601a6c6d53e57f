"""The cluster load test, its own Pulumi project (loadtest/Pulumi.yaml): its settings are refused by name;
under mocks whose StackReference answers the platform's own mocked outputs it declares its pool,
namespace, image, identities, user and templates, rendered, validated, scanned and policy-checked like the
platform's; the platform declares nothing of it, and nothing of it can touch the platform's resources;
`make loadtest TARGET=cluster` drives the templates through a fake Kubernetes API and brings the results back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from infra.images import build_tag
from loadtest import cluster
from loadtest.cluster import ClusterRun, ClusterRunError, ClusterRunner, job_from_template, run_cluster
from loadtest.pod_results import END, extract, pack
from loadtest.stack.rig import build_load_test
from loadtest.stack.settings import LoadTestConfigError, LoadTestSettings, load_settings, settings_from_values
from loadtest.stack.templates import (
    CREDENTIALS_KSA, NAMESPACE, PASSWORD_FILE, POOL_TAINT, RUN_LABEL, SETUP_KSA, USERNAME, master_name, workers_name,
)
from tools.offline import crd_validate, plan
from tools.offline.render import render
from tools.offline.stack import ROOT, read_stack_config, run_load_test_stack, run_program
from tools.ops.stack import StackOutputError, StackOutputs
from tools.policy import rules
from tests.test_manifests import KUBERNETES_VERSION, checkov
from tests.test_promote import FakeClock

STACKS = ("dev", "prod")
NODE_POOL = "gcp:container/nodePool:NodePool"
SECRET_READER = "gcp:secretmanager/secretIamMember:SecretIamMember"


@pytest.fixture(scope="module")
def load_runs():
    """Both committed load-test stacks, each against its platform stack's mocked outputs."""
    return {stack: run_load_test_stack(stack) for stack in STACKS}


def plan_dir(stack: str) -> Path:
    return ROOT / "plan" / f"loadtest-{stack}"


def manifests(stack: str) -> dict[str, dict]:
    paths = sorted((plan_dir(stack) / "k8s").glob("*.yaml"))
    assert paths, f"plan/loadtest-{stack}/k8s is empty: run `make plan-all`"
    return {path.name: yaml.safe_load(path.read_text()) for path in paths}


def pod_of(document: dict) -> dict:
    spec = document["spec"]
    return (spec["jobTemplate"]["spec"] if document["kind"] == "CronJob" else spec)["template"]["spec"]


# --- settings -------------------------------------------------------------------------------
BASE = {"mlflow-loadtest:platformStack": "organization/mlflow-platform/dev"}


@pytest.mark.parametrize("overrides, message", [
    ({"mlflow-loadtest:platformStack": "a b"}, "mlflow-loadtest:platformStack = 'a b': must name a stack fully"),
    # Pulumi would resolve these against this project (mlflow-loadtest): the load test would load itself.
    ({"mlflow-loadtest:platformStack": "dev"}, "mlflow-loadtest:platformStack = 'dev': must name a stack fully"),
    ({"mlflow-loadtest:platformStack": "organization/dev"}, "as <organization>/<project>/<stack>"),
    ({"mlflow-loadtest:machineType": "e2-medium"},
     "mlflow-loadtest:machineType = 'e2-medium': must be a machine type with 2 or more dedicated vCPUs"),
    ({"mlflow-loadtest:machineType": "n2-standard-1"}, "2 or more dedicated vCPUs"),
    ({"mlflow-loadtest:machineType": "x9-standard-4"}, "mlflow-loadtest:machineType = 'x9-standard-4': must be"),
    ({"mlflow-loadtest:workers": "0"}, "mlflow-loadtest:workers = '0': Input should be greater than or equal to 1"),
    ({"mlflow-loadtest:workers": "33"}, "mlflow-loadtest:workers = '33': Input should be less than or equal to 32"),
    ({"mlflow-loadtest:diskSizeGb": "5"}, "mlflow-loadtest:diskSizeGb = '5': Input should be greater than or equal"),
    ({"mlflow-loadtest:loadTesting": "true"}, "mlflow-loadtest:loadTesting: unknown setting; known: "),
])
def test_bad_load_test_settings_are_refused_naming_the_key_and_what_is_allowed(overrides, message):
    values = {key: value for key, value in {**BASE, **overrides}.items() if value is not None}
    with pytest.raises(LoadTestConfigError) as refused:
        settings_from_values(values)
    assert message in str(refused.value)


def test_a_bad_stack_is_refused_before_any_resource_is_declared(monkeypatch, capsys):
    monkeypatch.setattr(plan, "PLAN_DIR", Path("/nonexistent"))
    monkeypatch.setattr("tools.offline.stack.run_stack", lambda stack: pytest.fail("the platform ran"))
    monkeypatch.setattr("tools.offline.stack.read_stack_config",
                        lambda *args: ({**BASE, "mlflow-loadtest:workers": "64"}, []))
    assert plan.main(["--loadtest-stack", "dev", "--check"]) == 2
    assert "mlflow-loadtest:workers = '64'" in capsys.readouterr().err


@pytest.mark.parametrize("machine, workers, nodes", [
    ("e2-standard-4", 2, 1), ("e2-standard-4", 3, 2), ("e2-standard-2", 2, 3), ("n2-standard-8", 13, 2)])
def test_the_pool_grows_to_fit_the_master_and_a_vcpu_per_worker(machine, workers, nodes):
    settings = settings_from_values({**BASE, "mlflow-loadtest:machineType": machine,
                                     "mlflow-loadtest:workers": str(workers)})
    assert settings.max_nodes == nodes


def test_the_project_file_declares_every_setting_with_its_default_and_the_stacks_only_what_differs():
    declared = yaml.safe_load((ROOT / "loadtest" / "Pulumi.yaml").read_text())
    assert declared["name"] == "mlflow-loadtest" and "main" not in declared  # the program: loadtest/__main__.py
    model = {field.alias: field for field in LoadTestSettings.model_fields.values()}
    assert set(declared["config"]) == set(model)
    for key, field in model.items():
        assert declared["config"][key].get("default") == (None if field.is_required() else field.default), key
    for stack in STACKS:
        config, _ = read_stack_config(stack, ROOT / "loadtest", "mlflow-loadtest")
        defaults = {f"mlflow-loadtest:{key}": str(field.default).lower() for key, field in model.items()
                    if not field.is_required()}
        assert not {key for key, value in config.items() if defaults.get(key) == value}, stack
        assert settings_from_values(config).platform_stack is None, stack  # the default names it


@pytest.mark.parametrize("stack", STACKS)
def test_by_default_the_load_test_loads_the_platform_stack_of_its_own_organization_and_name(stack_runs, stack):
    config, _ = read_stack_config(stack, ROOT / "loadtest", "mlflow-loadtest")
    # The mocks answer only this StackReference name: any other one fails the run.
    run = run_program(stack, config, program=lambda: build_load_test(load_settings()), project="mlflow-loadtest",
                      references={f"organization/mlflow-platform/{stack}": stack_runs[stack]})
    assert run.of_type(NODE_POOL)
    chosen = settings_from_values({**BASE, "mlflow-loadtest:platformStack": "acme/mlflow-platform/staging"})
    assert chosen.platform_stack_for("organization", stack) == "acme/mlflow-platform/staging"
    assert settings_from_values({}).platform_stack_for("acme", stack) == f"acme/mlflow-platform/{stack}"


# --- the platform declares none of it ------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_platform_plans_hold_no_load_test_resource(stack_runs, stack):
    run = stack_runs[stack]
    assert not [r.urn for r in run.resources if "loadtest" in r.urn or "locust" in r.urn]
    assert [r.inputs["nodeConfig"]["labels"] for r in run.of_type(NODE_POOL)] == [{"pool": "default"}] * len(
        run.of_type(NODE_POOL))
    assert not [name for name in run.outputs if "load_test" in name or "loadtest" in name]
    text = "".join(p.read_text() for p in (ROOT / "plan" / stack).rglob("*") if p.is_file())
    # The one load-test name a platform may hold: its user among those allowed a password behind IAP.
    text = re.sub(rf"(MLFLOW_IAP_BASIC_AUTH_USERS\n\s+value: \S*),{USERNAME}\b", r"\1", text)
    assert NAMESPACE not in text and "locust" not in text.lower() and "loadTest" not in text


# --- what the load-test program declares ---------------------------------------------------------
@pytest.mark.parametrize("stack, serving_cluster", [("dev", "mlflow-platform-cluster"),
                                                    ("prod", "mlflow-serving-cluster")])
def test_the_pool_is_tainted_scales_from_zero_in_one_zone_of_the_platform_s_serving_cluster(
        load_runs, stack_runs, stack, serving_cluster):
    [record] = load_runs[stack].of_type(NODE_POOL)
    platform = stack_runs[stack].outputs
    pool = record.inputs
    assert pool["cluster"] == platform["serving_cluster_name"] == serving_cluster
    assert pool["location"] == platform["serving_cluster_location"] and pool["project"] == platform["project"]
    assert pool["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 1}
    assert pool["nodeLocations"] == ["us-central1-a"]
    node = pool["nodeConfig"]
    assert node["taints"] == [POOL_TAINT] and node["labels"] == {"pool": "loadtest"}
    assert node["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
    assert node["serviceAccount"] == platform["serving_node_service_account"]  # may pull the platform's images


@pytest.mark.parametrize("stack", STACKS)
def test_the_locust_image_is_built_from_loadtest_and_pushed_to_the_platform_s_repository(load_runs, stack_runs, stack):
    [image] = load_runs[stack].of_type("docker-build:index:Image")
    repository = stack_runs[stack].outputs["repository_url"]
    # Relative to loadtest/, where Pulumi runs the project's program and its providers.
    assert image.inputs["context"] == {"location": "."} and image.inputs["dockerfile"] == {"location": "./Dockerfile"}
    assert image.inputs["target"] == "locust"
    assert image.inputs["tags"] == [f"{repository}/mlflow-loadtest:{build_tag('.', 'locust', ROOT / 'loadtest')[:16]}"]
    assert image.inputs["registries"][0]["address"] == repository.split("/")[0]
    images = {c["image"] for d in manifests(stack).values() if d["kind"] in ("CronJob", "Job")
              for c in pod_of(d)["containers"]}
    assert images == {f"{repository}/mlflow-loadtest@{image.state['digest']}"}


@pytest.mark.parametrize("stack", STACKS)
def test_the_load_test_user_has_its_own_generated_secret_read_by_its_identities_only(load_runs, stack):
    run = load_runs[stack]
    [secret] = run.of_type("gcp:secretmanager/secret:Secret")
    [version] = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    [password] = run.of_type("random:index/randomPassword:RandomPassword")
    assert version.inputs["secretData"] == {**version.inputs["secretData"], "value": password.state["result"]["value"]}
    assert secret.inputs["secretId"] == f"loadtest-password-{stack}"
    accounts = {r.inputs["accountId"] for r in run.of_type("gcp:serviceaccount/account:Account")}
    assert accounts == {f"loadtest-setup-{stack}", f"loadtest-locust-{stack}"}
    bindings = {r.inputs["member"] for r in run.of_type("gcp:serviceaccount/iAMMember:IAMMember")}
    assert bindings == {f"serviceAccount:my-mlflow-{stack}.svc.id.goog[{NAMESPACE}/{ksa}]"
                        for ksa in (SETUP_KSA, CREDENTIALS_KSA)}
    readers = {}
    for grant in run.of_type(SECRET_READER):
        readers.setdefault(grant.inputs["secretId"], set()).add(grant.inputs["member"])
    admin_secret = f"projects/my-mlflow-{stack}/secrets/mlflow-admin-password"  # the platform's app_secrets output
    setup = {m for m in readers[admin_secret]}
    assert len(setup) == 2 and all(SETUP_KSA in m or f"loadtest-setup-{stack}@" in m for m in setup)
    [own] = set(readers) - {admin_secret}
    assert len(readers[own]) == 4 and any(f"/sa/{CREDENTIALS_KSA}" in m for m in readers[own])


@pytest.mark.parametrize("stack", STACKS)
def test_the_user_is_made_after_its_password_exists_and_made_again_when_the_password_is_replaced(load_runs, stack):
    run = load_runs[stack]
    [version] = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    [setup] = run.of_type("kubernetes:batch/v1:Job")
    assert version.urn in setup.dependencies
    # The version's name is in the pod template, which Kubernetes keeps immutable: a new version replaces the Job.
    annotations = setup.inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"mlflow.org/loadtest-password-version": version.state["name"]}
    assert version.state["name"].endswith("/versions/1")


@pytest.mark.parametrize("stack", STACKS)
def test_locust_pods_never_see_the_admin_password_and_log_in_as_their_own_user(load_runs, stack):
    documents = manifests(stack)
    templates = {d["metadata"]["name"]: d for d in documents.values() if d["kind"] == "CronJob"}
    assert "admin-password" not in json.dumps(templates) and "ADMIN" not in json.dumps(templates)
    mounting = sorted(name for name, d in templates.items() if pod_of(d).get("serviceAccountName"))
    assert mounting == [workers_name("tracking")]
    pod = pod_of(templates[workers_name("tracking")])
    assert pod["serviceAccountName"] == CREDENTIALS_KSA
    assert {e["name"]: e["value"] for e in pod["containers"][0]["env"]} == {
        "LOADTEST_USERNAME": USERNAME, "LOADTEST_PASSWORD_FILE": f"/etc/mlflow-secrets/{PASSWORD_FILE}"}
    provider_class = next(d for d in documents.values() if d["kind"] == "SecretProviderClass"
                          and d["metadata"]["name"] == CREDENTIALS_KSA)
    assert "admin-password" not in provider_class["spec"]["parameters"]["secrets"]
    # The admin's password reaches one pod: the setup Job's, which makes the user.
    [setup] = [d for d in documents.values() if "admin-password" in json.dumps(d) and d["kind"] != "SecretProviderClass"]
    assert setup["kind"] == "Job" and pod_of(setup)["serviceAccountName"] == SETUP_KSA
    assert pod_of(setup)["containers"][0]["args"] == ["-m", "loadtest.ensure_user"]
    assert not any(d["kind"] == "Secret" for d in documents.values())
    passwords = [r.state["result"]["value"] for r in load_runs[stack].of_type("random:index/randomPassword:RandomPassword")]
    text = "".join(p.read_text() for p in plan_dir(stack).rglob("*") if p.is_file())
    assert passwords and not any(password in text for password in passwords)


@pytest.mark.parametrize("stack", STACKS)
def test_destroying_the_load_test_cannot_touch_a_platform_resource(load_runs, stack_runs, stack):
    platform, load = stack_runs[stack], load_runs[stack]
    # IAM only through members (non-authoritative): removing one leaves every other grant of the resource.
    iam = [r.type for r in load.resources if "iam" in r.type.lower()]
    assert iam and all(t.endswith(("IamMember:SecretIamMember", "iAMMember:IAMMember")) for t in iam)
    # No GCP name and no Kubernetes object the platform has; in the platform's namespaces, one additive policy.
    def gcp_identities(run):
        """What names a GCP resource: its name or id (autonamed: after its Pulumi name), or for a member its
        resource, role and member."""
        return {(r.type, r.inputs.get("secretId"), r.inputs.get("serviceAccountId"), r.inputs["role"], r.inputs["member"])
                if "member" in r.inputs else (r.type, r.inputs.get("accountId") or r.inputs.get("secretId")
                                              or r.inputs.get("name") or r.name)
                for r in run.resources if r.type.startswith("gcp:")}

    assert gcp_identities(load) and not gcp_identities(load) & gcp_identities(platform)
    platform_objects = {(r.inputs["kind"], r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"])
                        for r in platform.resources if r.type.startswith("kubernetes:") and "kind" in r.inputs}
    load_objects = {(r.inputs["kind"], r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"])
                    for r in load.resources if r.type.startswith("kubernetes:") and "kind" in r.inputs}
    assert not load_objects & platform_objects
    assert {o for o in load_objects if o[1] not in (NAMESPACE, None)} == {
        ("NetworkPolicy", "mlflow", "mlflow-loadtest-to-tracking")}
    assert not any(r.protect for r in load.resources)


@pytest.mark.parametrize("stack", STACKS)
def test_the_load_test_can_be_destroyed_after_the_platform_s_clusters_are_gone(load_runs, stack):
    providers = load_runs[stack].of_type("pulumi:providers:kubernetes")
    assert len(providers) == 2
    assert all(p.inputs.get("deleteUnreachable") in (True, "true") for p in providers), providers


# --- rendered, validated, scanned like the platform's ---------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_load_test_plan_is_current(load_runs, stack):
    report = plan.stale_report(render(load_runs[stack]), plan_dir(stack))
    assert not report, f"plan/loadtest-{stack} is stale; run `make plan-all` and commit:\n" + "".join(report[:80])


@pytest.mark.parametrize("stack", STACKS)
def test_every_load_test_manifest_is_valid_for_the_cluster_version_strictly(stack):
    documents = manifests(stack)
    kinds = sorted(d["kind"] for d in documents.values())
    assert kinds == ["CronJob"] * 4 + ["Job", "Namespace"] + ["NetworkPolicy"] * 4 + [
        "SecretProviderClass"] * 2 + ["Service"] * 2 + ["ServiceAccount"] * 2
    for document in documents.values():
        if crd_validate.is_custom_resource(document):  # the SecretProviderClasses: their pinned CRD schema
            assert crd_validate.validate_custom_resource(document) == [], document["metadata"]["name"]
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_finds_nothing_in_the_load_test_manifests(stack):
    result = checkov("-d", f"plan/loadtest-{stack}/k8s", "--framework", "kubernetes")
    assert result["passed"] > 200 and result["failed"] == [], "\n".join(result["failed"])


def test_checkov_finds_nothing_in_the_locust_dockerfile():
    result = checkov("-f", "loadtest/Dockerfile", "--framework", "dockerfile")
    assert result["passed"] > 10 and result["failed"] == [], "\n".join(result["failed"])


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_complies_with_the_policy_pack(load_runs, stack):
    checks = [check for _, _, check in rules.POLICIES]
    found = {r.urn: v for r in load_runs[stack].resources if (v := [m for c in checks for m in c(r.type, r.inputs)])}
    assert found == {}
    assert len(load_runs[stack].of_type("kubernetes:batch/v1:CronJob")) == 4  # the rules saw the templates


def test_the_policy_pack_would_catch_a_root_locust_container(load_runs):
    template = load_runs["dev"].of_type("kubernetes:batch/v1:CronJob")[0]
    broken = json.loads(json.dumps(template.inputs))
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    assert rules.check_workload_hardening(template.type, broken)


@pytest.mark.parametrize("stack", STACKS)
def test_locust_pods_land_only_on_the_load_test_pool_hardened_and_sized(stack):
    for name, document in manifests(stack).items():
        if document["kind"] != "CronJob":
            continue
        assert document["spec"]["suspend"] is True, name  # a template: nothing runs until a run is made of it
        pod = pod_of(document)
        assert pod["nodeSelector"] == {"pool": "loadtest"} and pod["tolerations"] == [
            {"key": "mlflow.org/pool", "operator": "Equal", "value": "loadtest", "effect": "NoSchedule"}], name
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert "@sha256:" in container["image"] and container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"]["cpu"] == ("500m" if "master" in name else "1")
        if "master" in name:
            assert container["readinessProbe"]["tcpSocket"]["port"] == 5557, name


@pytest.mark.parametrize("stack, tracking_output", [
    ("dev", "tracking_in_cluster_url"), ("prod", "tracking_internal_url")])  # prod: serving's way, the internal LB
def test_locust_calls_the_services_as_their_clients_in_the_cluster_do(stack_runs, stack, tracking_output):
    tracking_host = stack_runs[stack].outputs[tracking_output]
    hosts = {}
    for document in manifests(stack).values():
        if document["kind"] == "CronJob":
            args = pod_of(document)["containers"][0]["args"]
            hosts[document["metadata"]["name"]] = args[args.index("--host") + 1]
        elif document["kind"] == "Job":
            env = {e["name"]: e["value"] for e in pod_of(document)["containers"][0]["env"]}
            hosts["setup"] = env["MLFLOW_TRACKING_URI"]
    serving_url = stack_runs[stack].outputs["serving_url"]
    assert hosts == {master_name("serving"): serving_url, workers_name("serving"): serving_url,
                     master_name("tracking"): tracking_host, workers_name("tracking"): tracking_host,
                     "setup": tracking_host}


def test_only_the_workers_reach_a_master():
    policy = next(d for d in manifests("dev").values() if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"] == master_name("serving"))
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow-loadtest",
        "app.kubernetes.io/component": workers_name("serving")}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5557}]


@pytest.mark.parametrize("stack, per_hour", [("dev", "0.055"), ("prod", "0.055")])
def test_cost_shows_the_pool_per_hour_of_a_run_cheaper_than_a_separate_cluster(stack, per_hour):
    text = (plan_dir(stack) / "cost.md").read_text()
    pool_row = next(line for line in text.splitlines() if line.startswith("| **Node pool on the serving cluster"))
    cluster_row = next(line for line in text.splitlines() if line.startswith("| Separate small cluster"))
    pool_run, pool_idle = (float(cell) for cell in pool_row.strip("|").split("|")[2:4])
    cluster_run, cluster_idle = (float(cell) for cell in cluster_row.strip("|").split("|")[2:4])
    assert f"{pool_run:.3f}" == per_hour and pool_idle == 0.0
    assert round(cluster_run - pool_run, 3) == 0.1 and cluster_idle == 0.1


def modules_the_image_lacks(dockerfile: str) -> set[str]:
    """Modules the pods import (the wrapper, the locustfiles, the user setup and what they import) that the
    COPY omits."""
    copied = next(line for line in dockerfile.splitlines()
                  if line.startswith("COPY ") and "/app/loadtest/" in line).split()[1:-1]
    needed = {"__init__.py", "pod_results.py", "serving_locust.py", "tracking_locust.py", "ensure_user.py"}
    for module in list(needed):
        text = (ROOT / "loadtest" / module).read_text()
        needed |= {f"{name}.py" for name in re.findall(r"^from loadtest\.(\w+) import", text, re.M)}
    return needed - set(copied)


def test_the_image_ships_every_module_the_pods_import():
    dockerfile = (ROOT / "loadtest" / "Dockerfile").read_text()
    assert modules_the_image_lacks(dockerfile) == set()
    assert modules_the_image_lacks(dockerfile.replace(" payloads.py", "")) == {"payloads.py"}  # a broken copy


# --- results through the master's log -------------------------------------------------------
def test_results_survive_the_log_whatever_locust_printed_around_them(tmp_path):
    (tmp_path / "serving.json").write_text('[{"name": "x"}]')
    (tmp_path / "serving_stats_history.csv").write_text("Timestamp,Name\n" * 5000)
    stale = pack(tmp_path)
    (tmp_path / "serving.json").write_text('[{"name": "y"}]')
    log = "\n".join(["Type Name # reqs", *stale, "noise", *pack(tmp_path), "bye"])
    files = extract(log)
    assert files == {"serving.json": b'[{"name": "y"}]', "serving_stats_history.csv": b"Timestamp,Name\n" * 5000}
    assert max(len(line) for line in log.splitlines()) <= 8000


def test_a_log_without_a_complete_block_says_so(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(ValueError, match="no complete results block"):
        extract("\n".join(pack(tmp_path)[:-1]))


def test_the_wrapper_runs_the_command_then_prints_its_results_and_keeps_its_exit_code(tmp_path):
    script = "import pathlib, sys; pathlib.Path(sys.argv[1], 'tracking.json').write_text('[]'); sys.exit(3)"
    done = subprocess.run([sys.executable, "-m", "loadtest.pod_results", "--dir", str(tmp_path), "--",
                           sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 3 and done.stdout.rstrip().endswith(END)
    assert extract(done.stdout) == {"tracking.json": b"[]"}


# --- the CLI through a fake Kubernetes API --------------------------------------------------
def model(data: dict, kind: str):
    """A rendered manifest as the real client hands it back (its model classes)."""
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(data, kind)


class FakeBatch:
    """BatchV1Api's calls the runner makes, over the rendered templates; records what it is asked."""

    def __init__(self, templates: dict[str, dict], statuses: list[dict], active: tuple[str, ...] = ()):
        self.templates, self.statuses, self.active = templates, statuses, active
        self.created: list[dict] = []
        self.deleted: list[tuple] = []

    def list_namespaced_job(self, namespace, label_selector):
        assert (namespace, label_selector) == (NAMESPACE, RUN_LABEL)
        return model({"items": [{"metadata": {"name": n}, "status": {"active": 1}} for n in self.active]},
                     "V1JobList")

    def read_namespaced_cron_job(self, name, namespace):
        from kubernetes.client import ApiException

        if name not in self.templates:
            raise ApiException(status=404, reason="Not Found")
        return model(self.templates[name], "V1CronJob")

    def create_namespaced_job(self, namespace, body):
        assert namespace == NAMESPACE
        self.created.append(body)
        return model(body, "V1Job")

    def read_namespaced_job_status(self, name, namespace):
        assert name in {job["metadata"]["name"] for job in self.created}
        return model({"metadata": {"name": name}, "status": self.statuses.pop(0) if len(self.statuses) > 1
                      else self.statuses[0]}, "V1Job")

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.deleted.append((name, namespace, propagation_policy))


class FakeCore:
    """CoreV1Api: one pod per master Job, whose log holds Locust's output and the results block."""

    def __init__(self, batch: FakeBatch, results: Path):
        self.batch, self.results = batch, results

    def list_namespaced_pod(self, namespace, label_selector):
        job = label_selector.removeprefix("job-name=")
        assert job in {j["metadata"]["name"] for j in self.batch.created}
        return model({"items": [{"metadata": {"name": f"{job}-x7k2p"}}]}, "V1PodList")

    def read_namespaced_pod_log(self, name, namespace, container):
        assert container == "locust"
        return "\n".join(["[2026-12-02] Ramping to 16 users", *pack(self.results), ""])


def outputs_of(values: dict, calls: list):
    """What `load_test_outputs` would read: the load-test stack's outputs."""

    def read(stack: str) -> StackOutputs:
        calls.append(stack)
        return StackOutputs(stack, values)

    return read


@pytest.fixture
def templates() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests("dev").values() if d["kind"] == "CronJob"}


@pytest.fixture
def results(tmp_path) -> Path:
    directory = tmp_path / "pod-results"
    directory.mkdir()
    (directory / "serving.json").write_text("[]")
    (directory / "serving_stats_history.csv").write_text("Timestamp\n")
    return directory


KUBECONFIG = {"apiVersion": "v1", "kind": "Config", "clusters": []}
OUTPUTS = {"kubeconfig": json.dumps(KUBECONFIG), "namespace": NAMESPACE}


def test_a_cluster_run_makes_jobs_of_the_templates_waits_copies_results_and_deletes_them(templates, results, tmp_path):
    batch = FakeBatch(templates, [{"active": 1}, {"active": 1}, {"succeeded": 1}])
    clock, calls, given = FakeClock(), [], []

    def apis(kubeconfig):
        given.append(kubeconfig)
        return batch, FakeCore(batch, results)

    out = tmp_path / "out"
    run_cluster("dev", [("serving", 16), ("tracking", 8)], 60, out, read=outputs_of(OUTPUTS, calls),
                apis=apis, runner_options={"clock": clock, "sleep": clock.sleep})
    assert calls == ["dev"] and given == [KUBECONFIG]
    assert sorted(p.name for p in out.iterdir()) == ["serving.json", "serving_stats_history.csv"]
    names = [job["metadata"]["name"] for job in batch.created]
    assert [n.rsplit("-", 4)[0] for n in names] == [master_name("serving"), workers_name("serving"),
                                                    master_name("tracking"), workers_name("tracking")]
    assert names[0].endswith("-u16-t60") and names[2].endswith("-u8-t60") and all(len(n) <= 63 for n in names)
    assert sorted(d[0] for d in batch.deleted) == sorted(names) and {d[2] for d in batch.deleted} == {"Background"}
    for job in batch.created:
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_a_run_changes_nothing_of_the_template_but_its_size_deadline_and_label(templates):
    template = templates[master_name("tracking")]
    run = ClusterRun("tracking", 8, 120, cluster.datetime(2026, 12, 2, 9, 30, tzinfo=cluster.timezone.utc))
    job = job_from_template(template, run)
    assert job["metadata"]["name"] == "locust-tracking-master-20261202-093000-u8-t120"
    expected = json.loads(json.dumps(template["spec"]["jobTemplate"]["spec"]))
    container = expected["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "LOCUST_USERS", "value": "8"}, {"name": "LOCUST_SPAWN_RATE", "value": "8"},
                        {"name": "LOCUST_RUN_TIME", "value": "120s"}]
    expected["activeDeadlineSeconds"] = 120 + cluster.START_MARGIN_SECONDS
    expected["template"]["metadata"]["labels"][RUN_LABEL] = run.run_id
    assert job["spec"] == expected


def test_a_failed_master_is_reported_and_its_jobs_are_deleted_all_the_same(templates, results, tmp_path):
    batch = FakeBatch(templates, [{"failed": 1}])
    with pytest.raises(ClusterRunError, match=r"failed: `kubectl -n mlflow-loadtest logs job/locust-serving-master-"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, read=outputs_of(OUTPUTS, []),
                    apis=lambda _: (batch, FakeCore(batch, results)))
    assert len(batch.deleted) == 2 and not list(tmp_path.glob("*.json"))


def test_waiting_is_bounded(templates, results, tmp_path):
    batch, clock = FakeBatch(templates, [{"active": 1}]), FakeClock()
    runner = ClusterRunner(batch, FakeCore(batch, results), clock=clock, sleep=clock.sleep)
    run = ClusterRun("serving", 4, 30, cluster.datetime.now(cluster.timezone.utc))
    with pytest.raises(ClusterRunError, match="not finished within"):
        runner.run(run, tmp_path)
    assert clock.now == pytest.approx(run.deadline_seconds + 60, abs=runner.poll)
    assert len(batch.deleted) == 2


def test_a_load_test_stack_that_is_not_up_says_how_to_bring_it_up(tmp_path):
    def read(stack: str) -> StackOutputs:
        raise StackOutputError(f"reading stack {stack}'s outputs failed: no stack named '{stack}' found")

    with pytest.raises(ClusterRunError, match=r"no stack named 'prod' found; is the load-test stack up\? "
                                              r"`cd loadtest && pulumi up -s prod`"):
        run_cluster("prod", [("serving", 4)], 30, tmp_path, read=read, apis=lambda _: pytest.fail("no cluster"))


def test_the_cli_reads_the_load_test_project_s_stack(monkeypatch):
    seen = []
    monkeypatch.setattr(StackOutputs, "read", classmethod(lambda cls, stack, work_dir: seen.append((stack, work_dir))))
    cluster.load_test_outputs("prod")
    assert seen == [("prod", ROOT / "loadtest")] and (ROOT / "loadtest" / "Pulumi.yaml").is_file()


def test_missing_templates_in_the_cluster_point_at_the_setting(results, tmp_path):
    batch = FakeBatch({}, [{"succeeded": 1}])
    with pytest.raises(ClusterRunError, match=r"HTTP 404 Not Found: is the load-test stack up\?"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, read=outputs_of(OUTPUTS, []),
                    apis=lambda _: (batch, FakeCore(batch, results)))


def test_one_run_at_a_time(templates, results, tmp_path):
    batch = FakeBatch(templates, [{"succeeded": 1}], active=("locust-serving-master-20261202-093000-u16-t60",))
    with pytest.raises(ClusterRunError, match="another load test is running in mlflow-loadtest"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, read=outputs_of(OUTPUTS, []),
                    apis=lambda _: (batch, FakeCore(batch, results)))
    assert batch.created == []


# --- who reaches whom (tools/offline/reachability.py evaluates the NetworkPolicies) -------------------
def combined_policies(platform, load):
    """The NetworkPolicies of both stacks, the load test's on the clusters its providers name."""
    from tools.offline.reachability import ClusterPolicies

    def provider_of(kind: str, namespace: str) -> str:
        return next(r.provider for r in platform.resources if r.inputs.get("kind") == kind
                    and r.inputs["metadata"].get("namespace") == namespace)

    clusters = {"mlflow-loadtest-serving-k8s": provider_of("Deployment", "mlflow-serving"),
                "mlflow-loadtest-platform-k8s": provider_of("Deployment", "mlflow")}
    policies, added = ClusterPolicies.of(platform), ClusterPolicies.of(load)
    for policy in added.policies:
        policies.policies.append({**policy, "cluster": clusters[policy["cluster"].rsplit("::", 1)[-1]]})
    for (cluster_, namespace), labels in added.namespace_labels.items():
        policies.namespace_labels[(clusters[cluster_.rsplit("::", 1)[-1]], namespace)] = labels
    return policies, clusters["mlflow-loadtest-serving-k8s"]


def locust_pod(load, cluster_: str, template: str, address: str):
    from tools.offline.reachability import Pod

    record = next(r for r in load.resources if r.inputs.get("kind") in ("CronJob", "Job")
                  and r.inputs["metadata"]["name"] == template)
    spec = record.inputs["spec"]
    labels = (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["metadata"]["labels"]
    return Pod(cluster_, NAMESPACE, tuple(sorted(labels.items())), address)


@pytest.mark.parametrize("stack", STACKS)
def test_the_load_test_reaches_both_services_and_only_its_workers_reach_a_master(stack_runs, load_runs, stack):
    from tools.offline.reachability import ClusterPolicies, other_pod, through_load_balancer
    from tests.test_reachability import Endpoints, range_host

    platform, load = stack_runs[stack], load_runs[stack]
    policies, serving_cluster = combined_policies(platform, load)
    endpoints = Endpoints(platform)
    host = range_host(platform, "serving-pods" if stack == "prod" else "pods", 60)

    def reaches_tracking(pod) -> bool:
        source = pod if stack == "dev" else through_load_balancer(pod, endpoints.node, platform.named("mlflow-internal-lb"))
        return policies.allows(source, endpoints.tracking, 5000)

    worker = locust_pod(load, serving_cluster, workers_name("tracking"), host)
    assert reaches_tracking(worker) and reaches_tracking(locust_pod(load, serving_cluster, "mlflow-loadtest-user", host))
    assert policies.allows(locust_pod(load, serving_cluster, workers_name("serving"), host), endpoints.serving, 8080)
    master = locust_pod(load, serving_cluster, master_name("tracking"), host)
    assert policies.allows(worker, master, 5557)
    assert not policies.allows(locust_pod(load, serving_cluster, workers_name("serving"), host), master, 5557)
    assert not policies.allows(other_pod(master, "default", master.address), master, 5557)
    if stack == "dev":  # without the load test's own policy, tracking refuses its namespace
        assert not ClusterPolicies.of(platform).allows(worker, endpoints.tracking, 5000)
