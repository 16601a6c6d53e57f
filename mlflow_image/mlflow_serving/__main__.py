"""`python -m mlflow_serving -m models:/NAME@ALIAS --port 8080`: what `mlflow models serve
--env-manager local` does (download the model once, run uvicorn on MLflow's scoring app), with
/metrics added by a middleware. The server answers at once: the model is loaded in the background
(retried until a version is behind the alias), /ping says 503 with the reason until then, and /live
says whether the process runs."""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import uvicorn
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

from mlflow_serving.app import (
    BATCH_DELAY_ENV, BATCH_ROWS_ENV, ENV_CACHE_ENV, ENV_TIMEOUT_ENV, MODEL_URI_ENV, PACKAGE_INDEX_ENV,
    PAYLOAD_DROP_ENV, PAYLOAD_HASH_ENV, PAYLOAD_RATE_ENV, STATE_DIR_ENV, TRACK_ENV,
)

# The Gateway's Envoy-based internal load balancer keeps idle connections to a backend for 600 s and
# needs the backend to keep them open longer, or a request sent as the pod closes an idle connection
# fails with a 502 (uvicorn's default is 5 s). 620 s is Google's recommendation (as k8s/tracking.py).
KEEPALIVE_SECONDS = 620


def _columns(text: str) -> list[str]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a JSON list of column names")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlflow_serving", description=__doc__)
    parser.add_argument("-m", "--model-uri", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8080)
    parser.add_argument("-w", "--workers", type=int, default=1)
    parser.add_argument("-t", "--timeout", type=int, default=int(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()))
    parser.add_argument("--log-config", help="logging dictConfig as JSON (uvicorn's --log-config)")
    parser.add_argument("--max-batch-size", type=int, default=1,
                        help="rows per predict at most when batching concurrent requests; 1 serves MLflow's app as is")
    parser.add_argument("--max-batch-delay-ms", type=float, default=0.0,
                        help="how long a batch waits for requests already being received")
    parser.add_argument("--env-cache", default=None,
                        help="directory of the models' restored environments (default: a temporary one)")
    parser.add_argument("--env-timeout", type=float, default=300.0,
                        help="seconds the build of a model's environment may take")
    parser.add_argument("--package-index", default="",
                        help="package index of the environment builds (default: uv's, pypi.org)")
    parser.add_argument("--track", default="",
                        help="the serving track (champion, challenger) payload log entries name; default: the alias")
    parser.add_argument("--payload-sample-rate", type=_rate, default=0.0,
                        help="share of /invocations logged on stderr (mlflow_serving/payload_log.py); 0: none")
    parser.add_argument("--payload-drop", type=_columns, default=[], help="JSON list: input columns never logged")
    parser.add_argument("--payload-hash", type=_columns, default=[],
                        help="JSON list: input columns logged as HMAC-SHA256 with the key in $MLFLOW_SERVING_PAYLOAD_KEY")
    args = parser.parse_args(argv)

    # Workers are separate processes: they learn the model and their shared download dir from here.
    os.environ[MODEL_URI_ENV] = args.model_uri
    os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix="mlflow-serving-")
    os.environ[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(args.timeout)
    os.environ[BATCH_ROWS_ENV] = str(args.max_batch_size)
    os.environ[BATCH_DELAY_ENV] = str(args.max_batch_delay_ms)
    os.environ[ENV_CACHE_ENV] = args.env_cache or tempfile.mkdtemp(prefix="mlflow-envs-")
    os.environ[ENV_TIMEOUT_ENV] = str(args.env_timeout)
    os.environ[PACKAGE_INDEX_ENV] = args.package_index
    os.environ[TRACK_ENV] = args.track
    os.environ[PAYLOAD_RATE_ENV] = str(args.payload_sample_rate)
    os.environ[PAYLOAD_DROP_ENV] = json.dumps(args.payload_drop)
    os.environ[PAYLOAD_HASH_ENV] = json.dumps(args.payload_hash)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers: metrics are aggregated through files, one set per worker.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")
    # lifespan "on": the gate starts the model loader at startup, so it must run.
    uvicorn.run("mlflow_serving.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, timeout_keep_alive=KEEPALIVE_SECONDS, log_level="info", lifespan="on",
                **({"log_config": args.log_config} if args.log_config else {}))


if __name__ == "__main__":
    main()
