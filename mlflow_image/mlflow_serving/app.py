"""The uvicorn app factory: MLflow's scoring app for the downloaded model, with metrics."""

from __future__ import annotations

import os

from mlflow.pyfunc import scoring_server

from mlflow_serving.metrics import PrometheusMiddleware


def create_app():
    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    return PrometheusMiddleware(scoring_server.init(model))
