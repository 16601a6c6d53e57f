"""Serving benchmark: the project's serving pod against `mlflow models serve` and the in-process
ceiling, side by side on one LocalPlatform.

Every configuration is started once and stays up; then, for each (payload, concurrency) point,
the configurations are loaded one after another in an order that rotates between points and
rounds, so machine noise (other engineers' tests) lands on all of them alike. Rounds are pooled:
rps = answers / seconds, percentiles over all latencies, rps_per_core = answers / server CPU
seconds (the server's whole process tree, read from /proc over the same window).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from benchmarks.common import RuntimeWorker, percentile, tree_memory
from benchmarks.variants import Server, models_serve, platform_serving, serving_variant
from local.localplatform import LocalPlatform
from local.manifests import ROOT

# httptools + uvloop (what `uvicorn[standard]` adds), installed beside, never into, the runtime
# virtualenv by `make bench`; the variants that need them are skipped when absent.
EXTRAS_DIR = ROOT / ".venv-bench" / "site"
IMAGE_DIR = ROOT / "mlflow_image"

ROLE_A, ROLE_B, ROLE_BARE = "a", "b", "no-middleware"


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

    @classmethod
    def quick(cls) -> "ServingOptions":
        return cls(concurrency=(1, 4), rounds=1, duration=0.5, warmup=0.2, max_requests=2000,
                   ceiling_rounds=1, ceiling_seconds=0.3, all_variants=False)


def extras_available() -> bool:
    return (EXTRAS_DIR / "httptools").is_dir() and (EXTRAS_DIR / "uvloop").is_dir()


def start_servers(platform: LocalPlatform, options: ServingOptions) -> tuple[list[Server], list[str]]:
    servers = [platform_serving(platform)]
    servers[0].notes = "(a) " + servers[0].notes
    servers.append(models_serve(platform, "models-serve-w2", 2,
                                "(b) what a user runs out of the box with two workers"))
    servers.append(models_serve(platform, "models-serve-w1", 1,
                                "the same scoring app and launcher without the metrics middleware"))
    skipped = []
    if options.all_variants:
        servers.append(serving_variant(platform, "project-w2", workers=2,
                                       notes="the project's command with --workers 2",
                                       settings={"workers": 2, "middleware": True, "http": "auto (h11)",
                                                 "loop": "auto (asyncio)"}))
        if extras_available():
            std = {"middleware": True, "http": "auto (httptools)", "loop": "auto (uvloop)"}
            servers.append(serving_variant(platform, "project-w1-std", extra_pythonpath=EXTRAS_DIR,
                                           notes="the project's command with httptools and uvloop importable "
                                                 "(uvicorn[standard]); uvicorn picks both itself",
                                           settings={"workers": 1, **std}))
            servers.append(serving_variant(platform, "project-w2-std", workers=2, extra_pythonpath=EXTRAS_DIR,
                                           notes="--workers 2 with httptools and uvloop importable",
                                           settings={"workers": 2, **std}))
        else:
            skipped.append(f"project-w1-std, project-w2-std: httptools/uvloop not installed in {EXTRAS_DIR} "
                           "(make bench installs them)")
    servers[0].name = "project-w1"
    return servers, skipped


def _role(server: Server) -> Optional[str]:
    return {"project-w1": ROLE_A, "models-serve-w2": ROLE_B, "models-serve-w1": ROLE_BARE}.get(server.name)


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
    return {"rps": rps, "rps_pooled": round(ok / seconds, 1) if seconds else None, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "rps_per_core": round(ok / cpu, 1) if cpu else None,
            "server_cpu_per_s": round(cpu / seconds, 2) if seconds else None,
            "requests": ok, "errors": sum(count for status, count in statuses.items() if status != "200"),
            "seconds": round(seconds, 2), "rounds_rps": [sample["rps"] for sample in samples]}


def _ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return round(x / y, 2) if x and y else None


def summarize(results: list[dict], ceiling: dict, middleware: dict, options: ServingOptions) -> dict:
    def pick(config: str, rows: int, concurrency: int) -> Optional[dict]:
        return next((r for r in results if r["config"] == config and r["payload_rows"] == rows
                     and r["concurrency"] == concurrency), None)

    summary: dict = {}
    for rows in options.payload_rows:
        per_rows: dict = {}
        predict_per_core = ceiling[str(rows)]["predict"]["rps_per_core"]
        invocations_per_core = ceiling[str(rows)]["invocations"]["rps_per_core"]
        for c in options.concurrency:
            a, b, bare = pick("project-w1", rows, c), pick("models-serve-w2", rows, c), pick("models-serve-w1", rows, c)
            per_rows[str(c)] = {
                "a_over_b_rps": _ratio(a["rps"], b["rps"]),
                "a_over_b_rps_per_core": _ratio(a["rps_per_core"], b["rps_per_core"]),
                "a_over_ceiling_per_core": _ratio(a["rps_per_core"], predict_per_core),
                "a_over_invocations_ceiling_per_core": _ratio(a["rps_per_core"], invocations_per_core),
                "middleware_throughput_loss_pct": (round(100 * (1 - a["rps"] / bare["rps"]), 1)
                                                   if a["rps"] and bare["rps"] else None),
                "middleware_cpu_cost_pct": (round(100 * (bare["rps_per_core"] / a["rps_per_core"] - 1), 1)
                                            if a["rps_per_core"] and bare["rps_per_core"] else None),
            }
        summary[str(rows)] = per_rows

    def at(rows: int, c: int, key: str):
        return summary.get(str(rows), {}).get(str(c), {}).get(key)

    goals = {}
    if 16 in options.concurrency:
        goals["a_at_least_2x_b_at_c16"] = {
            str(rows): {"value": at(rows, 16, "a_over_b_rps"), "met": (at(rows, 16, "a_over_b_rps") or 0) >= 2.0}
            for rows in options.payload_rows}
    if 4 in options.concurrency:
        goals["a_p99_at_most_25ms_at_c4"] = {
            str(rows): {"value": pick("project-w1", rows, 4)["p99_ms"],
                        "met": (pick("project-w1", rows, 4)["p99_ms"] or 1e9) <= 25.0}
            for rows in options.payload_rows}
    # The middleware's cost is CPU per request: measured in-process (A/B of the same app) it is
    # precise; end to end (a vs the same app without it) it is within this machine's noise.
    saturated = [c for c in options.concurrency if c >= 4] or list(options.concurrency)
    losses = [at(rows, c, "middleware_throughput_loss_pct") for rows in options.payload_rows for c in saturated]
    losses = [value for value in losses if value is not None]
    mean_loss = round(sum(losses) / len(losses), 1) if losses else None
    in_process = {}
    cost = middleware["middleware_cpu_us_per_request"]
    for rows in options.payload_rows:
        a = pick("project-w1", rows, max(saturated))
        http_us = 1e6 / a["rps_per_core"] if a and a["rps_per_core"] else None
        in_process[str(rows)] = {
            "middleware_cpu_us_per_request": cost, "request_cpu_us": round(http_us, 1) if http_us else None,
            # a CPU-bound server loses throughput in proportion to the CPU added per request
            "throughput_loss_pct": round(100 * cost / http_us, 2) if http_us else None}
    worst = max((v["throughput_loss_pct"] for v in in_process.values() if v["throughput_loss_pct"] is not None),
                default=None)
    goals["middleware_loss_at_most_5pct"] = {
        "value": worst, "met": worst is not None and worst <= 5.0, "method": "in-process A/B, worst payload",
        "in_process": in_process, "end_to_end_mean_loss_pct": mean_loss, "over_concurrency": saturated}
    return {"by_payload_and_concurrency": summary, "goals": goals}


def run(platform: LocalPlatform, options: ServingOptions, progress: Callable[[str], None]) -> dict:
    started = time.monotonic()
    servers, skipped = start_servers(platform, options)
    worker = ceiling_worker = None
    try:
        for server in servers:
            server.wait_ready()
        progress(f"serving: {len(servers)} configurations up ({time.monotonic() - started:.0f}s)")
        env = {**platform.client_env(), "MLFLOW_TRACKING_URI": platform.tracking_url,
               "MLFLOW_TRACKING_USERNAME": platform.serving_username,
               "MLFLOW_TRACKING_PASSWORD": platform.serving_password}
        worker = RuntimeWorker(platform.bin_dir / "python", "benchmarks.loadgen", env=env, cwd=ROOT,
                               log_path=platform.logs_dir / "bench-loadgen.log")
        for server in servers:  # every server answers before anything is timed
            worker.call("point", 60, url=server.url + "/invocations", rows=1, concurrency=1, duration=0.2,
                        warmup=0.1, pids=[server.pid])
        load_before = os.getloadavg()
        samples: dict[tuple[str, int, int], list[dict]] = {}
        point_timeout = options.warmup + options.duration + 90
        for round_index in range(options.rounds):
            point_index = 0
            for rows in options.payload_rows:
                for concurrency in options.concurrency:
                    shift = (round_index + point_index) % len(servers)
                    for server in servers[shift:] + servers[:shift]:
                        sample = worker.call("point", point_timeout, url=server.url + "/invocations", rows=rows,
                                             concurrency=concurrency, duration=options.duration,
                                             warmup=options.warmup, max_requests=options.max_requests,
                                             pids=[server.pid], raw=True)
                        samples.setdefault((server.name, rows, concurrency), []).append(sample)
                    point_index += 1
            progress(f"serving: round {round_index + 1}/{options.rounds} done ({time.monotonic() - started:.0f}s)")
        load_after = os.getloadavg()
        memory = {server.name: tree_memory(server.pid) for server in servers}
        worker.close()
        worker = None

        ceiling_env = {**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "PYTHONPATH": str(IMAGE_DIR)}  # mlflow_serving, for the middleware A/B
        ceiling_worker = RuntimeWorker(platform.bin_dir / "python", "benchmarks.loadgen", env=ceiling_env, cwd=ROOT,
                                       log_path=platform.logs_dir / "bench-ceiling.log")
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
                   "payload": "POST /invocations, application/json dataframe_split of iris feature rows",
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
        **summarize(results, ceiling, middleware, options),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
