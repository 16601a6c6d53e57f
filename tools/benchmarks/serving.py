"""Serving benchmark: the project's serving pod (batching as rendered, and off) against
`mlflow models serve`, MLServer with its MLflow runtime in each of its configurations and the
in-process ceiling, side by side on one LocalPlatform, on one core and on two.

Every configuration is started once and stays up. One core: every server's process tree is pinned
to the machine's last core and the load generator to the others, so a server never competes with
its own load. Two cores: the multi-process configurations (the pod with two workers, as prod
renders it; MLServer's pool of two; `mlflow models serve --workers 2`) on the last two cores; on a
2-core machine the load generator shares them, and its share is measured. For each (payload,
concurrency) point the configurations are loaded one after another in an order that rotates
between points and rounds, so machine noise (other engineers' tests) lands on all of them alike.
Rounds are pooled: rps = answers / seconds, percentiles over all latencies, rps_per_core = answers /
server CPU seconds (the server's whole process tree, read with psutil over the same window).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from tools.benchmarks import mlserver
from tools.benchmarks.common import percentile, pin, tree_memory
from tools.benchmarks.variants import Server, models_serve, platform_serving, serving_variant
from tools.local.localplatform import LocalPlatform
from tools.local.manifests import ROOT
from tools.local.processes import http

# httptools + uvloop (what `uvicorn[standard]` adds), installed beside, never into, the runtime
# virtualenv by `make bench`; the tracking variants that need them are skipped when absent.
EXTRAS_DIR = ROOT / ".venv-bench" / "site"

A, B = "project-w1", "models-serve-w1"
A2 = "project-w2"
UNBATCHED = "project-unbatched"
B2 = "models-serve-w2"
MLSERVER_1 = tuple(mlserver.ONE_CORE)
# On two cores MLServer's fastest may still be in-process: that server is measured again, on both cores.
MLSERVER_2 = (*mlserver.TWO_CORES, "mlserver-inproc-batching")
ROLES = {A: "a", B: "b", UNBATCHED: "variant", A2: "a on 2 cores", B2: "peer on 2 cores",
         **{name: "peer" for name in MLSERVER_1}, **{name: "peer on 2 cores" for name in mlserver.TWO_CORES}}
# (c, least ratio to the fastest MLServer configuration at that concurrency), 1-row, one core
MLSERVER_GOALS = ((1, 1.0), (4, 1.0), (16, 1.3), (64, 1.3))


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
    two_core_rows: tuple[int, ...] = (1,)
    """Payloads of the two-core phase."""

    @classmethod
    def quick(cls) -> "ServingOptions":
        return cls(concurrency=(1, 4), rounds=1, duration=0.5, warmup=0.2, max_requests=2000,
                   ceiling_rounds=1, ceiling_seconds=0.3, all_variants=False)


@dataclass(frozen=True)
class Phase:
    cores: int
    servers: tuple[str, ...]
    payload_rows: tuple[int, ...]

    def server_cores(self) -> set[int]:
        """The machine's last `cores` cores."""
        total = os.cpu_count() or 1
        return set(range(max(0, total - self.cores), total))

    def loadgen_cores(self) -> set[int]:
        """The other cores; all of them when the servers take every core."""
        return (set(range(os.cpu_count() or 1)) - self.server_cores()) or set(range(os.cpu_count() or 1))


def extras_available() -> bool:
    return (EXTRAS_DIR / "httptools").is_dir() and (EXTRAS_DIR / "uvloop").is_dir()


def start_servers(platform: LocalPlatform, options: ServingOptions) -> tuple[dict[str, Server], list[Phase], list[str]]:
    """Every configuration, started (not yet ready), and the phases that measure them."""
    servers = {A: platform_serving(platform)}
    servers[A].notes = "(a) " + servers[A].notes
    servers[A].name = A
    skipped = []
    try:
        servers[B] = models_serve(platform, B, 1, "(b) what a user runs: MLflow's scoring app, one worker")
        servers[UNBATCHED] = serving_variant(
            platform, UNBATCHED, max_batch_size=1, settings={**servers[A].settings, "max_batch_size": 1},
            notes="the project's command with batching off (--max-batch-size 1): MLflow's scoring app behind the "
                  "metrics middleware, as before batching")
        servers[A2] = serving_variant(platform, A2, workers=2, settings={**servers[A].settings, "workers": 2},
                                      notes="the project's command with two workers, as prod renders it (2-core limit)")
        one, two = [A, B, UNBATCHED], [A2]
        if options.all_variants:
            servers[B2] = models_serve(platform, B2, 2, "`mlflow models serve` with two workers")
            two.append(B2)
            if mlserver.available():
                model_dir = mlserver.download_model(platform, platform.workdir / "mlserver-model")
                for server in mlserver.peers(platform, model_dir, {**mlserver.ONE_CORE, **mlserver.TWO_CORES}):
                    servers[server.name] = server
                one += MLSERVER_1
                two += MLSERVER_2
            else:
                skipped.append(f"MLServer: {mlserver.MLSERVER.path} missing (make {mlserver.MLSERVER.make_target})")
    except BaseException:  # the caller never sees these servers: stop them here
        for server in servers.values():
            server.stop()
        raise
    phases = [Phase(1, tuple(one), options.payload_rows)]
    if (os.cpu_count() or 1) >= 2:
        phases.append(Phase(2, tuple(two), options.two_core_rows))
    else:
        skipped.append("the two-core phase: this machine has one core")
    return servers, phases, skipped


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
    loadgen_cpu = sum(sample["loadgen_cpu_s"] for sample in samples)
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
            "loadgen_cpu_per_s": round(loadgen_cpu / seconds, 2) if seconds else None,
            "requests": ok, "errors": sum(count for status, count in statuses.items() if status != "200"),
            "seconds": round(seconds, 2), "rounds_rps": [sample["rps"] for sample in samples],
            # warm-up included: what the batcher formed over the whole point
            "requests_per_predict": round(sum(b[0] for b in batches) / predicts, 2) if predicts else None,
            "rows_per_predict": round(sum(b[1] for b in batches) / predicts, 1) if predicts else None}


def _ratio(x: Optional[float], y: Optional[float]) -> Optional[float]:
    return round(x / y, 2) if x and y else None


def best_of(results: list[dict], names: tuple[str, ...], rows: int, concurrency: int, cores: int) -> dict:
    """The point of the fastest of `names` (most answers per second); {} when none was measured."""
    points = [r for r in results if r["config"] in names and r["payload_rows"] == rows
              and r["concurrency"] == concurrency and r["cores"] == cores and r.get("rps")]
    return max(points, key=lambda r: r["rps"], default={})


def summarize(results: list[dict], ceiling: dict, middleware: dict, options: ServingOptions,
              memory: dict) -> dict:
    def pick(config: str, rows: int, concurrency: int, cores: int = 1) -> dict:
        return next((r for r in results if r["config"] == config and r["payload_rows"] == rows
                     and r["concurrency"] == concurrency and r["cores"] == cores), {})

    summary: dict = {}
    for rows in options.payload_rows:
        per_rows: dict = {}
        predict_per_core = ceiling[str(rows)]["predict"]["rps_per_core"]
        invocations_per_core = ceiling[str(rows)]["invocations"]["rps_per_core"]
        for c in options.concurrency:
            a, b, off = pick(A, rows, c), pick(B, rows, c), pick(UNBATCHED, rows, c)
            peer = best_of(results, MLSERVER_1, rows, c, 1)
            per_rows[str(c)] = {
                "a_over_b_rps": _ratio(a.get("rps"), b.get("rps")),
                "a_over_b_rps_per_core": _ratio(a.get("rps_per_core"), b.get("rps_per_core")),
                "best_mlserver": peer.get("config"),
                "a_over_best_mlserver_rps": _ratio(a.get("rps"), peer.get("rps")),
                "a_over_best_mlserver_rps_per_core": _ratio(a.get("rps_per_core"), peer.get("rps_per_core")),
                "a_over_unbatched_rps": _ratio(a.get("rps"), off.get("rps")),
                "a_over_ceiling_per_core": _ratio(a.get("rps_per_core"), predict_per_core),
                "a_over_invocations_ceiling_per_core": _ratio(a.get("rps_per_core"), invocations_per_core),
            }
        summary[str(rows)] = per_rows

    two_cores: dict = {}
    for rows in options.two_core_rows:
        for c in options.concurrency:
            a2, a = pick(A2, rows, c, 2), pick(A, rows, c)
            peer = best_of(results, MLSERVER_2, rows, c, 2)
            two_cores.setdefault(str(rows), {})[str(c)] = {
                "a2_over_a_rps": _ratio(a2.get("rps"), a.get("rps")),
                "a2_over_a_rps_per_core": _ratio(a2.get("rps_per_core"), a.get("rps_per_core")),
                "best_mlserver": peer.get("config"),
                "a2_over_best_mlserver_rps": _ratio(a2.get("rps"), peer.get("rps")),
                "a2_over_b2_rps": _ratio(a2.get("rps"), pick(B2, rows, c, 2).get("rps")),
                "a2_server_cores": a2.get("server_cpu_per_s"), "loadgen_cores": a2.get("loadgen_cpu_per_s")}

    def at(rows: int, c: int, key: str):
        return summary.get(str(rows), {}).get(str(c), {}).get(key)

    def goal(value, met) -> dict:
        return {"value": value, "met": value is not None and met(value)}

    goals = {}
    for c, need in MLSERVER_GOALS:
        if c in options.concurrency and at(1, c, "best_mlserver"):
            goals[f"a_over_best_mlserver_at_c{c}"] = {
                **goal(at(1, c, "a_over_best_mlserver_rps"), lambda v, need=need: v >= need),
                "need": need, "peer": at(1, c, "best_mlserver")}
    if 16 in options.concurrency:
        goals["a_at_least_3x_b_at_c16"] = goal(at(1, 16, "a_over_b_rps"), lambda v: v >= 3.0)
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
    # whole request's CPU as served by (a) at the highest concurrency.
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
    return {"by_payload_and_concurrency": summary, "two_cores": two_cores, "goals": goals}


def _measure(worker, phase: Phase, servers: dict[str, Server], options: ServingOptions,
             progress: Callable[[str], None], samples: dict) -> None:
    """One phase's rounds: its servers pinned to its cores, the load generator to the others."""
    members = [servers[name] for name in phase.servers]
    pin([server.pid for server in members], phase.server_cores())
    pin([worker.proc.pid], phase.loadgen_cores())
    point_timeout = options.warmup + options.duration + 90
    try:
        for round_index in range(options.rounds):
            point_index = 0
            for rows in phase.payload_rows:
                for concurrency in options.concurrency:
                    shift = (round_index + point_index) % len(members)
                    for server in members[shift:] + members[:shift]:
                        before = batch_counts(server)
                        sample = worker.call("point", point_timeout, url=server.url + server.score_path,
                                             rows=rows, concurrency=concurrency, duration=options.duration,
                                             warmup=options.warmup, max_requests=options.max_requests,
                                             pids=[server.pid], raw=True, body_format=server.body_format)
                        if before is not None:
                            sample["batches"] = [x - y for x, y in zip(batch_counts(server), before)]
                        samples.setdefault((phase.cores, server.name, rows, concurrency), []).append(sample)
                    point_index += 1
            progress(f"serving, {phase.cores} core(s): round {round_index + 1}/{options.rounds} done")
    finally:  # the platform's own pod goes on serving the tracking benchmark
        pin([server.pid for server in members] + [worker.proc.pid], None)


def run(platform: LocalPlatform, options: ServingOptions, progress: Callable[[str], None]) -> dict:
    started = time.monotonic()
    servers, phases, skipped = start_servers(platform, options)
    worker = ceiling_worker = None
    try:
        for server in servers.values():
            server.wait_ready()
        progress(f"serving: {len(servers)} configurations up ({time.monotonic() - started:.0f}s)")
        env = {"MLFLOW_TRACKING_URI": platform.tracking_url,
               "MLFLOW_TRACKING_USERNAME": platform.serving_username,
               "MLFLOW_TRACKING_PASSWORD": platform.serving_password}
        worker = platform.runtime.worker("tools.benchmarks.loadgen", home=platform.clients_home, env=env,
                                         log_path=platform.logs_dir / "bench-loadgen.log")
        for server in servers.values():  # every server answers before anything is timed
            worker.call("point", 60, url=server.url + server.score_path, rows=1, concurrency=1, duration=0.2,
                        warmup=0.1, pids=[server.pid], body_format=server.body_format)
        load_before = os.getloadavg()
        samples: dict[tuple[int, str, int, int], list[dict]] = {}
        for phase in phases:
            _measure(worker, phase, servers, options, progress, samples)
        load_after = os.getloadavg()
        memory = {name: tree_memory(server.pid) for name, server in servers.items()}
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
        for server in servers.values():
            server.stop()

    results = [{"config": name, "cores": cores, "payload_rows": rows, "concurrency": concurrency, **_pool(points)}
               for (cores, name, rows, concurrency), points in samples.items()]
    return {
        "configs": {name: {"role": ROLES.get(name), "command": server.command, "notes": server.notes,
                           "settings": server.settings, "memory_after": memory[name],
                           "cores": sorted(phase.cores for phase in phases if name in phase.servers)}
                    for name, server in servers.items()},
        "skipped": skipped,
        "method": {"client": "aiohttp, closed loop, one keep-alive HTTP/1.1 connection per concurrent user, "
                             "runtime virtualenv, same machine",
                   "payload": "POST /invocations, application/json dataframe_split of iris feature rows (MLServer's "
                              "V2 endpoint: the same rows as one FP64 input per column, pandas content type)",
                   "cores": "1 core: every server's process tree pinned to the last core, the load generator to the "
                            "others; 2 cores: the servers on the last two cores, the load generator on the others or, "
                            "on a 2-core machine, sharing them (its measured share is in the table)",
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
