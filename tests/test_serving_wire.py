"""Wire compatibility, proven differentially: every request of tests/wire/corpus.py is sent to
`mlflow models serve` and to the project's serving process (batching on and off) for the same
model; status, content type and body must be equal: byte for byte, except MLflow's stack traces
(file paths and frames), which are compared by presence. Then the corpus again, and a flood of
requests that each name their own answer, from 16 threads at once: every answer reaches the
request that asked, and batches really formed.

One module-wide set of eight servers (two models x four servers), started in parallel (~40 s).
"""

from __future__ import annotations

import http.client
import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tools.local.processes import ManagedProcess, free_port, http_ok
from tools.venvs import runtime
from tests.wire.corpus import CORPUS, scaled_row

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("iris", "scaled")
SERVERS = {  # name: argv after the model path (None: mlflow models serve)
    "mlflow": None,
    "batching": ["--max-batch-size", "1024", "--max-batch-delay-ms", "2"],  # as rendered
    "unbatched": ["--max-batch-size", "1"],
    "two-workers": ["--max-batch-size", "1024", "--max-batch-delay-ms", "2", "--workers", "2"],  # a 2-core pod
}
THREADS = 16


def _argv(server: str, model_dir: Path, port: int) -> list[str]:
    bin_dir = runtime().path / "bin"
    if SERVERS[server] is None:
        return [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
                "--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
    return [str(bin_dir / "python"), "-m", "mlflow_serving", "-m", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port), *SERVERS[server]]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """{(model, server): port} for running servers."""
    work = tmp_path_factory.mktemp("wire")
    runtime().run(["-m", "tests.wire.make_models", str(work)], timeout=300).check("making the models")
    env = runtime().env(work)
    started, ports = [], {}
    try:
        for model in MODELS:
            for server in SERVERS:
                port = free_port()
                process = ManagedProcess(f"{model}-{server}", _argv(server, work / model, port), env=env, cwd=work,
                                         log_path=work / f"{model}-{server}.log", redact=lambda text: text)
                process.start()
                started.append((process, port))
                ports[(model, server)] = port
        for process, port in started:
            process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), 240, "/ping answering 200")
        yield ports
    finally:
        for process, _ in started:
            process.stop()


def post(port: int, content_type, body: bytes, path: str = "/invocations") -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        # skip_accept_encoding etc.: only the headers named here, as a plain client sends them
        connection.putrequest("POST", path, skip_accept_encoding=True)
        if content_type is not None:
            connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


# MLflow prints a Python set of the input formats: its order follows the process's hash seed.
_SET_LITERAL = re.compile(r"\{'[^{}]*'\}")


def _sorted_set(match: re.Match) -> str:
    return "{" + ", ".join(sorted(match.group(0)[1:-1].split(", "))) + "}"


def comparable(answer: tuple[int, str, bytes]):
    """The answer with MLflow's stack trace reduced to its presence (its frames name files) and
    set literals in its message sorted."""
    status, content_type, body = answer
    try:
        document = json.loads(body)
    except ValueError:
        return answer
    if isinstance(document, dict) and "error_code" in document:
        document["stack_trace"] = bool(document.get("stack_trace"))
        document["message"] = _SET_LITERAL.sub(_sorted_set, document.get("message", ""))
        return status, content_type, document
    return answer


@pytest.fixture(scope="module")
def expected(servers):
    """MLflow's answer to every corpus request."""
    return {name: post(servers[(model, "mlflow")], content_type, body) for name, model, content_type, body in CORPUS}


def test_the_corpus_covers_forty_requests_and_both_models():
    assert len(CORPUS) >= 40 and {model for _, model, _, _ in CORPUS} == set(MODELS)


def test_the_corpus_exercises_successes_client_errors_and_server_errors(expected):
    statuses = {status for status, _, _ in expected.values()}
    assert {200, 400, 415, 500} <= statuses, statuses


@pytest.mark.parametrize("server", ["batching", "unbatched", "two-workers"])
@pytest.mark.parametrize("name, model, content_type, body", CORPUS, ids=[entry[0] for entry in CORPUS])
def test_answers_equal_mlflows(servers, expected, server, name, model, content_type, body):
    ours = post(servers[(model, server)], content_type, body)
    theirs = expected[name]
    if theirs[0] == 200:
        assert ours == theirs
    else:
        assert comparable(ours) == comparable(theirs)


@pytest.mark.parametrize("path", ["/ping", "/health", "/version", "/nowhere"])
def test_other_paths_answer_as_mlflows(servers, path):
    def get(port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()

    assert get(servers[("iris", "batching")]) == get(servers[("iris", "mlflow")])


@pytest.mark.parametrize("server", ["batching", "two-workers"])
def test_concurrent_corpus_answers_reach_the_request_that_asked(servers, expected, server):
    entries = [entry for entry in CORPUS if entry[0] != "oversized body"] * 3
    random.Random(13).shuffle(entries)

    def check(entry):
        name, model, content_type, body = entry
        ours = post(servers[(model, server)], content_type, body)
        return name, comparable(ours) == comparable(expected[name])

    with ThreadPoolExecutor(THREADS) as pool:
        wrong = [name for name, same in pool.map(check, entries) if not same]
    assert not wrong


def batch_histogram(port: int) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    lines = connection.getresponse().read().decode().splitlines()
    value = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("mlflow_serving_batch_requests_")}
    return value["mlflow_serving_batch_requests_sum"], value["mlflow_serving_batch_requests_count"]


def test_a_concurrent_flood_forms_batches_and_never_answers_a_neighbour(servers):
    port = servers[("scaled", "batching")]
    before = batch_histogram(port)

    def ask(i):
        body, label = scaled_row(i)
        status, _, answer = post(port, "application/json", body)
        return status == 200 and json.loads(answer) == {"predictions": [{"y": 2.0 * i, "label": label}]}

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(ask, range(400)))
    requests, predicts = (after - earlier for after, earlier in zip(batch_histogram(port), before))
    assert requests == 400 and predicts < requests, f"{requests} requests answered by {predicts} predicts"
