"""Request count by status, latency histogram and in-flight gauge, as a pure ASGI middleware."""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

# Paths are labels: anything else is "other", so a scanner cannot explode the series count.
KNOWN_PATHS = frozenset({"/invocations", "/ping", "/health", "/version", "/live"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# What /invocations answers (scored, model error, unsupported type, failure, overloaded/loading, timed out).
# Their series exist at 0 from the start: Prometheus' increase() over a series that first appears at 1
# reads 0, so a new pod's first errors would be missed by the canary's and the alerts' queries.
SCORING_STATUSES = ("200", "400", "415", "500", "503", "504")


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("mlflow_serving_requests", "Scoring-server requests by path, method and status.",
                                ["path", "method", "status"], registry=self.registry)
        for status in SCORING_STATUSES:
            self.requests.labels("/invocations", "POST", status)
        self.latency = Histogram("mlflow_serving_request_duration_seconds", "Time to answer a request.",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("mlflow_serving_requests_in_flight", "Requests being answered now.",
                               registry=self.registry, multiprocess_mode="livesum")
        # What batching forms: requests answered by one predict, and their rows.
        self.batch_requests = Histogram("mlflow_serving_batch_requests", "Requests answered by one predict.",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("mlflow_serving_batch_rows", "Input rows of one predict.",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.payload_dropped = Counter("mlflow_serving_payload_log_dropped",
                                       "Sampled requests not logged: the payload log's queue was full.",
                                       registry=self.registry)

    def observe_batch(self, requests: int, rows: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)

    def exposition(self) -> bytes:
        """All workers' metrics when PROMETHEUS_MULTIPROC_DIR is set, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class PrometheusMiddleware:
    """Counts and times every HTTP request of the wrapped app; answers GET /metrics itself."""

    def __init__(self, app, metrics: ServingMetrics | None = None):
        self.app = app
        self.metrics = metrics or ServingMetrics()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            await self._exposition(send)
            return
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()
        recorded = False
        self.metrics.in_flight.inc()

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.in_flight.dec()
                self.metrics.requests.labels(path, scope.get("method", ""), str(status)).inc()
                self.metrics.latency.labels(path).observe(time.perf_counter() - started)

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the last byte leaves: a client that reads /metrics next sees it.
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            record()

    async def _exposition(self, send) -> None:
        body = self.metrics.exposition()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
