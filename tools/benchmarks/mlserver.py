"""MLServer with its MLflow runtime (what KServe runs for MLflow models), as a serving peer beside a
LocalPlatform: `mlserver start DIR` from its own virtualenv (tools/requirements-mlserver.txt, built by
`make mlserver-venv`), serving the platform's registered model, downloaded once.

Its V2 endpoint (`/v2/models/NAME/infer`) is measured in each configuration that can be its
fastest: inference in the server process (`parallel_workers: 0`) or in its inference-worker pool
(the default, one worker; two on two cores), each with and without adaptive batching (which makes
a lone request wait for the batch window, so it can lose at low load).
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.benchmarks.variants import Server, _start, peer_env
from tools.local.localplatform import LocalPlatform
from tools.local.processes import free_port
from tools.venvs import MLSERVER
MODEL_NAME = "model"
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
# Adaptive batching at its strongest here: room for every concurrent request of the highest load
# measured (c=64), and the 2 ms window the project's pod also allows.
BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}


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


def start(platform: LocalPlatform, name: str, model_dir: Path, batching: bool, parallel_workers: int) -> Server:
    """`mlserver start` on a folder holding settings.json and model-settings.json."""
    folder = platform.workdir / "pods" / name
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "parallel_workers": parallel_workers}
    model = {"name": MODEL_NAME, "implementation": "mlserver_mlflow.MLflowRuntime",
             "parameters": {"uri": str(model_dir)}, **(BATCH if batching else {})}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    env = MLSERVER.env(folder)
    described = (f"mlserver start . (mlserver-mlflow; parallel_workers {parallel_workers}; "
                 + (f"max_batch_size {BATCH['max_batch_size']}, max_batch_time {BATCH['max_batch_time']} s"
                    if batching else "no batching") + ")")
    notes = (("inference in the server process" if parallel_workers == 0 else
              f"inference in a pool of {parallel_workers} worker process{'es' if parallel_workers > 1 else ''}")
             + (", adaptive batching" if batching else ", no batching"))
    server = _start(platform, name, [str(MLSERVER.bin("mlserver")), "start", str(folder)], env, folder,
                    port, described, f"/v2/models/{MODEL_NAME}/ready", notes,
                    {"workers": max(1, parallel_workers), "parallel_workers": parallel_workers, "batching": batching,
                     **(BATCH if batching else {})})
    server.score_path, server.body_format = V2_PATH, "v2"
    return server


# name: (adaptive batching, parallel_workers)
ONE_CORE = {"mlserver-inproc-batching": (True, 0), "mlserver-inproc": (False, 0),
            "mlserver-pool-batching": (True, 1), "mlserver-pool": (False, 1)}
TWO_CORES = {"mlserver-pool2-batching": (True, 2)}


def peers(platform: LocalPlatform, model_dir: Path, configs: dict[str, tuple[bool, int]]) -> list[Server]:
    """MLServer in each of `configs`, serving the model downloaded to `model_dir`."""
    return [start(platform, name, model_dir, batching, workers) for name, (batching, workers) in configs.items()]
