"""The cluster load test (`loadTesting`, k8s/loadtest.py, loadtest/cluster.py): off, the committed
stacks declare nothing of it; on, its node pool, namespace and Locust templates are rendered,
validated, scanned and policy-checked like every other manifest; `make loadtest TARGET=cluster`
drives them through a fake Kubernetes API and brings the results back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from infra.cluster import LOAD_TEST_TAINT
from infra.config import ConfigError, settings_from_values
from k8s.loadtest import CREDENTIALS_KSA, NAMESPACE, RUN_LABEL, master_name, workers_name
from loadtest import cluster
from loadtest.cluster import ClusterRun, ClusterRunError, ClusterRunner, job_from_template, run_cluster
from loadtest.pod_results import END, extract, pack
from tools.offline.cost import cost_markdown
from tools.offline import crd_validate
from tools.offline.render import render
from tools.offline.stack import ROOT, read_stack_config, run_program
from tools.policy import rules
from tests.test_manifests import KUBERNETES_VERSION, checkov
from tests.test_promote import FakeClock

ON = {"mlflow-platform:loadTesting": "true"}
LOAD_TEST_POOL = "gcp:container/nodePool:NodePool"


def run_with(stack: str, overrides: dict):
    config, secret_keys = read_stack_config(stack)
    return run_program(stack, {**config, **overrides}, secret_keys)


@pytest.fixture(scope="module")
def on_runs():
    """Both committed stacks with loadTesting turned on."""
    return {stack: run_with(stack, ON) for stack in ("dev", "prod")}


@pytest.fixture(scope="module")
def on_plans(on_runs, tmp_path_factory) -> dict[str, Path]:
    """Their rendered plans, written as `make plan` writes them."""
    directories = {}
    for stack, run in on_runs.items():
        directory = tmp_path_factory.mktemp(f"plan-{stack}")
        for relative, text in render(run).items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
        directories[stack] = directory
    return directories


def load_test_manifests(plan: Path) -> dict[str, dict]:
    documents = {}
    for path in sorted((plan / "k8s").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document["metadata"].get("namespace") == NAMESPACE or document["metadata"]["name"] == NAMESPACE:
            documents[path.name] = document
    return documents


def pools(run) -> dict[str, dict]:
    return {r.name: r.inputs for r in run.of_type(LOAD_TEST_POOL)}


# --- settings -------------------------------------------------------------------------------
BASE = {"gcp:project": "test-project-1", "mlflow-platform:environment": "dev", "mlflow-platform:modelName": "m"}


@pytest.mark.parametrize("overrides, message", [
    ({"mlflow-platform:loadTesting": "true", "mlflow-platform:modelName": ""},
     "mlflow-platform:loadTesting = True: needs mlflow-platform:modelName"),
    ({"mlflow-platform:loadTestMachineType": "e2-medium"},
     "mlflow-platform:loadTestMachineType = 'e2-medium': needs 2 or more dedicated vCPUs"),
    ({"mlflow-platform:loadTestMachineType": "n2-standard-1"}, "needs 2 or more dedicated vCPUs"),
    ({"mlflow-platform:loadTestMachineType": "x9-standard-4"}, "mlflow-platform:loadTestMachineType = 'x9-standard-4': unknown machine type"),
    ({"mlflow-platform:loadTestWorkers": "0"}, "mlflow-platform:loadTestWorkers = 0: must be between 1 and 32"),
    ({"mlflow-platform:loadTestWorkers": "33"}, "mlflow-platform:loadTestWorkers = 33: must be between 1 and 32"),
])
def test_bad_load_test_settings_are_refused_naming_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as refused:
        settings_from_values({**BASE, **overrides})
    assert message in str(refused.value)


@pytest.mark.parametrize("machine, workers, nodes", [
    ("e2-standard-4", 2, 1), ("e2-standard-4", 3, 2), ("e2-standard-2", 2, 3), ("n2-standard-8", 13, 2)])
def test_the_pool_grows_to_fit_the_master_and_a_vcpu_per_worker(machine, workers, nodes):
    settings = settings_from_values({**BASE, "mlflow-platform:loadTestMachineType": machine,
                                     "mlflow-platform:loadTestWorkers": str(workers)})
    assert settings.load_test_max_nodes == nodes


def test_the_component_args_refuse_what_cannot_run():
    from infra.cluster import LoadTestPool
    from k8s.loadtest import LoadTestArgs

    with pytest.raises(ValueError, match=r"LoadTestPool.max_nodes=0: must be >= 1"):
        LoadTestPool(machine_type="e2-standard-4", max_nodes=0, spot=True, disk_size_gb=50, disk_type="pd-balanced",
                     zone="us-central1-a")
    with pytest.raises(ValueError, match=r"LoadTestArgs.workers=0: allowed 1-32"):
        LoadTestArgs(provider=None, image="i@sha256:0", serving_url="s", tracking=None,
                     project_number="1", workload_pool="p.svc.id.goog", workers=0)


# --- off: the committed stacks --------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_committed_stacks_declare_no_load_test_and_say_it_costs_nothing(stack_runs, stack):
    run = stack_runs[stack]
    assert not [name for name in pools(run) if "loadtest" in name]
    assert not [r.urn for r in run.resources if "loadtest" in r.urn]
    assert "load_test_namespace" not in run.outputs
    tracking_policy = next(r for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                           if r.inputs["metadata"]["name"] == "mlflow-tracking")
    assert NAMESPACE not in json.dumps(tracking_policy.inputs)
    assert "`loadTesting` is off: nothing is declared, $0 per hour" in (ROOT / "plan" / stack / "cost.md").read_text()


# --- on: what the program declares ---------------------------------------------------------
@pytest.mark.parametrize("stack, serving_cluster", [("dev", "mlflow-platform"), ("prod", "mlflow-serving")])
def test_the_pool_is_tainted_scales_from_zero_in_one_zone_of_the_serving_cluster(on_runs, stack, serving_cluster):
    [record] = [r for r in on_runs[stack].of_type(LOAD_TEST_POOL) if "loadtest" in r.name]
    assert record.name == f"{serving_cluster}-loadtest"
    assert record.parent.endswith(f"mlflow:cluster:GkeCluster::{serving_cluster}")
    pool = record.inputs
    assert pool["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 1}
    assert pool["nodeLocations"] == ["us-central1-a"]
    assert pool["nodeConfig"]["taints"] == [LOAD_TEST_TAINT]
    assert pool["nodeConfig"]["workloadMetadataConfig"]["mode"] == "GKE_METADATA"
    assert pool["nodeConfig"]["labels"] == {"pool": "loadtest"}


def test_prod_puts_the_load_where_serving_s_clients_are_on_the_serving_cluster(on_runs):
    run = on_runs["prod"]
    load_test_children = [r for r in run.resources if r.type.startswith("kubernetes:") and "mlflow-loadtest" in r.urn]
    serving = next(r for r in run.of_type("kubernetes:apps/v1:Deployment") if r.name == "mlflow-serving-deployment")
    assert load_test_children and {r.provider for r in load_test_children} == {serving.provider}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_load_test_manifest_is_valid_for_the_cluster_version_strictly(on_plans, stack):
    documents = load_test_manifests(on_plans[stack])
    kinds = sorted(d["kind"] for d in documents.values())
    assert kinds == ["CronJob"] * 4 + ["Namespace"] + ["NetworkPolicy"] * 3 + ["SecretProviderClass", "Service", "Service",
                     "ServiceAccount"]
    for document in documents.values():
        if crd_validate.is_custom_resource(document):  # the SecretProviderClass: its pinned CRD schema
            assert crd_validate.validate_custom_resource(document) == [], document["metadata"]["name"]
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_checkov_finds_nothing_in_the_load_test_manifests(on_plans, stack, tmp_path):
    for name, document in load_test_manifests(on_plans[stack]).items():
        (tmp_path / name).write_text(yaml.safe_dump(document))
    result = checkov("-d", str(tmp_path), "--framework", "kubernetes")
    assert result["passed"] > 200 and result["failed"] == [], "\n".join(result["failed"])


def test_checkov_finds_nothing_in_the_locust_dockerfile():
    result = checkov("-f", "loadtest/Dockerfile", "--framework", "dockerfile")
    assert result["passed"] > 10 and result["failed"] == [], "\n".join(result["failed"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_resource_complies_with_the_policy_pack(on_runs, stack):
    checks = [check for _, _, check in rules.POLICIES]
    found = {r.urn: v for r in on_runs[stack].resources if (v := [m for c in checks for m in c(r.type, r.inputs)])}
    assert found == {}
    assert len(on_runs[stack].of_type("kubernetes:batch/v1:CronJob")) == 4  # the rules saw the templates


def test_the_policy_pack_would_catch_a_root_locust_container(on_runs):
    template = on_runs["dev"].of_type("kubernetes:batch/v1:CronJob")[0]
    broken = json.loads(json.dumps(template.inputs))
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    assert rules.check_workload_hardening(template.type, broken)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_locust_pods_land_only_on_the_load_test_pool_hardened_and_sized(on_plans, stack):
    for name, document in load_test_manifests(on_plans[stack]).items():
        if document["kind"] != "CronJob":
            continue
        assert document["spec"]["suspend"] is True, name  # a template: nothing runs until a run is made of it
        pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "loadtest"} and pod["tolerations"] == [
            {"key": "mlflow.org/pool", "operator": "Equal", "value": "loadtest", "effect": "NoSchedule"}], name
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert "@sha256:" in container["image"] and container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"]["cpu"] == ("500m" if "master" in name else "1")
        if "master" in name:
            assert container["readinessProbe"]["tcpSocket"]["port"] == 5557, name


def test_only_the_tracking_workers_get_credentials_and_from_a_file_never_in_plain_text(on_runs, on_plans):
    documents = load_test_manifests(on_plans["dev"])
    mounting = sorted(d["metadata"]["name"] for d in documents.values() if d["kind"] == "CronJob"
                      and f'"serviceAccountName": "{CREDENTIALS_KSA}"' in json.dumps(d))
    assert mounting == [workers_name("tracking")]
    worker = documents[next(n for n in documents if n.endswith(f"{workers_name('tracking')}.yaml"))]
    pod = worker["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env == {"LOADTEST_USERNAME": "admin", "LOADTEST_PASSWORD_FILE": "/etc/mlflow-secrets/admin-password"}
    # From Secret Manager, mounted for the workers' own KSA, which may read that secret only.
    assert pod["serviceAccountName"] == CREDENTIALS_KSA
    assert not any(d["kind"] == "Secret" for d in documents.values())
    readers = [r for r in on_runs["dev"].of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
               if f"/ns/{NAMESPACE}/sa/{CREDENTIALS_KSA}" in r.inputs["member"]]
    assert len(readers) == 1 and "admin-password" in readers[0].inputs["secretId"], readers
    passwords = [r.state["result"]["value"] for r in on_runs["dev"].of_type("random:index/randomPassword:RandomPassword")]
    text = "".join(p.read_text() for p in on_plans["dev"].rglob("*") if p.is_file())
    assert passwords and not any(password in text for password in passwords)


@pytest.mark.parametrize("stack, tracking_output", [
    ("dev", "tracking_in_cluster_url"), ("prod", "tracking_internal_url")])  # prod: serving's way, the internal LB
def test_locust_calls_the_services_as_their_clients_in_the_cluster_do(on_runs, on_plans, stack, tracking_output):
    tracking_host = on_runs[stack].outputs[tracking_output]
    documents = load_test_manifests(on_plans[stack])
    hosts = {}
    for document in documents.values():
        if document["kind"] == "CronJob":
            args = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            hosts[document["metadata"]["name"]] = args[args.index("--host") + 1]
    assert hosts == {master_name("serving"): "http://mlflow-serving.mlflow-serving.svc.cluster.local:8080",
                     workers_name("serving"): "http://mlflow-serving.mlflow-serving.svc.cluster.local:8080",
                     master_name("tracking"): tracking_host, workers_name("tracking"): tracking_host}


def tracking_peers(run) -> str:
    policy = next(r for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                  if r.inputs["metadata"]["name"] == "mlflow-tracking")
    return json.dumps(policy.inputs["spec"]["ingress"][0]["from"])


def test_tracking_admits_the_load_test_namespace_on_the_same_cluster_and_the_serving_range_on_its_own(on_runs):
    assert f'"kubernetes.io/metadata.name": "{NAMESPACE}"' in tracking_peers(on_runs["dev"])
    prod = tracking_peers(on_runs["prod"])
    assert NAMESPACE not in prod and '"cidr": "10.24.0.0/16"' in prod  # serving's pods, the load test's too


def test_only_the_workers_reach_a_master(on_plans):
    documents = load_test_manifests(on_plans["dev"])
    policy = next(d for d in documents.values() if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"] == master_name("serving"))
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow-loadtest",
        "app.kubernetes.io/component": workers_name("serving")}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5557}]


@pytest.mark.parametrize("stack, per_hour", [("dev", "0.055"), ("prod", "0.062")])
def test_cost_shows_the_pool_per_hour_of_a_run_cheaper_than_a_separate_cluster(on_runs, stack, per_hour):
    text = cost_markdown(on_runs[stack])
    pool_row = next(line for line in text.splitlines() if line.startswith("| **Node pool on the serving cluster"))
    cluster_row = next(line for line in text.splitlines() if line.startswith("| Separate small cluster"))
    pool_run, pool_idle = (float(cell) for cell in pool_row.strip("|").split("|")[2:4])
    cluster_run, cluster_idle = (float(cell) for cell in cluster_row.strip("|").split("|")[2:4])
    assert f"{pool_run:.3f}" == per_hour and pool_idle == 0.0
    assert f"${per_hour} {stack}" in (ROOT / "README.md").read_text()  # the README quotes the plan
    assert round(cluster_run - pool_run, 3) == 0.1 and cluster_idle == 0.1
    assert "(1 zone)" in next(line for line in text.splitlines() if "-loadtest" in line and "Nodes:" in line)


def modules_the_image_lacks(dockerfile: str) -> set[str]:
    """Modules the pods import (the wrapper, the locustfiles and what they import) that the COPY omits."""
    copied = next(line for line in dockerfile.splitlines()
                  if line.startswith("COPY ") and "/app/loadtest/" in line).split()[1:-1]
    needed = {"__init__.py", "pod_results.py", "serving_locust.py", "tracking_locust.py"}
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


def stack_selector(outputs: dict, calls: list):
    from pulumi.automation import OutputValue

    def select(stack_name, work_dir):
        calls.append((stack_name, work_dir))
        return SimpleNamespace(outputs=lambda: {k: OutputValue(v, k.endswith("kubeconfig")) for k, v in outputs.items()})

    return select


@pytest.fixture
def templates(on_plans) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in load_test_manifests(on_plans["dev"]).values() if d["kind"] == "CronJob"}


@pytest.fixture
def results(tmp_path) -> Path:
    directory = tmp_path / "pod-results"
    directory.mkdir()
    (directory / "serving.json").write_text("[]")
    (directory / "serving_stats_history.csv").write_text("Timestamp\n")
    return directory


KUBECONFIG = {"apiVersion": "v1", "kind": "Config", "clusters": []}
OUTPUTS = {"serving_kubeconfig": json.dumps(KUBECONFIG), "load_test_namespace": NAMESPACE}


def test_a_cluster_run_makes_jobs_of_the_templates_waits_copies_results_and_deletes_them(templates, results, tmp_path):
    batch = FakeBatch(templates, [{"active": 1}, {"active": 1}, {"succeeded": 1}])
    clock, calls, given = FakeClock(), [], []

    def apis(kubeconfig):
        given.append(kubeconfig)
        return batch, FakeCore(batch, results)

    out = tmp_path / "out"
    run_cluster("dev", [("serving", 16), ("tracking", 8)], 60, out, ROOT, select=stack_selector(OUTPUTS, calls),
                apis=apis, runner_options={"clock": clock, "sleep": clock.sleep})
    assert calls == [("dev", str(ROOT))] and given == [KUBECONFIG]
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
        run_cluster("dev", [("serving", 4)], 30, tmp_path, ROOT, select=stack_selector(OUTPUTS, []),
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


def test_a_stack_without_the_load_test_says_how_to_turn_it_on(tmp_path):
    outputs = {"serving_kubeconfig": json.dumps(KUBECONFIG)}
    with pytest.raises(ClusterRunError, match="`pulumi config set loadTesting true -s prod` and `pulumi up -s prod`"):
        run_cluster("prod", [("serving", 4)], 30, tmp_path, ROOT, select=stack_selector(outputs, []),
                    apis=lambda _: pytest.fail("no cluster to talk to"))


def test_missing_templates_in_the_cluster_point_at_the_setting(results, tmp_path):
    batch = FakeBatch({}, [{"succeeded": 1}])
    with pytest.raises(ClusterRunError, match=r"HTTP 404 Not Found: is loadTesting on\?"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, ROOT, select=stack_selector(OUTPUTS, []),
                    apis=lambda _: (batch, FakeCore(batch, results)))


def test_one_run_at_a_time(templates, results, tmp_path):
    batch = FakeBatch(templates, [{"succeeded": 1}], active=("locust-serving-master-20261202-093000-u16-t60",))
    with pytest.raises(ClusterRunError, match="another load test is running in mlflow-loadtest"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, ROOT, select=stack_selector(OUTPUTS, []),
                    apis=lambda _: (batch, FakeCore(batch, results)))
    assert batch.created == []


def test_without_the_pulumi_cli_the_error_says_so(tmp_path):
    def select(stack_name, work_dir):
        raise FileNotFoundError(2, "No such file or directory", "pulumi")

    with pytest.raises(ClusterRunError, match="the Pulumi CLI is not on PATH"):
        run_cluster("dev", [("serving", 4)], 30, tmp_path, ROOT, select=select, apis=lambda _: pytest.fail("no"))


# --- who reaches whom (tools/offline/reachability.py evaluates the NetworkPolicies) -------------------
def locust_pod(run, template: str, index: int):
    from tools.offline.reachability import Pod
    from tests.test_reachability import range_host

    record = next(r for r in run.of_type("kubernetes:batch/v1:CronJob") if r.inputs["metadata"]["name"] == template)
    labels = record.inputs["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    serving_range = "serving-pods" if run.stack == "prod" else "pods"
    return Pod(record.provider, NAMESPACE, tuple(sorted(labels.items())), range_host(run, serving_range, index))


def test_the_load_test_reaches_both_services_and_only_its_workers_reach_a_master(on_runs):
    from tools.offline.reachability import ClusterPolicies, other_pod, through_load_balancer
    from tests.test_reachability import Endpoints

    for stack, run in on_runs.items():
        policies, endpoints = ClusterPolicies.of(run), Endpoints(run)
        worker = locust_pod(run, workers_name("tracking"), 60)
        to_tracking = worker if stack == "dev" else through_load_balancer(
            worker, endpoints.node, run.named("mlflow-internal-lb"))
        assert policies.allows(to_tracking, endpoints.tracking, 5000), stack
        assert policies.allows(locust_pod(run, workers_name("serving"), 61), endpoints.serving, 8080), stack
        master = locust_pod(run, master_name("tracking"), 62)
        assert policies.allows(worker, master, 5557), stack
        assert not policies.allows(locust_pod(run, workers_name("serving"), 61), master, 5557), stack
        assert not policies.allows(other_pod(master, "default", master.address), master, 5557), stack


def test_tracking_admits_a_pod_of_the_load_test_namespace_only_when_load_testing_is_on(stack_runs, on_runs):
    from tools.offline.reachability import ClusterPolicies, other_pod
    from tests.test_reachability import Endpoints

    def admitted(run) -> bool:
        endpoints = Endpoints(run)
        pod = other_pod(endpoints.tracking, NAMESPACE, endpoints.node.rsplit(".", 1)[0] + ".99")
        return ClusterPolicies.of(run).allows(pod, endpoints.tracking, 5000)

    assert (admitted(stack_runs["dev"]), admitted(on_runs["dev"])) == (False, True)
