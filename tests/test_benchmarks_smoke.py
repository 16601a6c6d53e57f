"""The benchmark harness works end to end: `python -m tools.benchmarks --quick` starts a LocalPlatform,
loads the serving and tracking servers, and writes results, plots and a report of the documented
shape. Only the shape is checked (and that every answer was a success), never a timing: this
machine is shared and a number says nothing about the harness.

Needs what tests/test_local_e2e.py needs (Postgres binaries, the runtime virtualenv); ~2 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

# Real processes (Postgres, MLflow servers): not part of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NUMBER = {"type": "number"}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
OPT_NUMBER = {"type": ["number", "null"]}

HEADER = {
    "schema_version": {"const": 1},
    "quick": {"const": True},
    "generated": {"type": "string"},
    "machine": {"type": "object", "required": ["nproc", "cpu_model", "memory_gib", "kernel"],
                "properties": {"nproc": {"type": "integer", "minimum": 1}, "cpu_model": {"type": "string"},
                               "memory_gib": POSITIVE}},
    "versions": {"type": "object", "required": ["mlflow", "uvicorn", "python"],
                 "properties": {"mlflow": {"type": "string"}}},
    "elapsed_s": POSITIVE,
}

LATENCY = {"p50_ms": POSITIVE, "p99_ms": POSITIVE}

SERVING_SCHEMA = {
    "type": "object",
    "required": [*HEADER, "configs", "results", "ceiling_rps", "ceiling", "middleware_in_process",
                 "by_payload_and_concurrency", "two_cores", "goals", "method"],
    "properties": {
        **HEADER,
        "configs": {"type": "object", "minProperties": 3, "additionalProperties": {
            "type": "object", "required": ["role", "command", "settings", "memory_after"],
            "properties": {"command": {"type": "string"},
                           "settings": {"type": "object", "required": ["workers"]},
                           "memory_after": {"type": "object", "required": ["rss_mib", "pss_mib"],
                                            "properties": {"rss_mib": POSITIVE, "pss_mib": POSITIVE}}}}},
        "results": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["config", "cores", "payload_rows", "concurrency", "rps", "p50_ms", "p99_ms", "rps_per_core",
                         "loadgen_cpu_per_s", "requests", "errors"],
            "properties": {"config": {"type": "string"}, "cores": {"enum": [1, 2]},
                           "payload_rows": {"type": "integer", "minimum": 1},
                           "concurrency": {"type": "integer", "minimum": 1}, "rps": POSITIVE, **LATENCY,
                           "rps_per_core": POSITIVE, "requests": {"type": "integer", "minimum": 1},
                           "errors": {"const": 0}}}},
        "ceiling_rps": {"type": "object", "minProperties": 1, "additionalProperties": POSITIVE},
        "ceiling": {"type": "object"},
        "by_payload_and_concurrency": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {
                "type": "object", "required": ["a_over_b_rps", "a_over_b_rps_per_core", "a_over_ceiling_per_core",
                                               "a_over_unbatched_rps"],
                "additionalProperties": OPT_NUMBER}}},
        "middleware_in_process": {"type": "object", "required": ["middleware_cpu_us_per_request"],
                                  "properties": {"middleware_cpu_us_per_request": NUMBER}},
        "goals": {"type": "object", "required": ["middleware_loss_at_most_5pct", "a_p50_at_most_3ms_at_c1",
                                                 "a_p99_at_most_15ms_at_c4", "a_memory_at_most_110pct_of_unbatched"]},
    },
}

TRACKING_SCHEMA = {
    "type": "object",
    "required": [*HEADER, "configs", "auth", "ingest", "bulk_load", "search", "artifacts", "memory", "goals"],
    "properties": {
        **HEADER,
        "configs": {"type": "object", "required": ["tracking", "tracking-ttl0"]},
        "auth": {"type": "array", "minItems": 3, "items": {
            "type": "object", "required": ["server", "what", "n", *LATENCY, "statuses"],
            "properties": {"n": {"type": "integer", "minimum": 1}, **LATENCY,
                           "statuses": {"type": "object", "propertyNames": {"const": "200"}}}}},
        "ingest": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["server", "threads", "runs", "runs_per_s", "run_p50_ms", "errors"],
            "properties": {"threads": {"type": "integer", "minimum": 1}, "runs": {"type": "integer", "minimum": 1},
                           "runs_per_s": POSITIVE, "errors": {"const": 0}}}},
        "bulk_load": {"type": "object", "required": ["runs", "seconds"],
                      "properties": {"runs": {"type": "integer", "minimum": 1}}},
        "search": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["what", "filter", "runs_in_experiment", "returned", "n", *LATENCY],
            "properties": {"runs_in_experiment": {"type": "integer", "minimum": 1}, **LATENCY}}},
        "artifacts": {"type": "object", "required": ["size_mb", "upload_mb_s", "download_mb_s"],
                      "properties": {"upload_mb_s": POSITIVE, "download_mb_s": POSITIVE}},
        "memory": {"type": "object", "minProperties": 2, "additionalProperties": {
            "type": "object", "required": ["rss_mib", "pss_mib", "processes"],
            "properties": {"rss_mib": POSITIVE, "pss_mib": POSITIVE, "processes": {"type": "integer", "minimum": 1}}}},
        "goals": {"type": "object", "required": ["auth_p50_at_most_15ms", "search_at_most_100ms",
                                                 "at_most_1GiB_per_pod"]},
    },
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("bench-results")
    docs = results / "benchmarks.md"
    completed = subprocess.run(
        [sys.executable, "-m", "tools.benchmarks", "--quick", "--results-dir", str(results), "--docs", str(docs)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}"
    return results


def test_serving_results_have_the_documented_shape(quick_run):
    data = json.loads((quick_run / "serving.json").read_text())
    jsonschema.validate(data, SERVING_SCHEMA)
    # every configuration of a phase measured at every point of it, the project's and the user's among them
    points = {(r["config"], r["cores"], r["payload_rows"], r["concurrency"]) for r in data["results"]}
    rows = {r["payload_rows"] for r in data["results"] if r["cores"] == 1}
    concurrency = {r["concurrency"] for r in data["results"]}
    one_core = {"project-w1", "models-serve-w1", "project-unbatched"}
    assert points == {(c, 1, n, k) for c in one_core for n in rows for k in concurrency} | {
        ("project-w2", 2, 1, k) for k in concurrency}
    configs = set(data["configs"])
    assert configs == one_core | {"project-w2"}
    assert data["configs"]["project-w2"]["settings"]["workers"] == 2 and data["configs"]["project-w2"]["cores"] == [2]
    assert {data["configs"][c]["role"] for c in configs} >= {"a", "b", "variant"}
    # (a) batches (its /metrics counted predicts); batching off forms none
    assert all(r["requests_per_predict"] for r in data["results"] if r["config"] == "project-w1")
    assert not any(r["requests_per_predict"] for r in data["results"] if r["config"] == "project-unbatched")
    assert set(data["ceiling_rps"]) == {str(n) for n in rows}


def test_tracking_results_have_the_documented_shape(quick_run):
    data = json.loads((quick_run / "tracking.json").read_text())
    jsonschema.validate(data, TRACKING_SCHEMA)
    ttls = {row["server"]: row.get("auth_cache_ttl_seconds") for row in data["auth"] if row["auth"]}
    assert ttls["tracking-ttl0"] == 0 and ttls["tracking"] > 0
    assert {row["threads"] for row in data["ingest"]} == {1, 4}
    assert all(row["runs_in_experiment"] == data["bulk_load"]["runs"] for row in data["search"])


def test_report_and_plots_are_written(quick_run):
    for name in ("serving_throughput.png", "serving_latency.png", "tracking.png"):
        assert (quick_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (quick_run / "benchmarks.md").read_text()
    for heading in ("## Goals", "## Serving", "## Tracking", "## Machine"):  # the generated sections
        assert heading in report
    assert "project-w1" in report and "models-serve-w1" in report
