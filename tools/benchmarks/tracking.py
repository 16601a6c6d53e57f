"""Tracking benchmark through LocalPlatform, authenticated as a user would be.

Servers: the rendered tracking (as LocalPlatform runs it) and, beside it on the same Postgres and
GCS emulator, variants of the same container: the auth cache TTL set to 0 (a copy of the auth
ini), --workers 2, and the job runner on (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true).
Measured: auth latency, ingest runs/s with 1 and 4 client threads, search_runs at N runs,
artifact throughput through the proxy, and memory of each server's process tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from tools.benchmarks import serving
from tools.benchmarks.common import latency_summary, tree_memory
from tools.benchmarks.variants import Server, platform_tracking, tracking_variant
from infra.database import TRACKING_DATABASE
from tools.local.localplatform import LocalPlatform

AUTH_PATH = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
SEARCH_FILTER = "params.p0 = 'v3' and metrics.m0 > 0.5"


@dataclass(frozen=True)
class TrackingOptions:
    auth_rounds: int = 3
    auth_requests: int = 300
    auth_requests_uncached: int = 21
    auth_seconds: float = 6.0
    ingest_threads: tuple[int, ...] = (1, 4)
    ingest_seconds: float = 5.0
    search_runs: int = 10_000
    search_requests: int = 30
    search_seconds: float = 8.0
    artifact_mb: float = 20.0
    artifact_repeats: int = 3
    all_variants: bool = True

    @classmethod
    def quick(cls) -> "TrackingOptions":
        return cls(auth_rounds=1, auth_requests=30, auth_requests_uncached=3, auth_seconds=2.0, ingest_seconds=1.5,
                   search_runs=1000, search_requests=5, search_seconds=5.0, artifact_mb=2.0, artifact_repeats=1,
                   all_variants=False)


def memory_peak(server: Server, seconds: float = 2.0, every: float = 0.25) -> dict:
    """Largest RSS/PSS sum over a few samples (a job runner's consumers come and go)."""
    best: dict = {}
    deadline = time.monotonic() + seconds
    while True:
        sample = tree_memory(server.pid)
        if not best or sample["rss_mib"] > best["rss_mib"]:
            best = sample
        if time.monotonic() >= deadline:
            return best
        time.sleep(every)


def run(platform: LocalPlatform, options: TrackingOptions, progress: Callable[[str], None]) -> dict:
    started = time.monotonic()
    rendered = platform_tracking(platform)
    variants: list[Server] = []
    worker = None
    memory: dict[str, dict] = {}
    skipped: list[str] = []
    try:
        memory["tracking (jobs off), idle"] = memory_peak(rendered)
        variants.append(tracking_variant(platform, "tracking-ttl0", auth_cache_ttl=0,
                                         notes="auth_cache_ttl_seconds = 0 in a copy of the auth ini"))
        if options.all_variants:
            variants.append(tracking_variant(platform, "tracking-w2", workers=2, notes="--workers 2"))
            if serving.extras_available():
                variants.append(tracking_variant(platform, "tracking-w1-std", extra_pythonpath=serving.EXTRAS_DIR,
                                                 notes="httptools and uvloop importable"))
                variants.append(tracking_variant(platform, "tracking-w2-std", workers=2,
                                                 extra_pythonpath=serving.EXTRAS_DIR,
                                                 notes="--workers 2 with httptools and uvloop importable"))
            else:
                skipped.append(f"tracking-w2-std: httptools/uvloop not installed in {serving.EXTRAS_DIR}")
        for server in variants:
            server.wait_ready()
        servers = {server.name: server for server in [rendered, *variants]}
        progress(f"tracking: {len(servers)} servers up ({time.monotonic() - started:.0f}s)")

        env = {"MLFLOW_TRACKING_URI": platform.tracking_url,
               "MLFLOW_TRACKING_USERNAME": platform.admin_username,
               "MLFLOW_TRACKING_PASSWORD": platform.admin_password,
               "BENCH_DB_URI": platform.database_uri(TRACKING_DATABASE)}
        worker = platform.runtime.worker("tools.benchmarks.tracking_client", home=platform.clients_home, env=env,
                                         log_path=platform.logs_dir / "bench-tracking-client.log")

        # --- auth latency: the same cheap authenticated GET on each server, and /health (no auth),
        # in interleaved rounds; latencies pooled over the rounds
        targets = [("tracking", "GET /health (no auth)", "/health", False)] + [
            (name, "GET experiments/get-by-name (basic auth, admin)", AUTH_PATH, True) for name in servers]
        pooled: dict[tuple, list] = {}
        firsts: dict[tuple, float] = {}
        statuses: dict[tuple, dict] = {}
        for round_index in range(options.auth_rounds):
            for target in targets:
                name, _, path, use_auth = target
                uncached = use_auth and servers[name].settings["auth_cache_ttl_seconds"] == 0
                count = options.auth_requests_uncached if uncached else options.auth_requests
                seconds = options.auth_seconds * (2 if uncached else 1)
                sample = worker.call("latency", 120, url=servers[name].url, path=path,
                                     n=max(1, count // options.auth_rounds), max_seconds=seconds / options.auth_rounds,
                                     auth=use_auth, warmup=2 if round_index == 0 else 0, raw=True)
                pooled.setdefault(target, []).extend(sample["latencies_ms"])
                for status, count_ in sample["statuses"].items():
                    statuses.setdefault(target, {}).setdefault(status, 0)
                    statuses[target][status] += count_
                if round_index == 0:
                    firsts[target] = sample["first_ms"]
        auth = []
        for target in targets:
            name, what, path, use_auth = target
            summary = latency_summary([value / 1000 for value in pooled[target]])
            row = {"server": name, "what": what, "path": path, "auth": use_auth, "first_ms": firsts[target],
                   **summary, "statuses": statuses[target]}
            if use_auth:
                row.update(workers=servers[name].settings["workers"],
                           auth_cache_ttl_seconds=servers[name].settings["auth_cache_ttl_seconds"],
                           http=servers[name].settings["http"], loop=servers[name].settings["loop"])
            auth.append(row)
        progress(f"tracking: auth latency ({time.monotonic() - started:.0f}s)")

        # --- ingest: interleaved over servers, per thread count
        ingest = []
        for threads in options.ingest_threads:
            for name in [n for n in ("tracking", "tracking-w2", "tracking-w1-std", "tracking-w2-std") if n in servers]:
                server = servers[name]
                ingest.append({"server": name, "workers": server.settings["workers"],
                               "http": server.settings["http"], "loop": server.settings["loop"],
                               **worker.call("ingest", options.ingest_seconds + 180, url=server.url,
                                             experiment="bench-ingest", threads=threads, pids=[server.pid],
                                             duration=options.ingest_seconds,
                                             warmup=min(1.0, options.ingest_seconds / 2))})
        progress(f"tracking: ingest ({time.monotonic() - started:.0f}s)")

        # --- search at N runs (and at a tenth of that: does the run count matter?)
        search = []
        sizes = [options.search_runs] + ([options.search_runs // 10] if options.all_variants else [])
        experiments = {}
        for size in sizes:
            experiment_id = worker.call("experiment_id", 60, url=rendered.url, name=f"bench-search-{size}")["experiment_id"]
            loaded = worker.call("bulk_runs", 600, experiment_id=experiment_id, n=size)
            if size == options.search_runs:
                bulk = loaded
            experiments[size] = (experiment_id, worker.call("count_runs", 600, url=rendered.url,
                                                            experiment_id=experiment_id)["runs"])
        queries = [("filtered by a param and a metric", "search", options.search_runs, SEARCH_FILTER, None, 100),
                   ("the same, 10 results", "search", options.search_runs, SEARCH_FILTER, None, 10),
                   ("the same, raw HTTP (response not parsed)", "search_raw", options.search_runs, SEARCH_FILTER,
                    None, 100),
                   ("the same, store to Postgres in-process (no HTTP)", "search_store", options.search_runs,
                    SEARCH_FILTER, None, 100),
                   ("filtered, ordered by the metric", "search", options.search_runs, SEARCH_FILTER,
                    ["metrics.m0 DESC"], 100),
                   ("unfiltered first page", "search", options.search_runs, "", None, 100)]
        if options.all_variants:
            queries.append(("10 results, at a tenth of the runs", "search", options.search_runs // 10,
                            SEARCH_FILTER, None, 10))
        clients = {"search": "MLflow client", "search_raw": "requests", "search_store": "SqlAlchemyStore"}
        for label, op, size, filter_string, order_by, max_results in queries:
            experiment_id, counted = experiments[size]
            extra = {"order_by": order_by} if op == "search" else {}
            search.append({"what": label, "client": clients[op],
                           "runs_in_experiment": counted,
                           **worker.call(op, options.search_seconds + 120, url=rendered.url,
                                         experiment_id=experiment_id, filter_string=filter_string,
                                         n=options.search_requests, max_seconds=options.search_seconds,
                                         max_results=max_results, **extra)})
        experiment_id = experiments[options.search_runs][0]
        progress(f"tracking: search at {experiments[options.search_runs][1]} runs ({time.monotonic() - started:.0f}s)")

        # --- artifacts through the proxy (server -> GCS emulator)
        artifacts = worker.call("artifacts", 600, url=rendered.url, experiment="bench-artifacts",
                                size_mb=options.artifact_mb, repeats=options.artifact_repeats)
        progress(f"tracking: artifacts ({time.monotonic() - started:.0f}s)")

        memory["tracking (jobs off), after the workload"] = memory_peak(rendered)
        for server in variants:
            memory[f"{server.name}, after the workload"] = memory_peak(server)
        for server in variants:
            server.stop()

        # --- the job runner: a fresh server with it on and one as rendered, same warm-up requests
        if options.all_variants:
            for name, job_execution in (("tracking-jobs", True), ("tracking-fresh", None)):
                server = tracking_variant(platform, name, job_execution=job_execution,
                                          notes="MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true" if job_execution
                                          else "as rendered (jobs off), started fresh for the comparison")
                variants.append(server)
                server.wait_ready()
                time.sleep(3.0)  # a job runner's consumers start after the server answers
                worker.call("latency", 60, url=server.url, path=AUTH_PATH, n=20, max_seconds=5, auth=True)
                worker.call("search", 120, url=server.url, experiment_id=experiment_id, filter_string=SEARCH_FILTER,
                            n=5, max_seconds=10, max_results=100)
                label = "jobs on" if job_execution else "jobs off"
                memory[f"{name} ({label}), after warm-up"] = memory_peak(server, seconds=3.0)
                server.stop()
            progress(f"tracking: memory with and without the job runner ({time.monotonic() - started:.0f}s)")
        worker.close()
        worker = None
    finally:
        if worker is not None:
            worker.close()
        for server in variants:
            server.stop()

    configs = {server.name: {"command": server.command, "notes": server.notes, "settings": server.settings}
               for server in [rendered, *variants]}
    return {
        "configs": configs,
        "skipped": skipped,
        "method": {"client": "MLflow Python client / requests in the runtime virtualenv, keep-alive, same machine",
                   "auth_path": AUTH_PATH, "search_filter": SEARCH_FILTER,
                   "bulk_load": "runs inserted through MLflow's own SQLAlchemy table definitions "
                                "(runs, params, metrics, latest_metrics, tags) as log_batch stores them",
                   "memory": "RSS and PSS summed over the server's process tree (largest of samples over 2-3 s)"},
        "auth": auth,
        "ingest": ingest,
        "bulk_load": bulk,
        "search": search,
        "artifacts": artifacts,
        "memory": memory,
        **summarize(auth, ingest, search, memory, options),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def summarize(auth: list[dict], ingest: list[dict], search: list[dict], memory: dict, options: TrackingOptions) -> dict:
    def auth_p50(server: str):
        return next((row["p50_ms"] for row in auth if row["server"] == server and row["auth"]), None)

    def runs_per_s(server: str, threads: int):
        return next((row["runs_per_s"] for row in ingest if row["server"] == server and row["threads"] == threads),
                    None)

    filtered = search[0]
    ten = next((row for row in search if row["max_results"] == 10), {})
    after = memory.get("tracking (jobs off), after the workload", {})
    peak_off = max((value["rss_mib"] for key, value in memory.items() if "jobs off" in key), default=None)
    jobs_on = memory.get("tracking-jobs (jobs on), after warm-up", {})
    max_threads = max(options.ingest_threads)
    best = max((row for row in ingest if row["threads"] == max_threads), key=lambda row: row["runs_per_s"])
    return {"goals": {
        "auth_p50_at_most_15ms": {"value": auth_p50("tracking"), "met": (auth_p50("tracking") or 1e9) <= 15.0,
                                  "ttl0_p50_ms": auth_p50("tracking-ttl0")},
        f"at_least_50_runs_per_s_with_{max_threads}_threads": {
            "value": runs_per_s("tracking", max_threads), "met": (runs_per_s("tracking", max_threads) or 0) >= 50,
            "best_server": best["server"], "best_runs_per_s": best["runs_per_s"],
            "runs_per_core": next((row.get("runs_per_core") for row in ingest
                                   if row["server"] == "tracking" and row["threads"] == max_threads), None)},
        "search_at_most_100ms": {"value": filtered["p50_ms"], "p99_ms": filtered["p99_ms"],
                                 "runs": filtered["runs_in_experiment"], "max_results": filtered["max_results"],
                                 "met": (filtered["p50_ms"] or 1e9) <= 100.0,
                                 "p50_ms_with_10_results": ten.get("p50_ms")},
        "at_most_1GiB_per_pod": {"value_rss_mib": peak_off, "pss_mib": after.get("pss_mib"),
                                 "met": peak_off is not None and peak_off <= 1024,
                                 "with_job_runner_rss_mib": jobs_on.get("rss_mib")},
    }}
