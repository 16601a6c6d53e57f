"""The uvicorn app factory: MLflow's scoring app for the model (with /invocations batched when
batching is on), behind a gate that answers until the model is loaded, with metrics.

MLflow's scoring server, the download and the model's flavor are imported by the loader thread,
so /live answers meanwhile.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlflow_serving.batching import BatchSettings
from mlflow_serving.environment import EnvironmentBuilder, EnvironmentSettings, activate
from mlflow_serving.loader import ModelLoader
from mlflow_serving.metrics import PrometheusMiddleware, ServingMetrics
from mlflow_serving.payload_log import PAYLOAD_KEY_ENV, LineWriter, PayloadLog, PayloadLogApp, Redaction, Served

MODEL_URI_ENV = "MLFLOW_SERVING_MODEL_URI"
STATE_DIR_ENV = "MLFLOW_SERVING_STATE_DIR"
BATCH_ROWS_ENV = "MLFLOW_SERVING_MAX_BATCH_SIZE"
BATCH_DELAY_ENV = "MLFLOW_SERVING_MAX_BATCH_DELAY_MS"
ENV_CACHE_ENV = "MLFLOW_SERVING_ENV_CACHE"
ENV_TIMEOUT_ENV = "MLFLOW_SERVING_ENV_TIMEOUT"
PACKAGE_INDEX_ENV = "MLFLOW_SERVING_PACKAGE_INDEX"
PAYLOAD_RATE_ENV = "MLFLOW_SERVING_PAYLOAD_SAMPLE_RATE"
PAYLOAD_DROP_ENV = "MLFLOW_SERVING_PAYLOAD_DROP"
PAYLOAD_HASH_ENV = "MLFLOW_SERVING_PAYLOAD_HASH"
TRACK_ENV = "MLFLOW_SERVING_TRACK"
LIVE_PATH = "/live"
READY_PATH = "/ping"
_MODEL_PATH_FILE = "model-path"
_MODEL_VERSION_FILE = "model-version"
_UNLOADED_PREFIX = "accepting-unloaded-"


async def _send_json(send, status: int, document: dict) -> None:
    body = json.dumps(document).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _started(pid: int) -> Optional[str]:
    """When process `pid` started (clock ticks since boot), None when there is no such process: with
    the pid it names one process, even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Workers:
    """The pod's worker processes that accept connections before their model is loaded: one marker
    file each in the state dir they share. The Service hands a connection to any worker, so the pod is
    ready only when none is marked. Only the first workers of a pod accept early (to answer /live
    while the model downloads); a worker that uvicorn restarts loads the model before it accepts, and
    the others serve meanwhile."""

    state_dir: Path

    def _marker(self) -> Path:
        return self.state_dir / f"{_UNLOADED_PREFIX}{os.getpid()}-{_started(os.getpid())}"

    def model_recorded(self) -> bool:
        """True once a worker of this pod has downloaded the model."""
        return (self.state_dir / _MODEL_PATH_FILE).exists()

    def accepting_unloaded(self) -> None:
        self._marker().touch()

    def loaded(self) -> None:
        self._marker().unlink(missing_ok=True)

    def unloaded_accepting(self) -> int:
        """Live workers accepting connections without a model."""
        count = 0
        for marker in self.state_dir.glob(_UNLOADED_PREFIX + "*"):
            pid, started = marker.name[len(_UNLOADED_PREFIX):].split("-", 1)
            count += _started(int(pid)) == started
        return count


class ModelGate:
    """ASGI app: GET /live is 200 while the process runs; every other request goes to the scoring
    app once the loader has built it, and is answered 503 with the loader's status until then;
    /ping also until no other worker of the pod accepts connections without a model. The loader
    starts with the server (lifespan startup)."""

    def __init__(self, loader: ModelLoader, workers: Optional[Workers] = None):
        self.loader = loader
        self.workers = workers

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"] == LIVE_PATH:
            await _send_json(send, 200, {"live": True})
            return
        app = self.loader.app
        if app is None:
            await _send_json(send, 503, self.loader.status.body())
            return
        if scope["type"] == "http" and scope["path"] == READY_PATH and self.workers is not None:
            unloaded = self.workers.unloaded_accepting()
            if unloaded:
                await _send_json(send, 503, {**self.loader.status.body(), "ready": False,
                                             "reason": f"{unloaded} other worker(s) of this pod still loading the model"})
                return
        await app(scope, receive, send)

    async def _start_loading(self) -> None:
        if self.workers is not None and self.workers.model_recorded():
            # A restarted worker: load before accepting, while the other workers serve. The download is
            # recorded, so this ends loaded or failed; failed, it accepts to answer 503 with the reason.
            await asyncio.get_running_loop().run_in_executor(None, self.loader.run)
            if self.loader.app is None:
                self.workers.accepting_unloaded()
            return
        if self.workers is not None:
            self.workers.accepting_unloaded()
        self.loader.start()

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if isinstance(self.loader.app, PayloadLogApp):  # entries queued on SIGTERM are written
                    await asyncio.get_running_loop().run_in_executor(None, self.loader.app.log.flush)
                await send({"type": "lifespan.shutdown.complete"})
                return


def parse_model_uri(model_uri: str) -> tuple[str, str]:
    """(NAME, ALIAS) of models:/NAME@ALIAS; ("", "") for any other URI."""
    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    return (name, alias) if model_uri.startswith("models:/") and alias else ("", "")


def resolve_alias(model_uri: str) -> tuple[str, str]:
    """(URI of the version behind the alias, its version): one lookup, so the version downloaded is the
    version the payload log names even if the alias moves meanwhile. Other URIs as they are, no version."""
    name, alias = parse_model_uri(model_uri)
    if not name:
        return model_uri, ""
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{version}", str(version)


def download_once(model_uri: str, state_dir: Path,
                  resolve: Callable[[str], tuple[str, str]] = resolve_alias) -> str:
    """The model's local path. With several workers the first one downloads (under a lock) and
    records where and which version; the others load that same copy, so a pod never serves two versions."""
    with open(state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        record = state_dir / _MODEL_PATH_FILE
        if record.exists():
            return record.read_text()
        from mlflow.artifacts import download_artifacts

        uri, version = resolve(model_uri)
        target = tempfile.mkdtemp(prefix="model-", dir=state_dir)
        try:
            path = download_artifacts(artifact_uri=uri, dst_path=target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (state_dir / _MODEL_VERSION_FILE).write_text(version)
        record.write_text(path)
        return path


def recorded_version(state_dir: Path) -> str:
    """The registry version download_once fetched ("" when the URI named none)."""
    path = state_dir / _MODEL_VERSION_FILE
    return path.read_text() if path.exists() else ""


def scoring_app(local_path: str, batching: BatchSettings = BatchSettings(max_rows=1),
                metrics: ServingMetrics | None = None):
    """What `mlflow models serve --env-manager local` serves for a downloaded model; with batching
    on, its POST /invocations goes through the batcher and the rest to MLflow's app."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.file_utils import path_to_local_file_uri

    from mlflow_serving.batching import Batcher, BatchingApp, Scorer

    model = scoring_server.load_model_with_mlflow_config(path_to_local_file_uri(local_path))
    app = scoring_server.init(model)
    if batching.max_rows <= 1:
        return app
    observe = metrics.observe_batch if metrics else (lambda requests, rows: None)
    batcher = Batcher(Scorer(model), batching, observe)
    return BatchingApp(app, batcher, MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


def restore_environment(local_path: str, settings: EnvironmentSettings) -> str:
    """The model's recorded environment on top of the image's, first on sys.path; a summary."""
    # The scoring server's imports first: what it loads is the image's, whatever the model records.
    from mlflow.pyfunc import scoring_server  # noqa: F401

    restored = EnvironmentBuilder(settings).restore(Path(local_path))
    activate(restored)
    return restored.summary


def environment_settings(environ=os.environ) -> EnvironmentSettings:
    return EnvironmentSettings(cache_dir=Path(environ[ENV_CACHE_ENV]), timeout_seconds=float(environ[ENV_TIMEOUT_ENV]),
                               index_url=environ.get(PACKAGE_INDEX_ENV) or None)


def batch_settings(environ=os.environ) -> BatchSettings:
    return BatchSettings(max_rows=int(environ.get(BATCH_ROWS_ENV, "1")),
                         max_delay_ms=float(environ.get(BATCH_DELAY_ENV, "0")))


@dataclass(frozen=True)
class PayloadSettings:
    rate: float
    redaction: Redaction
    track: str = ""
    """The Deployment's track (champion, challenger); "" names the alias."""


def payload_settings(environ=os.environ) -> PayloadSettings:
    """Refuses (RedactionError) hashing without a key: the worker fails at start, never logs unredacted."""
    redaction = Redaction(drop=frozenset(json.loads(environ.get(PAYLOAD_DROP_ENV) or "[]")),
                          hash=frozenset(json.loads(environ.get(PAYLOAD_HASH_ENV) or "[]")),
                          key=environ.get(PAYLOAD_KEY_ENV, "").encode())
    return PayloadSettings(rate=float(environ.get(PAYLOAD_RATE_ENV) or "0"), redaction=redaction,
                           track=environ.get(TRACK_ENV, ""))


def with_payload_log(app, settings: PayloadSettings, model_uri: str, version: str, state_dir: Path,
                     metrics: ServingMetrics):
    """`app` with its sampled /invocations logged; `app` itself when the rate is 0 (nothing on the hot path)."""
    if settings.rate <= 0:
        return app
    name, alias = parse_model_uri(model_uri)
    served = Served(model=name or model_uri, version=version, alias=alias, track=settings.track or alias)
    log = PayloadLog(served, settings.redaction, LineWriter(2, state_dir / "payload-log.lock"),
                     dropped=metrics.payload_dropped.inc)
    return PayloadLogApp(app, log, settings.rate)


def create_app():
    state_dir = Path(os.environ[STATE_DIR_ENV])
    metrics, batching, environment = ServingMetrics(), batch_settings(), environment_settings()
    payload, model = payload_settings(), os.environ[MODEL_URI_ENV]
    workers = Workers(state_dir)

    def build(path: str):
        app = with_payload_log(scoring_app(path, batching, metrics), payload, model, recorded_version(state_dir),
                               state_dir, metrics)
        workers.loaded()
        return app
    loader = ModelLoader(model, fetch=lambda uri: download_once(uri, state_dir),
                         prepare=lambda path: restore_environment(path, environment), build=build)
    return PrometheusMiddleware(ModelGate(loader, workers), metrics)
