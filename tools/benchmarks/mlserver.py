"""MLServer with its MLflow runtime (what KServe runs for MLflow models), as a serving peer beside a
LocalPlatform: `mlserver start DIR` from its own virtualenv (tools/requirements-mlserver.txt, built by
`make mlserver-venv`), serving the platform's registered model, downloaded once.

Its V2 endpoint (`/v2/models/NAME/infer`) is measured with and without MLServer's adaptive
batching; its MLflow-format `/invocations` (never batched by MLServer) on the unbatched server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tools.benchmarks.variants import Server, _start, peer_env
from tools.local.localplatform import LocalPlatform
from tools.local.processes import free_port
from tools.venvs import MLSERVER
MODEL_NAME = "model"
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
INVOCATIONS_PATH = "/invocations"
# The batching the measurement used: 32 requests or 2 ms, as the project's default.
BATCH = {"max_batch_size": 32, "max_batch_time": 0.002}


def available() -> bool:
    return MLSERVER.bin("mlserver").exists()


def download_model(platform: LocalPlatform, target: Path) -> Path:
    """The served version's files, fetched with the serving pod's credentials."""
    command = platform.localized(platform.serving_deployment, platform.serving_container, "mlserver-download",
                                 free_port())
    uri = f"models:/{platform.model_name}@{platform.model_alias}"
    code = ("import sys; from mlflow.artifacts import download_artifacts; "
            "print(download_artifacts(artifact_uri=sys.argv[1], dst_path=sys.argv[2]))")
    done = MLSERVER.run(["-c", code, uri, str(target)], home=target.parent, env=peer_env(platform, command),
                        timeout=300).check("downloading the model for MLServer")
    return Path(done.stdout.strip().splitlines()[-1])


def start(platform: LocalPlatform, name: str, model_dir: Path, batching: bool) -> Server:
    """`mlserver start` on a folder holding settings.json and model-settings.json."""
    folder = platform.workdir / "pods" / name
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    model = {"name": MODEL_NAME, "implementation": "mlserver_mlflow.MLflowRuntime",
             "parameters": {"uri": str(model_dir)}, **(BATCH if batching else {})}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    env = MLSERVER.env(folder)
    described = (f"mlserver start . (mlserver-mlflow; "
                 + (f"max_batch_size {BATCH['max_batch_size']}, max_batch_time {BATCH['max_batch_time']} s"
                    if batching else "no batching") + ")")
    server = _start(platform, name, [str(MLSERVER.bin("mlserver")), "start", str(folder)], env, folder,
                    port, described, f"/v2/models/{MODEL_NAME}/ready", "",
                    {"workers": 1, "batching": batching, **(BATCH if batching else {})})
    server.score_path, server.body_format = V2_PATH, "v2"
    return server


def same_process(server: Server, name: str, path: str, notes: str) -> Server:
    """Another endpoint of a running server: measured as its own configuration."""
    return Server(name, server.url, server.process, server.command + f" {path}", notes, server.ready_path, False,
                  {**server.settings, "path": path}, score_path=path, body_format="mlflow")


def peers(platform: LocalPlatform) -> tuple[list[Server], Optional[str]]:
    """The MLServer configurations, or why they are skipped."""
    if not available():
        return [], f"MLServer: {MLSERVER.path} missing (make {MLSERVER.make_target})"
    model_dir = download_model(platform, platform.workdir / "mlserver-model")
    batched = start(platform, "mlserver-batching", model_dir, batching=True)
    plain = start(platform, "mlserver", model_dir, batching=False)
    batched.notes = "V2 endpoint, adaptive batching"
    plain.notes = "V2 endpoint, no batching"
    invocations = same_process(plain, "mlserver-invocations", INVOCATIONS_PATH,
                               "the same server's MLflow-format /invocations (MLServer does not batch it)")
    return [batched, plain, invocations], None
