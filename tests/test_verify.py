"""What `make promote` proves beyond the registry (tools.ops.verify): the rehearsal before the alias moves,
the answer to the version's input example after the rollout, on both targets (pure and in memory)."""

from __future__ import annotations

import pytest

from tools.ops.promote import EXIT_REHEARSAL, EXIT_ROLLOUT, RolloutFailed, WouldNotServe, promote, rollback
from tools.ops.interfaces import RolloutError
from tools.ops.verify import (
    ClusterVerifier, RehearsalFailed, Rehearsed, check_answer, rehearsal_args, rehearsal_job, rehearsal_result,
)
from tests.test_promote import MemoryRegistry, Recorder

CONTAINER_ARGS = ["-m", "mlflow_serving", "--model-uri", "models:/m@champion", "--port", "8080",
                  "--env-cache", "/var/cache/mlflow-envs", "--env-timeout", "300",
                  "--package-index", "https://us-central1-python.pkg.dev/p/mlflow-pypi/simple/"]
EXAMPLE = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}


class FakeVerifier:
    def __init__(self, refuse: str = "", answer: str = "", example=EXAMPLE):
        self.refuse, self.answer, self.example = refuse, answer, example
        self.calls: list[tuple] = []

    def rehearse(self, model, version):
        self.calls.append(("rehearse", version))
        if self.refuse:
            raise RehearsalFailed(self.refuse)
        return Rehearsed("built the environment abc for lightgbm==4.6.0 in 1.0s", self.example)

    def probe(self, request):
        self.calls.append(("probe", request))
        if self.answer:
            raise RolloutError(self.answer)
        return "its input example was answered with 1 predictions"


def run(registry, recorder, verifier, **kwargs):
    log: list[str] = []
    outcome = promote(registry, recorder, recorder, model="m", version="2", alias="champion", log=log.append,
                      verifier=verifier, **kwargs)
    return outcome, log


def test_a_version_that_would_not_serve_is_refused_before_anything_changes():
    registry, recorder = MemoryRegistry(), Recorder()
    verifier = FakeVerifier(refuse="its environment cannot be built: no version of lightgbm==99.0.0")
    with pytest.raises(WouldNotServe, match=r"model 'm' version 2 would not serve: its environment cannot be built: "
                                            r"no version of lightgbm==99.0.0; nothing changed") as err:
        run(registry, recorder, verifier)
    assert err.value.exit_code == EXIT_REHEARSAL
    assert registry.writes == [] and recorder.calls == []


def test_after_the_rollout_serving_answers_the_versions_own_input_example():
    registry, recorder = MemoryRegistry(), Recorder()
    verifier = FakeVerifier()
    outcome, log = run(registry, recorder, verifier)
    assert verifier.calls == [("rehearse", "2"), ("probe", EXAMPLE)]
    assert recorder.calls == [("grant", "m"), ("roll", "2")]
    assert outcome.rollout.endswith("its input example was answered with 1 predictions")
    assert "rehearsal of version 2: built the environment abc for lightgbm==4.6.0 in 1.0s" in log


def test_a_configured_request_replaces_the_input_example():
    verifier = FakeVerifier()
    run(MemoryRegistry(), Recorder(), verifier, request={"inputs": [[2.0]]})
    assert verifier.calls[-1] == ("probe", {"inputs": [[2.0]]})


def test_a_wrong_answer_fails_the_rollout_and_puts_everything_back():
    registry, recorder = MemoryRegistry(), Recorder()
    verifier = FakeVerifier(answer="its input example was answered HTTP 400: ModuleNotFoundError: lightgbm")
    with pytest.raises(RolloutFailed, match=r"version 2 failed: its input example was answered HTTP 400: "
                                            r"ModuleNotFoundError: lightgbm; alias m@champion moved back to 1") as err:
        run(registry, recorder, verifier)
    assert err.value.exit_code == EXIT_ROLLOUT
    assert registry.models["m"]["aliases"] == {"champion": "1"} and registry.models["m"]["tags"] == {}
    assert recorder.calls == [("grant", "m"), ("roll", "2"), ("restore",)]


def test_without_an_example_the_answers_are_not_checked_and_the_log_says_so():
    verifier = FakeVerifier(example=None)
    _, log = run(MemoryRegistry(), Recorder(), verifier)
    assert [call[0] for call in verifier.calls] == ["rehearse"]
    assert any("has no serving input example: its answers are not checked" in line for line in log)


def test_a_rollback_rehearses_and_probes_the_version_it_returns_to():
    registry, recorder = MemoryRegistry(), Recorder()
    promote(registry, recorder, recorder, model="m", version="2", alias="champion", log=lambda m: None)
    verifier = FakeVerifier()
    rollback(registry, recorder, recorder, model="m", alias="champion", log=lambda m: None, verifier=verifier)
    assert verifier.calls == [("rehearse", "1"), ("probe", EXAMPLE)]


@pytest.mark.parametrize("status, body, message", [
    (503, b'{"ready": false, "reason": "building"}', "answered HTTP 503"),
    (200, b'{"predictions": []}', "answered 200 without predictions"),
    (200, b"<html>", "answered 200 without predictions"),
])
def test_only_a_200_with_predictions_is_an_answer(status, body, message):
    with pytest.raises(RolloutError, match=message):
        check_answer(status, body)
    assert check_answer(200, b'{"predictions": [0, 1]}') == "its input example was answered with 2 predictions"


def test_the_rehearsal_uses_the_serving_containers_environment_settings():
    assert rehearsal_args("m", "7", CONTAINER_ARGS) == [
        "-m", "mlflow_serving.rehearse", "--model-uri", "models:/m/7", "--env-cache", "/var/cache/mlflow-envs",
        "--env-timeout", "300", "--package-index", "https://us-central1-python.pkg.dev/p/mlflow-pypi/simple/"]


def test_the_rehearsal_result_is_its_last_json_line():
    out = 'building...\n{"environment": "reused", "input_example": {"inputs": [1]}}\n'
    assert rehearsal_result(out) == Rehearsed("reused", {"inputs": [1]})
    with pytest.raises(RehearsalFailed, match="it cannot be loaded: ImportError"):
        rehearsal_result('{"error": "it cannot be loaded: ImportError"}')
    with pytest.raises(RehearsalFailed, match="printed no result"):
        rehearsal_result("Traceback ...")


DEPLOYMENT = {
    "metadata": {"name": "mlflow-serving", "namespace": "mlflow-serving"},
    "spec": {"template": {
        "metadata": {"labels": {"app.kubernetes.io/component": "serving"}, "annotations": {"x": "y"}},
        "spec": {"serviceAccountName": "mlflow-serving", "containers": [{
            "name": "serving", "image": "img@sha256:1", "args": CONTAINER_ARGS, "env": [{"name": "A", "value": "1"}],
            "readinessProbe": {}, "startupProbe": {}, "livenessProbe": {}, "lifecycle": {}, "ports": [],
            "volumeMounts": [{"name": "model-envs", "mountPath": "/var/cache/mlflow-envs"}]}],
            "volumes": [{"name": "model-envs", "emptyDir": {}}]}}},
}


def test_the_cluster_rehearsal_is_a_job_of_the_serving_pod_itself():
    job = rehearsal_job(DEPLOYMENT, "m", "7", "serving-rehearsal-1", timeout=300)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "img@sha256:1" and pod["serviceAccountName"] == "mlflow-serving"
    assert container["args"][:4] == ["-m", "mlflow_serving.rehearse", "--model-uri", "models:/m/7"]
    assert not {"readinessProbe", "startupProbe", "livenessProbe", "lifecycle", "ports"} & set(container)
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 420
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "serving-rehearsal"
    assert DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["args"] == CONTAINER_ARGS  # not modified


class FakeApi:
    """The ApiClient calls ClusterVerifier makes: a Deployment, a Job finishing, a pod log, the proxy."""

    class Response:
        def __init__(self, data, status=200):
            self.data, self.status = data, status

    def __init__(self, log: bytes, answer=(200, b'{"predictions": [1]}')):
        self.log, self.answer, self.calls = log, answer, []

    def call_api(self, path, method, body=None, **kwargs):
        import json

        self.calls.append((method, path.split("?")[0], body))
        if path.endswith("/deployments/mlflow-serving"):
            return self.Response(json.dumps(DEPLOYMENT).encode())
        if method == "POST" and path.endswith("/jobs"):
            return self.Response(b"{}")
        if "/jobs/" in path:
            return self.Response(b'{"status": {"succeeded": 1}}')
        if "/pods?" in path:
            return self.Response(b'{"items": [{"metadata": {"name": "serving-rehearsal-1-abc"}}]}')
        if path.endswith("/log?container=serving"):
            return self.Response(self.log)
        if path.endswith("/proxy/invocations"):
            return self.Response(self.answer[1], self.answer[0])
        raise AssertionError(path)


def test_the_cluster_verifier_runs_the_job_reads_its_result_and_probes_through_the_service_proxy():
    api = FakeApi(b'{"environment": "the image satisfies it", "input_example": {"inputs": [1]}}\n')
    verifier = ClusterVerifier(api, "mlflow-serving", "mlflow-serving", "mlflow-serving", sleep=lambda s: None)
    assert verifier.rehearse("m", "7") == Rehearsed("the image satisfies it", {"inputs": [1]})
    created = next(body for method, path, body in api.calls if method == "POST")
    assert created["kind"] == "Job" and created["metadata"]["namespace"] == "mlflow-serving"
    assert created["spec"]["activeDeadlineSeconds"] == 420  # the running container's --env-timeout 300, plus slack
    assert verifier.probe({"inputs": [1]}) == "its input example was answered with 1 predictions"
    assert api.calls[-1][:2] == ("POST", "/api/v1/namespaces/mlflow-serving/services/mlflow-serving:8080/proxy/invocations")


def test_the_cluster_verifier_reports_the_jobs_refusal():
    api = FakeApi(b'{"error": "its environment cannot be built: timeout"}\n')
    verifier = ClusterVerifier(api, "mlflow-serving", "mlflow-serving", "mlflow-serving", sleep=lambda s: None)
    with pytest.raises(RehearsalFailed, match="its environment cannot be built: timeout"):
        verifier.rehearse("m", "7")
