"""Serving benchmark: the project's serving pod (batching as rendered, and off) against
`mlflow models serve`, MLServer with its MLflow runtime and the in-process ceiling, side by side on
one LocalPlatform.

Every configuration is started once and stays up; then, for each (payload, concurrency) point,
the configurations are loaded one after another in an order that rotates between points and
rounds, so machine noise (other engineers' tests) lands on all of them alike. Rounds are pooled:
rps = answers / seconds, percentiles over all latencies, rps_per_core = answers / server CPU
seconds (the server's whole process tree, read with psutil over the same window).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from tools.benchmarks import mlserver
from tools.benchmarks.common import percentile, tree_memory
from tools.benchmarks.variants import Server, models_serve, platform_serving, serving_variant
from tools.local.localplatform import LocalPlatform
from tools.local.manifests import ROOT
from tools.local.processes import http

# httptools + uvloop (what `uvicorn[standard]` adds), installed beside, never into, the runtime
# virtualenv by `make bench`; the tracking variants that need them are skipped when absent.
EXTRAS_DIR = ROOT / ".venv-bench" / "site"

A, B = "project-w1", "models-serve-w1"
ROLES = {A: "a", B: "b", "project-unbatched": "variant", "models-serve-w2": "peer-models-serve-w2",
         "mlserver-batching": "peer-mlserver-batching", "mlserver": "peer-mlserver",
         "mlserver-invocations": "peer-mlserver-invocations"}
PEER_BATCHING = "mlserver-batching"
UNBATCHED = "project-unbatched"


@dataclass(frozen=True)
class ServingOptions:
    payload_rows: tuple[int, ...] = (1, 100)
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    rounds: int = 3
    duration: float = 1.0
    warmup: float = 0.3
    max_requests: int = 20_000
    ceiling_rounds: int = 5
    ceiling_seconds: float = 0.4
    all_variants: bool = True
    """Peers beyond (b): `mlflow models serve --workers 2` and MLServer (its own virtualenv)."""

    @classmethod
    def quick(cls) -> "ServingOptions":
        return cls(concurrency=(1, 4), rounds=1, duration=0.5, warmup=0.2, max_requests=2000,
                   ceiling_rounds=1, ceiling_seconds=0.3, all_variants=False)


def extras_available() -> bool:
    return (EXTRAS_DIR / "httptools").is_dir() and (EXTRAS_DIR / "uvloop").is_dir()


def start_servers(platform: LocalPlatform, options: ServingOptions) -> tuple[list[Server], list[str]]:
    servers = [platform_serving(platform)]
    servers[0].notes = "(a) " + servers[0].notes
    servers[0].name = A
    servers.append(models_serve(platform, B, 1, "(b) what a user runs: MLflow's scoring app, one worker"))
    servers.append(serving_variant(platform, UNBATCHED, max_batch_size=1,
                                   notes="the project's command with batching off (--max-batch-size 1): "
                                         "MLflow's scoring app behind the metrics middleware, as before batching",
                                   settings={**servers[0].settings, "max_batch_size": 1}))
    skipped = []
    if options.all_variants:
        servers.append(models_serve(platform, "models-serve-w2", 2, "`mlflow models serve` with two workers"))
        try:
            peers, reason = mlserver.peers(platform)
        except BaseException:  # the caller never sees these servers: stop them here
            for server in servers:
                server.stop()
            raise
        servers += peers
        if reason:
            skipped.append(reason)
    return servers, skipped


def _role(server: Server) -> Optional[str]:
    return ROLES.get(server.name)


def batch_counts(server: Server) -> Optional[tuple[float, float, float]]:
    """(requests, rows, predicts) batched so far, from the server's /metrics; None without batching."""
    if not server.settings.get("max_batch_size", 1) > 1:
        return None
    body = http("GET", server.url + "/metrics").body.decode()
    values = {line.split()[0]: float(line.split()[1]) for line in body.splitlines()
              if line.startswith("mlflow_serving_batch_")}
    return (values.get("mlflow_serving_batch_requests_sum", 0.0), values.get("mlflow_serving_batch_rows_sum", 0.0),
            values.get("mlflow_serving_batch_requests_count", 0.0))


def _pool(samples: list[dict]) -> dict:
    latencies = [value for sample in samples for value in sample["latencies_ms"]]
    ok = sum(sample["ok"] for sample in samples)
    seconds = sum(sample["seconds"] for sample in samples)
    cpu = sum(sample["server_cpu_s"] for sample in samples)
    statuses: dict[str, int] = {}
    for sample in samples:
        for status, count in sample["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count

    def pct(q: float) -> Optional[float]:
        value = percentile(latencies, q)
        return None if value is None else round(value, 2)
    rounds_rps = sorted(sample["rps"] for sample in samples if sample["rps"] is not None)
    # the median round: one round hit by another engineer's test does not move it
    rps = rounds_rps[len(rounds_rps) // 2] if len(rounds_rps) % 2 else (
        round(sum(rounds_rps[len(rounds_rps) // 2 - 1:len(rounds_rps) // 2 + 1]) / 2, 1) if rounds_rps else None)
    batches = [sample["batches"] for sample in samples if sample.get("batches")]
    predicts = sum(b[2] for b in batches)
    return {"rps": rps, "rps_pooled": round(ok / seconds, 1) if seconds else None, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "rps_per_core": round(ok / cpu, 1) if cpu else None,
            "server_cpu_per_s": round(cpu / seconds, 2) if seconds else None,
            "requests": ok, "errors": sum(count for status, count in statuses.items() if status != "200"),
            "seconds": round(seconds, 2), "rounds_rps": [sample["rps"] for sample in samples],
            # warm-up included: what the batcher formed over the whole point
            "requests_per_predict": round(sum(b[0] for b in batches) / predicts, 2) if predicts else None,
            "rows_per_predict": round(sum(b[1] for b in batches) / predicts, 1) if predicts else None}


def _ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return round(x / y, 2) if x and y else None


def summarize(results: list[dict], ceiling: dict, middleware: dict, options: ServingOptions,
              memory: dict) -> dict:
    def pick(config: str, rows: int, concurrency: int) -> dict:
        return next((r for r in results if r["config"] == config and r["payload_rows"] == rows
                     and r["concurrency"] == concurrency), {})

    summary: dict = {}
    for rows in options.payload_rows:
        per_rows: dict = {}
        predict_per_core = ceiling[str(rows)]["predict"]["rps_per_core"]
        invocations_per_core = ceiling[str(rows)]["invocations"]["rps_per_core"]
        for c in options.concurrency:
            a, b, peer = pick(A, rows, c), pick(B, rows, c), pick(PEER_BATCHING, rows, c)
            off = pick(UNBATCHED, rows, c)
            per_rows[str(c)] = {
                "a_over_b_rps": _ratio(a.get("rps"), b.get("rps")),
                "a_over_b_rps_per_core": _ratio(a.get("rps_per_core"), b.get("rps_per_core")),
                "a_over_mlserver_batching_rps": _ratio(a.get("rps"), peer.get("rps")),
                "a_over_mlserver_batching_rps_per_core": _ratio(a.get("rps_per_core"), peer.get("rps_per_core")),
                "a_over_unbatched_rps": _ratio(a.get("rps"), off.get("rps")),
                "a_over_ceiling_per_core": _ratio(a.get("rps_per_core"), predict_per_core),
                "a_over_invocations_ceiling_per_core": _ratio(a.get("rps_per_core"), invocations_per_core),
            }
        summary[str(rows)] = per_rows

    def at(rows: int, c: int, key: str):
        return summary.get(str(rows), {}).get(str(c), {}).get(key)

    def goal(value, met) -> dict:
        return {"value": value, "met": value is not None and met(value)}

    goals = {}
    if 16 in options.concurrency:
        goals["a_at_least_3x_b_at_c16"] = goal(at(1, 16, "a_over_b_rps"), lambda v: v >= 3.0)
        if pick(PEER_BATCHING, 1, 16):
            goals["a_at_least_1_3x_mlserver_batching_at_c16"] = goal(at(1, 16, "a_over_mlserver_batching_rps"),
                                                                     lambda v: v >= 1.3)
        goals["a_p99_at_most_25ms_at_c16"] = goal(pick(A, 1, 16).get("p99_ms"), lambda v: v <= 25.0)
        goals["a_per_cpu_second_at_least_2x_b_at_c16"] = goal(at(1, 16, "a_over_b_rps_per_core"), lambda v: v >= 2.0)
    if 4 in options.concurrency:
        goals["a_p99_at_most_15ms_at_c4"] = goal(pick(A, 1, 4).get("p99_ms"), lambda v: v <= 15.0)
    goals["a_p50_at_most_3ms_at_c1"] = {**goal(pick(A, 1, 1).get("p50_ms"), lambda v: v <= 3.0),
                                        "unbatched_p50_ms": pick(UNBATCHED, 1, 1).get("p50_ms")}
    rss = {name: memory[name]["rss_mib"] for name in (A, UNBATCHED)}
    goals["a_memory_at_most_110pct_of_unbatched"] = {
        **goal(_ratio(rss[A], rss[UNBATCHED]), lambda v: v <= 1.10), "rss_mib": rss}
    # The metrics middleware's CPU per request, in-process (A/B of the same app), against a
    # whole request's CPU as served by (a) at c=16.
    cost = middleware["middleware_cpu_us_per_request"]
    in_process = {}
    for rows in options.payload_rows:
        a = pick(A, rows, max(options.concurrency))
        http_us = 1e6 / a["rps_per_core"] if a.get("rps_per_core") else None
        in_process[str(rows)] = {
            "middleware_cpu_us_per_request": cost, "request_cpu_us": round(http_us, 1) if http_us else None,
            "throughput_loss_pct": round(100 * cost / http_us, 2) if http_us else None}
    worst = max((v["throughput_loss_pct"] for v in in_process.values() if v["throughput_loss_pct"] is not None),
                default=None)
    goals["middleware_loss_at_most_5pct"] = {
        "value": worst, "met": worst is not None and worst <= 5.0, "method": "in-process A/B, worst payload",
        "in_process": in_process}
    return {"by_payload_and_concurrency": summary, "goals": goals}


def run(platform: LocalPlatform, options: ServingOptions, progress: Callable[[str], None]) -> dict:
    started = time.monotonic()
    servers, skipped = start_servers(platform, options)
    worker = ceiling_worker = None
    try:
        for server in servers:
            server.wait_ready()
        progress(f"serving: {len(servers)} configurations up ({time.monotonic() - started:.0f}s)")
        env = {"MLFLOW_TRACKING_URI": platform.tracking_url,
               "MLFLOW_TRACKING_USERNAME": platform.serving_username,
               "MLFLOW_TRACKING_PASSWORD": platform.serving_password}
        worker = platform.runtime.worker("tools.benchmarks.loadgen", home=platform.clients_home, env=env,
                                         log_path=platform.logs_dir / "bench-loadgen.log")
        for server in servers:  # every server answers before anything is timed
            worker.call("point", 60, url=server.url + server.score_path, rows=1, concurrency=1, duration=0.2,
                        warmup=0.1, pids=[server.pid], body_format=server.body_format)
        load_before = os.getloadavg()
        samples: dict[tuple[str, int, int], list[dict]] = {}
        point_timeout = options.warmup + options.duration + 90
        for round_index in range(options.rounds):
            point_index = 0
            for rows in options.payload_rows:
                for concurrency in options.concurrency:
                    shift = (round_index + point_index) % len(servers)
                    for server in servers[shift:] + servers[:shift]:
                        before = batch_counts(server)
                        sample = worker.call("point", point_timeout, url=server.url + server.score_path,
                                             rows=rows, concurrency=concurrency, duration=options.duration,
                                             warmup=options.warmup, max_requests=options.max_requests,
                                             pids=[server.pid], raw=True, body_format=server.body_format)
                        if before is not None:
                            sample["batches"] = [x - y for x, y in zip(batch_counts(server), before)]
                        samples.setdefault((server.name, rows, concurrency), []).append(sample)
                    point_index += 1
            progress(f"serving: round {round_index + 1}/{options.rounds} done ({time.monotonic() - started:.0f}s)")
        load_after = os.getloadavg()
        memory = {server.name: tree_memory(server.pid) for server in servers}
        worker.close()
        worker = None

        # mlflow_serving (on every runtime worker's path) for the middleware A/B
        ceiling_env = {**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        ceiling_worker = platform.runtime.worker("tools.benchmarks.loadgen", home=platform.clients_home,
                                                 env=ceiling_env, log_path=platform.logs_dir / "bench-ceiling.log")
        ceiling = ceiling_worker.call("ceiling", 300, model_uri=f"models:/{platform.model_name}@{platform.model_alias}",
                                      rows=list(options.payload_rows), duration=options.ceiling_seconds,
                                      rounds=options.ceiling_rounds, core=(os.cpu_count() or 1) - 1)
        middleware = ceiling_worker.call("middleware", 300, duration=options.ceiling_seconds,
                                         rounds=max(2, options.ceiling_rounds))
        ceiling_worker.close()
        ceiling_worker = None
        progress(f"serving: ceiling measured ({time.monotonic() - started:.0f}s)")
    finally:
        for closable in (worker, ceiling_worker):
            if closable is not None:
                closable.close()
        for server in servers:
            server.stop()

    results = []
    for server in servers:
        for rows in options.payload_rows:
            for concurrency in options.concurrency:
                results.append({"config": server.name, "payload_rows": rows, "concurrency": concurrency,
                                **_pool(samples[(server.name, rows, concurrency)])})
    return {
        "configs": {server.name: {"role": _role(server), "command": server.command, "notes": server.notes,
                                  "settings": server.settings, "memory_after": memory[server.name]}
                    for server in servers},
        "skipped": skipped,
        "method": {"client": "aiohttp, closed loop, one keep-alive HTTP/1.1 connection per concurrent user, "
                             "runtime virtualenv, same machine",
                   "payload": "POST /invocations, application/json dataframe_split of iris feature rows (MLServer's "
                              "V2 endpoint: the same rows as one FP64 input per column, pandas content type)",
                   "rounds": options.rounds, "seconds_per_point_per_round": options.duration,
                   "rps": "median over rounds; percentiles over the latencies of all rounds",
                   "warmup_s": options.warmup, "max_requests": options.max_requests,
                   "order": "configurations interleaved per point, order rotated per point and round",
                   "rps_per_core": "answers per second of the server process tree's CPU time",
                   "ceiling": "mlflow.pyfunc model.predict on a DataFrame (and MLflow's own invocations() "
                              "parse+predict+serialize) in a loop, pinned to one core, 1 BLAS/OpenMP thread; "
                              f"best of {options.ceiling_rounds} alternating rounds of {options.ceiling_seconds} s"},
        "loadavg": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
        "results": results,
        "ceiling_rps": {str(rows): ceiling[str(rows)]["predict"]["rps"] for rows in options.payload_rows},
        "ceiling": ceiling,
        "middleware_in_process": middleware,
        **summarize(results, ceiling, middleware, options, memory),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
