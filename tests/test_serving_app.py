"""The serving image's gate in front of MLflow's scoring app, driven as an ASGI app, and the
download every worker of a pod shares (no server, no MLflow)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_serving.app import (  # noqa: E402
    ModelGate, Workers, download_once, parse_model_uri, recorded_version, resolve_alias,
)
from mlflow_serving.loader import ModelLoader, Status  # noqa: E402

URI = "models:/iris@champion"


def run(app, scope: dict, messages: list[dict]) -> list[dict]:
    """Drive one ASGI call; returns what the app sent. A private loop: asyncio.run would unset
    the global loop the Pulumi tests rely on."""
    sent: list[dict] = []
    incoming = list(messages)

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app(scope, receive, send))
    finally:
        loop.close()
    return sent


def get(app, path: str, method: str = "GET") -> tuple[int, bytes]:
    sent = run(app, {"type": "http", "path": path, "method": method, "headers": []},
               [{"type": "http.request", "body": b"", "more_body": False}])
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def waiting_loader() -> ModelLoader:
    loader = ModelLoader(URI, fetch=lambda uri: "/models/1", build=lambda path: None)
    loader.status = Status("waiting", URI, 2, f"no version behind {URI} yet (RESOURCE_DOES_NOT_EXIST: ...)", 4)
    return loader


async def scoring_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-from", b"mlflow")]})
    await send({"type": "http.response.body", "body": f"scored {scope['path']}".encode()})


def test_live_answers_200_while_the_model_is_not_loaded():
    assert get(ModelGate(waiting_loader()), "/live") == (200, b'{"live": true}')


@pytest.mark.parametrize("path, method", [("/ping", "GET"), ("/health", "GET"), ("/invocations", "POST")])
def test_every_other_path_answers_503_with_the_loaders_reason(path, method):
    status, body = get(ModelGate(waiting_loader()), path, method)
    assert status == 503
    assert json.loads(body) == {"ready": False, "state": "waiting", "model_uri": URI, "attempts": 2,
                                "retry_in_seconds": 4,
                                "reason": f"no version behind {URI} yet (RESOURCE_DOES_NOT_EXIST: ...)"}


def test_once_loaded_requests_reach_the_scoring_app_unchanged():
    loader = waiting_loader()
    loader.app = scoring_app
    sent = run(ModelGate(loader), {"type": "http", "path": "/invocations", "method": "POST", "headers": []},
               [{"type": "http.request", "body": b"", "more_body": False}])
    assert sent == [{"type": "http.response.start", "status": 200, "headers": [(b"x-from", b"mlflow")]},
                    {"type": "http.response.body", "body": b"scored /invocations"}]
    assert get(ModelGate(loader), "/live")[0] == 200


def test_a_pod_is_ready_only_when_no_worker_accepts_without_a_model(tmp_path):
    """The Service hands a connection to any worker: one accepting while it loads would answer it 503."""
    loader = waiting_loader()
    loader.app = scoring_app
    gate = ModelGate(loader, Workers(tmp_path))
    parent_started = (Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    sibling = tmp_path / f"accepting-unloaded-{os.getppid()}-{parent_started}"
    sibling.touch()  # another worker of the pod, alive, still loading
    (tmp_path / f"accepting-unloaded-{os.getpid()}-1").touch()  # a process that reused a dead worker's pid
    (tmp_path / "accepting-unloaded-4194304-1").touch()  # a worker that died (no such pid)
    status, body = get(gate, "/ping")
    assert status == 503 and json.loads(body)["reason"] == "1 other worker(s) of this pod still loading the model"
    assert get(gate, "/invocations", "POST")[0] == 200  # a loaded worker serves meanwhile
    sibling.unlink()  # it has loaded
    assert get(gate, "/ping") == (200, b"scored /ping")


def test_a_restarted_worker_loads_before_it_accepts_and_the_first_ones_accept_at_once(tmp_path):
    workers = Workers(tmp_path)
    first = waiting_loader()
    first.start = lambda: None  # loads in the background
    run(ModelGate(first, workers), {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert workers.unloaded_accepting() == 1  # accepting, /live answers, the pod not ready
    workers.loaded()
    (tmp_path / "model-path").write_text("/models/1")  # the download is recorded
    restarted = ModelLoader(URI, fetch=lambda uri: "/models/1", build=lambda path: scoring_app)
    run(ModelGate(restarted, workers), {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert restarted.app is scoring_app and workers.unloaded_accepting() == 0


def test_a_restarted_worker_whose_model_fails_to_load_tries_once_and_says_why(tmp_path):
    (tmp_path / "model-path").write_text("/models/1")
    workers = Workers(tmp_path)

    def broken(path):
        raise ValueError("not a model")
    loader = ModelLoader(URI, fetch=lambda uri: "/models/1", build=broken)
    loader.start = lambda: pytest.fail("a second attempt in the background")
    run(ModelGate(loader, workers), {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert loader.status.state == "failed" and workers.unloaded_accepting() == 1
    status, body = get(ModelGate(loader, workers), "/invocations", "POST")
    assert status == 503 and "not a model" in json.loads(body)["reason"]


def test_server_startup_starts_the_loader_and_shutdown_completes():
    loader = waiting_loader()
    started = []
    loader.start = lambda: started.append(True)
    sent = run(ModelGate(loader), {"type": "lifespan"},
               [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert started == [True]
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


@pytest.fixture
def fake_download(monkeypatch):
    """MLflow's download function, standing in: writes MLmodel under output_path, or fails."""
    calls = []

    def download_artifacts(artifact_uri, dst_path):
        calls.append(artifact_uri)
        (Path(dst_path) / "MLmodel").write_text("flavors: {}\n")
        if len(calls) == 1:
            raise OSError("connection reset mid-download")
        return dst_path

    module = types.ModuleType("mlflow.artifacts")
    module.download_artifacts = download_artifacts
    monkeypatch.setitem(sys.modules, "mlflow.artifacts", module)
    return calls


def test_workers_of_a_pod_share_one_complete_download_of_the_version_behind_the_alias(tmp_path, fake_download):
    versions = iter(["3", "3", "4"])  # the alias moves after the download: the pod keeps what it fetched
    resolve = lambda uri: (f"models:/iris/{next(versions)}", "3")  # noqa: E731
    with pytest.raises(OSError, match="mid-download"):
        download_once(URI, tmp_path, resolve)
    assert [p.name for p in tmp_path.iterdir()] == ["lock"]  # the partial copy is gone
    first = download_once(URI, tmp_path, resolve)
    assert (Path(first) / "MLmodel").exists() and Path(first).parent == tmp_path
    assert download_once(URI, tmp_path, resolve) == first  # another worker: the same copy, no download
    assert fake_download == ["models:/iris/3", "models:/iris/3"]
    assert recorded_version(tmp_path) == "3"  # what its payload log entries name


def test_the_version_is_looked_up_only_for_a_registry_alias():
    assert parse_model_uri(URI) == ("iris", "champion")
    assert resolve_alias("runs:/abc/model") == ("runs:/abc/model", "")
    assert parse_model_uri("/models/iris") == ("", "")
