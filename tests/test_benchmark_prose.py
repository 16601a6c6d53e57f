"""docs/benchmarks.md: the tables between `<!-- generated:... -->` markers come from
tools/benchmarks/report.py; the conclusions around them are written by hand. Every number the prose
quotes from the latest run is listed here with where it comes from in tools/benchmarks/results/*.json,
so a rerun (or a slip of the pen) that leaves a stale number fails until the prose is rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from tools.benchmarks.report import BLOCK

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = {name: json.loads((ROOT / "tools" / "benchmarks" / "results" / f"{name}.json").read_text())
           for name in ("serving", "tracking", "coldstart")}
SERVING, TRACKING, COLDSTART = RESULTS["serving"], RESULTS["tracking"], RESULTS["coldstart"]


def serving(config: str, rows: int, c: int, key: str, cores: int = 1) -> float:
    return next(r[key] for r in SERVING["results"]
                if (r["config"], r["payload_rows"], r["concurrency"], r["cores"]) == (config, rows, c, cores))


def goal(name: str) -> float:
    return SERVING["goals"][name]["value"]


def two_cores(c: int, key: str) -> float:
    return SERVING["two_cores"]["1"][str(c)][key]


def auth(server: str, key: str = "p50_ms") -> float:
    return next(row[key] for row in TRACKING["auth"] if row["server"] == server and row["auth"])


def ingest(server: str, threads: int, key: str = "runs_per_s") -> float:
    return next(row[key] for row in TRACKING["ingest"] if (row["server"], row["threads"]) == (server, threads))


def search(what: str, key: str = "p50_ms") -> float:
    return next(row[key] for row in TRACKING["search"] if row["what"] == what)


def memory(prefix: str, key: str = "rss_mib") -> float:
    return next(value[key] for name, value in TRACKING["memory"].items() if name.startswith(prefix))


def cold(case: str, label: str) -> float:
    return COLDSTART["cases"][case][label]["median_s"]


def minutes() -> float:
    return (SERVING["elapsed_s"] + TRACKING["elapsed_s"] + SERVING["platform_start_s"]) / 60


def ratio(a: float, b: float) -> float:
    return a / b


FULL = "filtered by a param and a metric"
RAW = "the same, raw HTTP (response not parsed)"
SKLEARN, LIGHTGBM = "sklearn (image)", "lightgbm (+1 package)"
# (the sentence as written, with {} where the number stands; the number from the results; its format)
CLAIMS: list[tuple[str, Callable[[], float], str]] = [
    ("about {} minutes on this machine", minutes, ".0f"),
    # Recommended defaults
    ("One uvicorn worker per pod: c=1 p50 {} ms", lambda: serving("project-w1", 1, 1, "p50_ms"), ".1f"),
    ("c=16, 1-row: {} rps with batching", lambda: serving("project-w1", 1, 16, "rps"), ",.0f"),
    ("rps with batching, {} without", lambda: serving("project-unbatched", 1, 16, "rps"), ",.0f"),
    ("without; {} requests per predict", lambda: serving("project-w1", 1, 16, "requests_per_predict"), ".1f"),
    ("auth GET p50 {} ms, 1-thread ingest", lambda: auth("tracking-w2"), ".1f"),
    ("1-thread ingest {} runs/s", lambda: ingest("tracking-w2", 1), ".1f"),
    ("(1 worker: {} ms,", lambda: auth("tracking"), ".1f"),
    ("ms, {} runs/s).", lambda: ingest("tracking", 1), ".1f"),
    ("2 workers: {} runs/s with 4 threads (1 worker", lambda: ingest("tracking-w2-std", 4), ".1f"),
    ("(1 worker: {}, ", lambda: ingest("tracking", 4), ".1f"),
    (", {} runs per CPU-second) in", lambda: ingest("tracking", 4, "runs_per_core"), ",.0f"),
    ("in {} MiB RSS. A second worker", lambda: memory("tracking-w2-std"), ",.0f"),
    ("auth GET p50 {} ms vs", lambda: auth("tracking-w1-std"), ".1f"),
    ("ms vs {} ms as rendered", lambda: auth("tracking"), ".1f"),
    ("p50 {} ms with the cache,", lambda: auth("tracking"), ".1f"),
    ("with the cache, {} ms without", lambda: auth("tracking-ttl0"), ",.0f"),
    ("{} MiB RSS (", lambda: memory("tracking-jobs"), ",.0f"),
    ("({} PSS) with the job runner", lambda: memory("tracking-jobs", "pss_mib"), ",.0f"),
    ("vs {} MiB without, same warm-up", lambda: memory("tracking-fresh"), ",.0f"),
    ("tracking peaks at {} MiB RSS", lambda: memory("tracking (jobs off), after"), ",.0f"),
    ("(2 workers: {}); serving", lambda: memory("tracking-w2,"), ",.0f"),
    ("serving {} MiB, and", lambda: SERVING["configs"]["project-w1"]["memory_after"]["rss_mib"], ",.0f"),
    ("and {} MiB with two workers", lambda: SERVING["configs"]["project-w2"]["memory_after"]["rss_mib"], ",.0f"),
    ("twice; {} MiB PSS)", lambda: SERVING["configs"]["project-w2"]["memory_after"]["pss_mib"], ",.0f"),
    # Serving, what the numbers say
    ("load average {} before", lambda: SERVING["loadavg"]["before"][0], ""),
    ("and {} after, on", lambda: SERVING["loadavg"]["after"][0], ""),
    ("the pod answers {} rps against", lambda: serving("project-w1", 1, 1, "rps"), ",.0f"),
    ("against {} for MLServer in-process without batching", lambda: serving("mlserver-inproc", 1, 1, "rps"), ",.0f"),
    ("without batching (**{}×**)", lambda: goal("a_over_best_mlserver_at_c1"), ".2f"),
    ("window ({} rps with it)", lambda: serving("mlserver-inproc-batching", 1, 1, "rps"), ",.0f"),
    ("At c=4: {} against", lambda: serving("project-w1", 1, 4, "rps"), ",.0f"),
    ("against {}\n(in-process, batching", lambda: serving("mlserver-inproc-batching", 1, 4, "rps"), ",.0f"),
    ("(in-process, batching: **{}×**)", lambda: goal("a_over_best_mlserver_at_c4"), ".2f"),
    ("with p99 **{} ms** against", lambda: serving("project-w1", 1, 4, "p99_ms"), ".1f"),
    ("ms** against {}. At c=16", lambda: serving("mlserver-inproc-batching", 1, 4, "p99_ms"), ".1f"),
    ("At c=16: {} against", lambda: serving("project-w1", 1, 16, "rps"), ",.0f"),
    ("against {}\n(pool, batching", lambda: serving("mlserver-pool-batching", 1, 16, "rps"), ",.0f"),
    ("(pool, batching: **{}×**); at c=64", lambda: goal("a_over_best_mlserver_at_c16"), ".2f"),
    ("at c=64: {} against", lambda: serving("project-w1", 1, 64, "rps"), ",.0f"),
    ("against {} (pool, batching", lambda: serving("mlserver-pool-batching", 1, 64, "rps"), ",.0f"),
    ("(pool, batching: **{}×**). `mlflow", lambda: goal("a_over_best_mlserver_at_c64"), ".2f"),
    ("`mlflow models serve --workers 1`:\n{} rps at c=16", lambda: serving("models-serve-w1", 1, 16, "rps"), ",.0f"),
    ("so **{}×** (goal 3×)", lambda: goal("a_at_least_3x_b_at_c16"), ".2f"),
    ("the pod answers {} rps\nagainst", lambda: serving("project-w1", 100, 16, "rps"), ",.0f"),
    ("against {} for MLServer's best", lambda: serving("mlserver-inproc-batching", 100, 16, "rps"), ",.0f"),
    ("the pod now answers {} requests at c=16", lambda: serving("project-w1", 1, 16, "rps_per_core"), ",.0f"),
    ("against {} for (b) (**", lambda: serving("models-serve-w1", 1, 16, "rps_per_core"), ",.0f"),
    ("for (b) (**{}×**, goal 2×)", lambda: goal("a_per_cpu_second_at_least_2x_b_at_c16"), ".2f"),
    ("above: {}\nrequests per predict at c=4", lambda: serving("project-w1", 1, 4, "requests_per_predict"), ".1f"),
    ("at c=4, {} at c=16", lambda: serving("project-w1", 1, 16, "requests_per_predict"), ".1f"),
    ("at c=16, {} at c=64", lambda: serving("project-w1", 1, 64, "requests_per_predict"), ".1f"),
    ("p99 at c=4, 1-row: **{} ms**", lambda: serving("project-w1", 1, 4, "p99_ms"), ".1f"),
    ("p99 at c=16, 1-row: **{} ms**", lambda: serving("project-w1", 1, 16, "p99_ms"), ".1f"),
    ("p50 at c=1: **{} ms**", lambda: serving("project-w1", 1, 1, "p50_ms"), ".2f"),
    ("had {} ms. The floor", lambda: serving("project-unbatched", 1, 1, "p50_ms"), ".1f"),
    ("ceiling table: {} parse+predict+serialize", lambda: SERVING["ceiling"]["1"]["invocations"]["rps"], ",.0f"),
    ("in-process, {} ms each)", lambda: SERVING["ceiling"]["1"]["invocations"]["p50_ms"], ".1f"),
    ("(it got {} of it)", lambda: serving("project-w1", 1, 1, "server_cpu_per_s"), ".2f"),
    ("to one: {}× at c=1", lambda: two_cores(1, "a2_over_a_rps"), ".2f"),
    ("and {}× at c=4", lambda: two_cores(4, "a2_over_a_rps"), ".2f"),
    ("but {}× at c=16", lambda: two_cores(16, "a2_over_a_rps"), ".2f"),
    ("and {}× at c=64", lambda: two_cores(64, "a2_over_a_rps"), ".2f"),
    ("two workers got {} cores at c=16", lambda: two_cores(16, "a2_server_cores"), ".2f"),
    ("the load generator {}–", lambda: min(two_cores(c, "loadgen_cores") for c in (1, 4, 16, 64)), ".1f"),
    ("–{} cores across the loads", lambda: max(two_cores(c, "loadgen_cores") for c in (1, 4, 16, 64)), ".1f"),
    ("batches ({} requests per predict at c=16 against", lambda: serving("project-w2", 1, 16, "requests_per_predict", 2), ".1f"),
    ("at c=16 against {}), which", lambda: serving("project-w1", 1, 16, "requests_per_predict"), ".1f"),
    ("leads at every load: {}–", lambda: min(two_cores(c, "a2_over_best_mlserver_rps") for c in (1, 4, 16, 64)), ".2f"),
    ("–{}× MLServer's best there", lambda: max(two_cores(c, "a2_over_best_mlserver_rps") for c in (1, 4, 16, 64)), ".2f"),
    ("batching beat its pool of two workers at every load) and {}–",
     lambda: min(two_cores(c, "a2_over_b2_rps") for c in (1, 4, 16, 64)), ".2f"),
    ("–{}× `mlflow models serve --workers 2`", lambda: max(two_cores(c, "a2_over_b2_rps") for c in (1, 4, 16, 64)), ".2f"),
    ("{} MiB RSS for the pod with batching",
     lambda: SERVING["configs"]["project-w1"]["memory_after"]["rss_mib"], ",.0f"),
    ("against {} MiB with batching off",
     lambda: SERVING["configs"]["project-unbatched"]["memory_after"]["rss_mib"], ",.0f"),
    ("with batching off ({}×)", lambda: goal("a_memory_at_most_110pct_of_unbatched"), ".2f"),
    ("workers: {} MiB RSS (", lambda: SERVING["configs"]["project-w2"]["memory_after"]["rss_mib"], ",.0f"),
    ("MiB RSS ({} PSS), each", lambda: SERVING["configs"]["project-w2"]["memory_after"]["pss_mib"], ",.0f"),
    ("MLServer in-process needs {} MiB", lambda: SERVING["configs"]["mlserver-inproc-batching"]["memory_after"]["rss_mib"], ",.0f"),
    ("with its\npool {} MiB", lambda: SERVING["configs"]["mlserver-pool-batching"]["memory_after"]["rss_mib"], ",.0f"),
    ("`mlflow models serve` {} MiB (2 processes)", lambda: SERVING["configs"]["models-serve-w1"]["memory_after"]["rss_mib"], ",.0f"),
    ("one core ({} rps), was not measured", lambda: serving("mlserver-inproc", 1, 1, "rps"), ",.0f"),
    ("(the pod's {} rps there", lambda: serving("project-w2", 1, 1, "rps", 2), ",.0f"),
    ("there would be {}× it)", lambda: serving("project-w2", 1, 1, "rps", 2) / serving("mlserver-inproc", 1, 1, "rps"), ".2f"),
    # Tracking, what the numbers say
    ("costs p50 {} ms with the credential cache", lambda: auth("tracking"), ".1f"),
    ("(TTL {} s)", lambda: TRACKING["configs"]["tracking"]["settings"]["auth_cache_ttl_seconds"], "d"),
    ("and {} ms without it", lambda: auth("tracking-ttl0"), ",.0f"),
    ("no database: {} ms)", lambda: next(r["p50_ms"] for r in TRACKING["auth"] if not r["auth"]), ".1f"),
    ("tops out at {} runs/s with 4 client threads", lambda: ingest("tracking", 4), ".1f"),
    ("({} with one)", lambda: ingest("tracking", 1), ".1f"),
    ("~{} ms of CPU on a", lambda: 1000 / ingest("tracking", 4, "runs_per_core"), ".0f"),
    ("log_batch: {} runs per CPU-second", lambda: ingest("tracking", 4, "runs_per_core"), ",.0f"),
    ("kept only {} cores", lambda: ingest("tracking", 4) / ingest("tracking", 4, "runs_per_core"), ".2f"),
    ("is worse ({} /", lambda: ingest("tracking-w2", 1), ".1f"),
    ("/ {} runs/s): the same", lambda: ingest("tracking-w2", 4), ".1f"),
    ("2 workers reach {} runs/s", lambda: ingest("tracking-w2-std", 4), ".1f"),
    ("({} per CPU-second), on", lambda: ingest("tracking-w2-std", 4, "runs_per_core"), ",.0f"),
    ("and ~{} cores between them", lambda: 50 / ingest("tracking", 4, "runs_per_core"), ".1f"),
    ("CPU-limited to about {} runs/s", lambda: ingest("tracking", 4, "runs_per_core") / 2, ",.0f"),
    ("At {} runs a filtered", lambda: search(FULL, "runs_in_experiment"), ",d"),
    ("returning {} runs takes", lambda: search(FULL, "returned"), "d"),
    ("takes p50 {} ms with the MLflow client", lambda: search(FULL), ",.0f"),
    ("the run objects) is {} ms", lambda: search("the same, store to Postgres in-process (no HTTP)"), ",.0f"),
    ("read raw over HTTP, {} ms", lambda: search(RAW), ",.0f"),
    ("ms for {} KiB of JSON", lambda: search(RAW, "response_bytes") / 1024, ",.0f"),
    ("10 results take {} ms", lambda: search("the same, 10 results"), ",.0f"),
    ("at a tenth of the runs {} ms", lambda: search("10 results, at a tenth of the runs"), ",.0f"),
    ("**Artifacts.** {} MB through the proxy", lambda: TRACKING["artifacts"]["size_mb"], ".1f"),
    ("upload {} MB/s", lambda: TRACKING["artifacts"]["upload_mb_s"], ".1f"),
    ("download {} MB/s", lambda: TRACKING["artifacts"]["download_mb_s"], ".1f"),
    ("{} MiB RSS idle", lambda: memory("tracking (jobs off), idle"), ",.0f"),
    ("{} MiB after the whole workload;", lambda: memory("tracking (jobs off), after"), ",.0f"),
    ("2 workers: {} MiB; with", lambda: memory("tracking-w2,"), ",.0f"),
    ("with the job runner: {} MiB in", lambda: memory("tracking-jobs"), ",.0f"),
    ("MiB in {} processes", lambda: memory("tracking-jobs", "processes"), "d"),
    # Cold start, conclusions
    ("ready in {} s cold", lambda: cold(SKLEARN, "project cold"), ".1f"),
    ("and {} s warm", lambda: cold(SKLEARN, "project warm"), ".2f"),
    ("against {} s for `mlflow models serve --env-manager local`", lambda: cold(SKLEARN, "models-serve-local cold"), ".2f"),
    ("cold:* {} s,", lambda: cold(LIGHTGBM, "project cold"), ".2f"),
    ("{}× `mlflow models serve --env-manager uv`",
     lambda: ratio(cold(LIGHTGBM, "project cold"), cold(LIGHTGBM, "models-serve-uv cold")), ".2f"),
    ("--env-manager uv` ({} s)", lambda: cold(LIGHTGBM, "models-serve-uv cold"), ".2f"),
    ("{}× `--env-manager virtualenv`",
     lambda: ratio(cold(LIGHTGBM, "project cold"), cold(LIGHTGBM, "models-serve-virtualenv cold")), ".2f"),
    ("`--env-manager virtualenv` ({} s)", lambda: cold(LIGHTGBM, "models-serve-virtualenv cold"), ".2f"),
    ("The {} s between this", lambda: cold(LIGHTGBM, "project cold") - cold(SKLEARN, "project cold"), ".2f"),
    ("warm cache:* {} s, against", lambda: cold(LIGHTGBM, "project warm"), ".1f"),
    ("against {} s (uv)", lambda: cold(LIGHTGBM, "models-serve-uv warm"), ".1f"),
    ("and {} s (virtualenv)", lambda: cold(LIGHTGBM, "models-serve-virtualenv warm"), ".2f"),
    ("missed by {} s**", lambda: cold(LIGHTGBM, "project warm") - 5, ".1f"),
]


def prose(document: str) -> str:
    """The hand-written part: everything outside the generated blocks."""
    return BLOCK.sub("", document)


def stale_claims(document: str) -> list[str]:
    text = prose(document)
    return [f"{template.format(format(value(), spec))!r} not in the prose"
            for template, value, spec in CLAIMS if template.format(format(value(), spec)) not in text]


def test_every_number_the_prose_quotes_is_the_results():
    assert stale_claims(DOCS.read_text()) == [], "docs/benchmarks.md quotes numbers the results no longer hold"


@pytest.mark.parametrize("written, edited", [
    ("p50 6.4 ms with the cache", "p50 6.5 ms with the cache"),
    ("At c=16: 2,745 against", "At c=16: 2,754 against"),
    ("missed by 2.2 s**", "missed by 1.2 s**"),
])
def test_an_edited_number_is_caught(written, edited):
    document = DOCS.read_text()
    assert written in prose(document)
    assert stale_claims(document.replace(written, edited)) != []


def test_a_number_inside_a_generated_block_is_not_taken_for_prose():
    assert "| 2.95× (`mlserver-pool-batching`) | yes |" in DOCS.read_text()
    assert "2.95×" not in prose(DOCS.read_text()).replace("**2.95×**", "")
