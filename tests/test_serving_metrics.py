"""The serving image's metrics middleware, driven as an ASGI app (no server, no MLflow needed)."""

from __future__ import annotations

import asyncio
import sys

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_serving.metrics import PrometheusMiddleware, ServingMetrics  # noqa: E402


def call(app, path: str, method: str = "GET") -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    # A private loop: asyncio.run would unset the global loop the Pulumi tests rely on.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app({"type": "http", "path": path, "method": method, "headers": []}, receive, send))
    finally:
        loop.close()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def scoring_app(status: int = 200, fail: bool = False):
    async def app(scope, receive, send):
        if fail:
            raise RuntimeError("model crashed")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


def sample(metrics: ServingMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_scoring_error_series_exist_at_zero_before_the_first_request():
    # increase() over a series first seen at 1 reads 0: a new challenger's first errors would be missed.
    body = ServingMetrics().exposition().decode()
    for status in ("200", "400", "500", "503", "504"):
        assert f'mlflow_serving_requests_total{{method="POST",path="/invocations",status="{status}"}} 0.0' in body


def test_requests_are_counted_by_path_method_and_status():
    metrics = ServingMetrics()
    call(PrometheusMiddleware(scoring_app(200), metrics), "/invocations", "POST")
    call(PrometheusMiddleware(scoring_app(400), metrics), "/invocations", "POST")
    call(PrometheusMiddleware(scoring_app(400), metrics), "/invocations", "POST")
    assert sample(metrics, "mlflow_serving_requests_total", path="/invocations", method="POST", status="200") == 1
    assert sample(metrics, "mlflow_serving_requests_total", path="/invocations", method="POST", status="400") == 2
    assert sample(metrics, "mlflow_serving_request_duration_seconds_count", path="/invocations") == 3


def test_unknown_paths_share_one_label():
    metrics = ServingMetrics()
    for path in ("/a", "/b", "/wp-admin"):
        call(PrometheusMiddleware(scoring_app(404), metrics), path)
    assert sample(metrics, "mlflow_serving_requests_total", path="other", method="GET", status="404") == 3


def test_a_crash_counts_as_500_and_in_flight_returns_to_zero():
    metrics = ServingMetrics()
    with pytest.raises(RuntimeError):
        call(PrometheusMiddleware(scoring_app(fail=True), metrics), "/invocations", "POST")
    assert sample(metrics, "mlflow_serving_requests_total", path="/invocations", method="POST", status="500") == 1
    assert sample(metrics, "mlflow_serving_requests_in_flight") == 0


def test_metrics_endpoint_is_answered_by_the_middleware_not_counted():
    metrics = ServingMetrics()
    app = PrometheusMiddleware(scoring_app(200), metrics)
    call(app, "/ping")
    status, body = call(app, "/metrics")
    assert status == 200
    assert b'mlflow_serving_requests_total{method="GET",path="/ping",status="200"} 1.0' in body
    assert b'path="/metrics"' not in body


def test_a_request_is_counted_before_its_last_byte_reaches_the_client():
    metrics = ServingMetrics()
    seen_at_last_byte = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.body":
            seen_at_last_byte.append(sample(metrics, "mlflow_serving_requests_total",
                                            path="/invocations", method="POST", status="400"))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(PrometheusMiddleware(scoring_app(400), metrics)(
            {"type": "http", "path": "/invocations", "method": "POST", "headers": []}, receive, send))
    finally:
        loop.close()
    assert seen_at_last_byte == [1]
