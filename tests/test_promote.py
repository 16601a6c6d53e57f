"""Promotion and rollback (`python -m tools.ops.promote`, `make promote`).

Unit tests pin down the gates, the order of changes and what a failed rollout undoes (an
in-memory registry), the Kubernetes patch and rollout checks (a fake API; the real client
against a stub API server on 127.0.0.1 when it is installed), the stack commands, and the
SIGUSR1 protocol with a running `make local` (a stand-in process).
The end-to-end tests run one LocalPlatform: v1 (variant base) is served at the start, v2
(variant shifted: every prediction differs) is registered; promotion, gates, rollback and a
failed rollout are then checked through the registry and /invocations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.entities.model_registry.registered_model_alias import RegisteredModelAlias
from mlflow.entities.model_registry.registered_model_tag import RegisteredModelTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from k8s.serving import ROLLOUT_ANNOTATION
from tools.local.manifests import ROOT
from tools.local.processes import http
from tools.local.testing import scratch_platform
from tools.venvs import RUNTIME_VENV_ENV
from tools.ops import promote as promote_module
from tools.ops.promote import (
    EXIT_ERROR, EXIT_GATE, EXIT_ROLLOUT, GateFailed, PromotionError, Requirement, RolloutFailed, RuntimeGranter,
    previous_tag, promote, registry_client, rollback,
)
from tools.ops.interfaces import RolloutError
from tools.ops.local import LocalSignalRoller, PlatformRoller, admin_runner
from tools.ops.rollout import FIELD_MANAGER, STRATEGIC_MERGE_PATCH, ClusterRoller, rollout_patch, rollout_status

# Real processes (Postgres, MLflow servers): not part of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

CHECKS = Path(__file__).resolve().parent / "local_client_checks.py"


# ============================ unit: the promotion logic, in memory ============================
class MemoryRegistry:
    """The MlflowClient calls tools.ops.promote makes, on dicts, answering with MLflow's own entities and
    errors; `writes` lists every change in order."""

    def __init__(self):
        self.models = {"m": {"aliases": {"champion": "1"}, "tags": {},
                             "versions": {"1": ("READY", "run1"), "2": ("READY", "run2"),
                                          "3": ("PENDING_REGISTRATION", "run3")}}}
        self.runs = {"run1": {"accuracy": 0.91, "loss": 0.3}, "run2": {"accuracy": 0.95, "loss": 0.2}}
        self.writes: list[tuple] = []

    def get_registered_model(self, name):
        if name not in self.models:
            raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)
        model = self.models[name]
        return RegisteredModel(name, aliases=[RegisteredModelAlias(a, v) for a, v in model["aliases"].items()],
                               tags=[RegisteredModelTag(k, v) for k, v in model["tags"].items()])

    def get_model_version(self, name, version):
        self.get_registered_model(name)
        versions = self.models[name]["versions"]
        if version not in versions:
            raise MlflowException(f"Model Version (name={name}, version={version}) not found", RESOURCE_DOES_NOT_EXIST)
        status, run_id = versions[version]
        return ModelVersion(name, version, 0, status=status, run_id=run_id)

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(metrics=dict(self.runs[run_id])))

    def set_registered_model_alias(self, name, alias, version):
        self.writes.append(("set_alias", alias, version))
        self.models[name]["aliases"][alias] = version

    def delete_registered_model_alias(self, name, alias):
        self.writes.append(("delete_alias", alias))
        del self.models[name]["aliases"][alias]

    def set_registered_model_tag(self, name, key, value):
        self.writes.append(("set_tag", key, value))
        self.models[name]["tags"][key] = value

    def delete_registered_model_tag(self, name, key):
        self.writes.append(("delete_tag", key))
        del self.models[name]["tags"][key]


class Recorder:
    """Granter and roller in one: records calls; `fail_roll` makes every roll not ready."""

    def __init__(self, fail_roll: bool = False):
        self.calls: list[tuple] = []
        self.fail_roll = fail_roll

    def grant(self, model):
        self.calls.append(("grant", model))
        return f"READ on {model}"

    def roll(self, model, alias, version):
        self.calls.append(("roll", version))
        if self.fail_roll:
            raise RolloutError("readiness probe /ping not answering within 600s")
        return f"rolled onto {version}"

    def restore(self):
        self.calls.append(("restore",))
        return "previous pods serving"


def run_promote(registry, recorder, **kwargs):
    return promote(registry, recorder, recorder, log=lambda message: None, **kwargs)


@pytest.mark.parametrize("text, parsed", [
    ("accuracy>=0.9", ("accuracy", ">=", 0.9)), ("loss < 0.25", ("loss", "<", 0.25)),
    ("val/f1 > 1e-1", ("val/f1", ">", 0.1)), ("n_samples==150", ("n_samples", "==", 150.0)),
    ("rmse<=-.5", ("rmse", "<=", -0.5)),
])
def test_requirement_parses_every_operator(text, parsed):
    requirement = Requirement.parse(text)
    assert (requirement.metric, requirement.op, requirement.threshold) == parsed


@pytest.mark.parametrize("text", ["accuracy", "accuracy=>0.9", ">=0.9", "accuracy>=high", "accuracy >= 0.9 0.1"])
def test_malformed_requirement_says_what_is_expected(text):
    with pytest.raises(ValueError, match=r"expected METRIC OP NUMBER with OP one of >= > <= < =="):
        Requirement.parse(text)


def test_promotion_grants_then_moves_alias_then_records_previous_then_rolls():
    registry, recorder = MemoryRegistry(), Recorder()
    outcome = run_promote(registry, recorder, model="m", version="2", alias="champion",
                          requirements=[Requirement.parse("accuracy>=0.9"), Requirement.parse("loss<0.25")])
    assert (outcome.version, outcome.previous) == ("2", "1")
    assert registry.writes == [("set_alias", "champion", "2"), ("set_tag", previous_tag("champion"), "1")]
    assert recorder.calls == [("grant", "m"), ("roll", "2")]
    assert previous_tag("champion") == "mlflow.promote.previous.champion"


def test_failed_gate_changes_nothing_and_names_metric_and_threshold():
    registry, recorder = MemoryRegistry(), Recorder()
    with pytest.raises(GateFailed, match=r"gate failed: accuracy = 0\.95 is not >= 0\.99 .*nothing changed") as err:
        run_promote(registry, recorder, model="m", version="2", alias="champion",
                    requirements=[Requirement.parse("accuracy>=0.99")])
    assert err.value.exit_code == EXIT_GATE
    assert registry.writes == [] and recorder.calls == []


def test_unknown_metric_lists_what_the_run_logged():
    registry, recorder = MemoryRegistry(), Recorder()
    with pytest.raises(PromotionError, match=r"unknown metric 'f1': run run2 of model 'm' version 2 logged "
                                             r"accuracy, loss"):
        run_promote(registry, recorder, model="m", version="2", alias="champion", requirements=[Requirement.parse("f1>0")])
    assert registry.writes == [] and recorder.calls == []


@pytest.mark.parametrize("model, version, message", [
    ("nope", "1", "registered model 'nope' does not exist"),
    ("m", "9", "model 'm' has no version 9"),
    ("m", "3", "model 'm' version 3 is PENDING_REGISTRATION, not READY"),
])
def test_missing_or_unready_version_is_refused(model, version, message):
    registry, recorder = MemoryRegistry(), Recorder()
    with pytest.raises(PromotionError, match=message) as err:
        run_promote(registry, recorder, model=model, version=version, alias="champion")
    assert err.value.exit_code == EXIT_ERROR
    assert registry.writes == [] and recorder.calls == []


def test_failed_rollout_puts_alias_and_tag_back_and_rolls_back():
    registry, recorder = MemoryRegistry(), Recorder(fail_roll=True)
    registry.models["m"]["tags"][previous_tag("champion")] = "0"
    with pytest.raises(RolloutFailed, match=r"readiness probe .*; alias m@champion moved back to 1; "
                                            r"previous pods serving") as err:
        run_promote(registry, recorder, model="m", version="2", alias="champion")
    assert err.value.exit_code == EXIT_ROLLOUT
    assert registry.models["m"]["aliases"] == {"champion": "1"}
    assert registry.models["m"]["tags"] == {previous_tag("champion"): "0"}
    assert recorder.calls == [("grant", "m"), ("roll", "2"), ("restore",)]


def test_failed_first_rollout_of_a_new_alias_deletes_it_again():
    registry, recorder = MemoryRegistry(), Recorder(fail_roll=True)
    with pytest.raises(RolloutFailed, match="moved back to [(]unset[)]"):
        run_promote(registry, recorder, model="m", version="2", alias="challenger")
    assert registry.models["m"]["aliases"] == {"champion": "1"} and registry.models["m"]["tags"] == {}
    assert registry.writes == [("set_alias", "challenger", "2"), ("delete_alias", "challenger")]


def test_promoting_the_current_version_rolls_but_keeps_the_recorded_previous():
    registry, recorder = MemoryRegistry(), Recorder()
    registry.models["m"]["tags"][previous_tag("champion")] = "0"
    run_promote(registry, recorder, model="m", version="1", alias="champion")
    assert registry.writes == [("set_alias", "champion", "1")]
    assert registry.models["m"]["tags"] == {previous_tag("champion"): "0"}
    assert recorder.calls == [("grant", "m"), ("roll", "1")]


def test_rollback_swaps_alias_and_recorded_previous():
    registry, recorder = MemoryRegistry(), Recorder()
    run_promote(registry, recorder, model="m", version="2", alias="champion")
    outcome = rollback(registry, recorder, recorder, model="m", alias="champion", log=lambda message: None)
    assert (outcome.version, outcome.previous) == ("1", "2")
    assert registry.models["m"]["aliases"]["champion"] == "1"
    assert registry.models["m"]["tags"][previous_tag("champion")] == "2"  # a second rollback rolls forward


@pytest.mark.parametrize("alias, tags, message", [
    ("challenger", {}, "model 'm' has no alias 'challenger': nothing to roll back"),
    ("champion", {}, "no previous version recorded for m@champion [(]tag mlflow.promote.previous.champion[)]"),
    ("champion", {previous_tag("champion"): "9"}, "model 'm' has no version 9"),
])
def test_rollback_refusals(alias, tags, message):
    registry, recorder = MemoryRegistry(), Recorder()
    registry.models["m"]["tags"].update(tags)
    with pytest.raises(PromotionError, match=message):
        rollback(registry, recorder, recorder, model="m", alias=alias, log=lambda message: None)
    assert registry.writes == [] and recorder.calls == []


@pytest.mark.parametrize("argv, message", [
    (["--model", "m", "--alias", "a"], "give --version N to promote, or --rollback"),
    (["--model", "m", "--alias", "a", "--version", "1", "--rollback"], "give --version N to promote, or --rollback"),
    (["--model", "m", "--alias", "a", "--rollback", "--require", "x>1"], "--require gates a promotion"),
    (["--model", "m", "--alias", "a", "--version", "1", "--require", "x=>1"], "expected METRIC OP NUMBER"),
    (["--model", "m", "--alias", "a", "--version", "1", "--target", "moon"], "invalid choice: 'moon'"),
    (["--model", "", "--alias", "a", "--version", "1"], "--model and --alias name a registered model"),
    (["--model", "m", "--alias", "a", "--version", ""], "give --version N to promote, or --rollback"),
])
def test_command_line_refusals(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        promote_module.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ============================ unit: the cluster target ============================
def deployment(generation=2, observed=2, wanted=2, updated=2, replicas=2, available=2, token="initial",
               conditions=()):
    return SimpleNamespace(
        metadata=SimpleNamespace(generation=generation),
        spec=SimpleNamespace(replicas=wanted, template=SimpleNamespace(
            metadata=SimpleNamespace(annotations={ROLLOUT_ANNOTATION: token} if token else {}))),
        status=SimpleNamespace(observed_generation=observed, updated_replicas=updated, replicas=replicas,
                               available_replicas=available,
                               conditions=[SimpleNamespace(type=t, reason=r, message=m) for t, r, m in conditions]))


@pytest.mark.parametrize("state, done, message", [
    (dict(generation=3, observed=2), False, "spec update to be observed"),
    (dict(updated=1), False, "1 of 2 new replicas updated"),
    (dict(replicas=3), False, "1 old replicas pending termination"),
    (dict(available=1), False, "1 of 2 updated replicas available"),
    (dict(), True, "2 replicas updated and available"),
])
def test_rollout_status_decides_as_kubectl_does(state, done, message):
    actual_done, actual_message = rollout_status(deployment(**state))
    assert actual_done == done and message in actual_message, actual_message


def test_progress_deadline_exceeded_fails_at_once():
    stuck = deployment(updated=1, conditions=[("Progressing", "ProgressDeadlineExceeded",
                                               'ReplicaSet "mlflow-serving-abc" has timed out progressing.')])
    with pytest.raises(RolloutError, match="progress deadline: ReplicaSet"):
        rollout_status(stuck)


class FakeAppsApi:
    """AppsV1Api's three calls; `statuses` are returned by successive status reads."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.patches: list[tuple] = []

    def read_namespaced_deployment(self, name, namespace):
        return deployment(token="initial")

    def read_namespaced_deployment_status(self, name, namespace):
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def patch_namespaced_deployment(self, name, namespace, body, **kwargs):
        self.patches.append((name, namespace, body, kwargs))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_cluster_roller_patches_only_the_rollout_annotation_and_waits_for_every_replica():
    api = FakeAppsApi([deployment(generation=3, observed=2), deployment(updated=1), deployment()])
    clock = FakeClock()
    roller = ClusterRoller(api, "mlflow-serving", "mlflow-serving", timeout=60, poll=5, clock=clock, sleep=clock.sleep)
    summary = roller.roll("iris-classifier", "champion", "7")
    [(name, namespace, body, kwargs)] = api.patches
    assert (name, namespace) == ("mlflow-serving", "mlflow-serving")
    token = body["spec"]["template"]["metadata"]["annotations"][ROLLOUT_ANNOTATION]
    assert body == rollout_patch(token) == {"spec": {"template": {"metadata": {"annotations": {
        "mlflow.org/rollout-token": token}}}}}
    assert token.startswith("champion-v7-") and token.endswith("Z")
    # the client picks json-patch for a dict body unless told: the patch must say strategic merge
    assert kwargs == {"field_manager": FIELD_MANAGER, "_content_type": STRATEGIC_MERGE_PATCH}
    assert clock.now == 10 and "2 replicas updated and available" in summary
    assert roller.previous_token == "initial"


def test_cluster_roller_not_ready_in_time_fails_and_restore_puts_the_previous_token_back():
    api = FakeAppsApi([deployment(available=1)])
    clock = FakeClock()
    roller = ClusterRoller(api, "ns", "serving", timeout=30, poll=5, clock=clock, sleep=clock.sleep)
    with pytest.raises(RolloutError, match=r"deployment/serving -n ns not rolled out within 30s: "
                                           r"1 of 2 updated replicas available"):
        roller.roll("m", "champion", "2")
    assert clock.now == 30
    api.statuses = [deployment()]
    assert "back to mlflow.org/rollout-token=initial" in roller.restore()
    assert [p[2] for p in api.patches][-1] == rollout_patch("initial")


class Forbidden(Exception):
    """Shaped like kubernetes.client.ApiException."""
    status, reason = 403, "Forbidden"


def test_kubernetes_api_errors_become_rollout_errors_so_the_alias_is_put_back():
    api = FakeAppsApi([deployment()])

    def refuse(*args, **kwargs):
        raise Forbidden('deployments.apps "mlflow-serving" is forbidden')

    api.patch_namespaced_deployment = refuse
    roller = ClusterRoller(api, "mlflow-serving", "mlflow-serving", timeout=30)
    with pytest.raises(RolloutError, match="Kubernetes API patch_namespaced_deployment of deployment/mlflow-serving "
                                           "-n mlflow-serving failed: HTTP 403 Forbidden"):
        roller.roll("m", "champion", "2")
    registry = MemoryRegistry()
    with pytest.raises(RolloutFailed, match="HTTP 403 Forbidden; alias m@champion moved back to 1"):
        promote(registry, Recorder(), roller, model="m", version="2", alias="champion", log=lambda message: None)
    assert registry.models["m"]["aliases"] == {"champion": "1"} and registry.models["m"]["tags"] == {}


def test_an_unexpected_error_mid_rollout_still_puts_the_alias_back():
    class Broken(Recorder):
        def roll(self, model, alias, version):
            raise ConnectionResetError("connection reset by peer")

    registry = MemoryRegistry()
    with pytest.raises(RolloutFailed, match="ConnectionResetError: connection reset by peer; alias m@champion moved"):
        run_promote(registry, Broken(), model="m", version="2", alias="champion")
    assert registry.models["m"]["aliases"] == {"champion": "1"}


def test_real_kubernetes_client_sends_the_strategic_merge_patch():
    """The installed client (requirements-dev.txt) against a stub API server on 127.0.0.1."""
    kubernetes = pytest.importorskip("kubernetes", reason="the Kubernetes client is not installed in .venv: "
                                     "add kubernetes==37.0.2 to requirements-dev.txt")
    from tools.ops.rollout import apps_api, load_api_client

    seen = []
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mlflow-serving", "namespace": "mlflow-serving", "generation": 2},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: "initial"}},
                                  "spec": {"containers": [{"name": "serving", "image": "x"}]}}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            seen.append((self.command, self.path, self.headers.get("Content-Type"),
                         json.loads(self.rfile.read(length)) if length else None))
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PATCH = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "stub",
                      "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                      "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
                      "users": [{"name": "stub", "user": {"token": "not-a-secret"}}]}
        roller = ClusterRoller(apps_api(load_api_client(kubeconfig)), "mlflow-serving", "mlflow-serving", timeout=10, poll=0.1)
        assert "1 replicas updated and available" in roller.roll("m", "champion", "2")
    finally:
        server.shutdown()
        server.server_close()
    patch = [s for s in seen if s[0] == "PATCH"]
    assert len(patch) == 1
    method, path, content_type, sent = patch[0]
    assert path.startswith("/apis/apps/v1/namespaces/mlflow-serving/deployments/mlflow-serving?")
    assert "fieldManager=mlflow-promote" in path
    assert content_type == STRATEGIC_MERGE_PATCH
    assert sent == rollout_patch(sent["spec"]["template"]["metadata"]["annotations"][ROLLOUT_ANNOTATION])
    assert any(s[1].endswith("/deployments/mlflow-serving/status") for s in seen if s[0] == "GET")


# ============================ unit: asking a running `make local` ============================
STAND_IN = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from tools.local.rollout import Rollouts, write_pid_file

    workdir, mode = Path(sys.argv[2]), sys.argv[3]

    class Serving:
        pid = 4242
        def stop(self):
            pass

    class Platform:
        serving = Serving()
        def restart_serving(self):
            if mode == "fail":
                raise RuntimeError("serving: readiness probe /ping answering 200 not within 600s")
        def roll_tracking(self):
            (workdir / "tracking-rolled").touch()
        def restart_challenger(self):
            (workdir / "challenger-rolled").touch()

    rollouts = Rollouts(workdir)
    rollouts.install()
    write_pid_file(workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (workdir / "stop").exists():
        rollouts.poll(Platform())
        time.sleep(0.05)
""")


@pytest.fixture
def stand_in(tmp_path):
    """Processes shaped like `make local` for tools.local.rollout.local_pid (`python -c CODE tools.local ...`)."""
    procs = []

    def start(mode: str) -> Path:
        workdir = tmp_path / mode
        workdir.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", STAND_IN, "tools.local", str(workdir), mode], cwd=ROOT))
        deadline = time.monotonic() + 30
        while not (workdir / "local.pid").exists():
            assert procs[-1].poll() is None and time.monotonic() < deadline, "stand-in did not start"
            time.sleep(0.05)
        return workdir

    yield start
    for proc in procs:
        (Path(proc.args[4]) / "stop").touch()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_signal_roller_asks_the_running_make_local_and_waits_for_its_answer(stand_in):
    workdir = stand_in("ok")
    roller = LocalSignalRoller(workdir, timeout=20)
    assert roller.roll("m", "champion", "2") == "`make local` restarted serving (rollout 1)"
    assert roller.restore() == "`make local` restarted serving (rollout 2)"
    failing = LocalSignalRoller(stand_in("fail"), timeout=20)
    with pytest.raises(RolloutError, match="rolled serving but it is not ready: serving: readiness probe"):
        failing.roll("m", "champion", "2")


def test_a_rollout_request_names_the_component_make_local_rolls(stand_in):
    from tools.local.rollout import request_rollout

    workdir = stand_in("ok")
    status = request_rollout(workdir, timeout=20, component="tracking")
    assert (status["component"], status["ready"]) == ("tracking", True)
    assert (workdir / "tracking-rolled").exists()
    assert request_rollout(workdir, timeout=20)["component"] == "serving"  # the default, as promote asks
    with pytest.raises(ValueError, match="allowed serving, tracking"):
        request_rollout(workdir, component="postgres")


def test_signal_roller_without_a_running_make_local_is_an_error(tmp_path):
    (tmp_path / "local.pid").write_text(f"{os.getpid()}\n")  # pytest: not a `python -m tools.local`
    with pytest.raises(RolloutError, match="no running `make local` uses"):
        LocalSignalRoller(tmp_path, timeout=5).roll("m", "champion", "2")


# ============================ end to end: one platform for the module ============================
@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-promote-") as local:
        local.start()
        yield local


def checks(platform, *args: str) -> dict:
    return platform.run_client(CHECKS, *args, user="admin", timeout=120).json()


def invocations(platform, rows: dict) -> list:
    response = http("POST", f"{platform.serving_url}/invocations",
                    json_body={"dataframe_split": {"columns": rows["columns"], "data": rows["data"]}})
    assert response.status == 200, response.body[:500]
    return response.json()["predictions"]


def registry(platform) -> MlflowClient:
    return registry_client(platform.tracking_url, platform.admin_username, platform.admin_password)


def aliases_and_tags(platform) -> tuple[dict, dict]:
    model = registry(platform).get_registered_model(platform.model_name)
    return model.aliases, model.tags


def granter(platform) -> RuntimeGranter:
    return RuntimeGranter(admin_runner(platform), platform.serving_username)


@pytest.fixture(scope="module")
def versions(platform) -> dict:
    """v1 served at the start, v2 registered (alias `candidate`); the rows and what each predicts."""
    v1 = platform.demo_run["version"]
    second = platform.run_client("train", "--model-name", platform.model_name, "--alias", "candidate",
                                 "--experiment", "iris-demo", "--variant", "shifted").json()
    rows = checks(platform, "predict", f"models:/{platform.model_name}/{second['version']}")
    predictions = {v1: invocations(platform, rows), second["version"]: rows["predictions"]}
    assert all(a != b for a, b in zip(*predictions.values())), "the two versions must be told apart"
    return {"v1": v1, "v2": second["version"], "rows": rows, "predictions": predictions}


def served_version(platform, versions) -> str:
    served = invocations(platform, versions["rows"])
    return next(v for v, predictions in versions["predictions"].items() if predictions == served)


def cli(platform, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`python -m tools.ops.promote --target local` against this platform, as with a `make local` whose
    endpoints.json it reads (there is no `python -m tools.local` process to signal)."""
    (tmp_path / "endpoints.json").write_text(json.dumps(platform.endpoints()))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           RUNTIME_VENV_ENV: str(platform.runtime.path)}
    return subprocess.run([sys.executable, "-m", "tools.ops.promote", "--model", platform.model_name, *args,
                           "--workdir", str(tmp_path), "--timeout", "5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_promotion_serves_the_new_version(platform, versions):
    name, alias = platform.model_name, platform.model_alias
    assert served_version(platform, versions) == versions["v1"]
    log = []
    outcome = promote(registry(platform), granter(platform), PlatformRoller(platform), model=name,
                      version=versions["v2"], alias=alias, requirements=[Requirement.parse("train_accuracy>=0.9")],
                      log=log.append)
    assert (outcome.version, outcome.previous) == (versions["v2"], versions["v1"])
    assert served_version(platform, versions) == versions["v2"]
    model = registry(platform).get_registered_model(name)
    assert model.aliases[alias] == versions["v2"]
    assert model.tags[previous_tag(alias)] == versions["v1"]
    assert any(line.startswith("gate passed: train_accuracy = ") for line in log)
    assert any(f"mlflow-serving has READ on model '{name}'" in line for line in log)


def test_failed_gate_exits_non_zero_and_changes_nothing(platform, versions, tmp_path):
    before = aliases_and_tags(platform)
    result = cli(platform, tmp_path, "--version", versions["v1"], "--alias", platform.model_alias,
                 "--require", "train_accuracy>=0.999")
    assert result.returncode == EXIT_GATE, result.stderr
    assert "gate failed: train_accuracy = 0.9" in result.stderr and "is not >= 0.999" in result.stderr
    assert aliases_and_tags(platform) == before
    assert served_version(platform, versions) == versions["v2"]


@pytest.mark.parametrize("args, message", [
    (["--version", "99", "--alias", "champion"], "model 'iris-classifier' has no version 99"),
    (["--version", "1", "--alias", "champion", "--require", "f1>=0.5"], "unknown metric 'f1': run "),
    (["--alias", "no-such-alias", "--rollback"], "model 'iris-classifier' has no alias 'no-such-alias'"),
    (["--alias", "candidate", "--rollback"], "no previous version recorded for iris-classifier@candidate"),
])
def test_command_line_errors_are_clear(platform, versions, tmp_path, args, message):
    result = cli(platform, tmp_path, *args)
    assert result.returncode == EXIT_ERROR and message in result.stderr, result.stderr


def test_missing_model_is_a_clear_error(platform, tmp_path):
    (tmp_path / "endpoints.json").write_text(json.dumps(platform.endpoints()))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    result = subprocess.run([sys.executable, "-m", "tools.ops.promote", "--model", "no-such-model", "--version", "1",
                             "--alias", "champion", "--workdir", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_ERROR
    assert "promote: error: registered model 'no-such-model' does not exist" in result.stderr


def test_rollout_that_never_becomes_ready_restores_the_alias(platform, versions, tmp_path):
    """Through the command line: no `make local` answers the rollout request."""
    before = aliases_and_tags(platform)
    result = cli(platform, tmp_path, "--version", versions["v1"], "--alias", platform.model_alias)
    assert result.returncode == EXIT_ROLLOUT, result.stderr
    assert f"rollout of iris-classifier@champion -> version {versions['v1']} failed: no running `make local`" \
        in result.stderr
    assert f"alias iris-classifier@champion moved back to {versions['v2']}" in result.stderr
    assert aliases_and_tags(platform) == before
    assert served_version(platform, versions) == versions["v2"]


def test_rollout_reported_not_ready_restores_alias_and_serving(platform, versions):
    class NotReady:
        """New pods never ready, old ones untouched (maxUnavailable 0): nothing to bring back."""

        def __init__(self):
            self.restored = False

        def roll(self, model, alias, version):
            raise RolloutError("readiness probe /ping not answering within 600s")

        def restore(self):
            self.restored = True
            return "previous pods still serving"

    roller = NotReady()
    before = aliases_and_tags(platform)
    with pytest.raises(RolloutFailed, match="readiness probe /ping not answering .* moved back to "
                                            f"{versions['v2']}; previous pods still serving"):
        promote(registry(platform), granter(platform), roller, model=platform.model_name,
                version=versions["v1"], alias=platform.model_alias, log=lambda message: None)
    assert roller.restored
    assert aliases_and_tags(platform) == before
    assert served_version(platform, versions) == versions["v2"]


def test_rollback_serves_the_previous_version_again(platform, versions):
    outcome = rollback(registry(platform), granter(platform), PlatformRoller(platform), model=platform.model_name,
                       alias=platform.model_alias, log=lambda message: None)
    assert (outcome.version, outcome.previous) == (versions["v1"], versions["v2"])
    assert served_version(platform, versions) == versions["v1"]
    model = registry(platform).get_registered_model(platform.model_name)
    assert model.aliases[platform.model_alias] == versions["v1"]
    assert model.tags[previous_tag(platform.model_alias)] == versions["v2"]


def test_serving_user_still_only_reads(platform):
    auth = (platform.serving_username, platform.serving_password)
    model = platform.model_name
    read = http("GET", f"{platform.tracking_url}/api/2.0/mlflow/registered-models/get?name={model}", auth=auth)
    write = http("POST", f"{platform.tracking_url}/api/2.0/mlflow/registered-models/alias", auth=auth,
                 json_body={"name": model, "alias": "champion", "version": "1"})
    assert (read.status, write.status) == (200, 403)
