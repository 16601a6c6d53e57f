"""Runtime-virtualenv worker: closed-loop HTTP load on a scoring server, and the in-process ceiling.

Ops (JSON lines, see tools.venvs.serve):
  point    POST iris rows to /invocations from `concurrency` keep-alive HTTP/1.1 connections
           (aiohttp), each sending its next request when the previous answer arrived; counts the
           answers completed inside [warmup, warmup + duration] (at most `max_requests`) and the
           server's process-tree CPU seconds over the same window.
  ceiling  mlflow.pyfunc predict (and MLflow's own parse + predict + serialize, `invocations`)
           in a loop on one pinned core: what a server could reach with zero HTTP cost.
  middleware  a minimal ASGI app with and without mlflow_serving's metrics middleware, called
           in-process, alternating: the middleware's own CPU cost per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from functools import lru_cache

from tools.benchmarks.common import latency_summary, tree_cpu_seconds
from tools.venvs import serve

HEADERS = {"Content-Type": "application/json"}


@lru_cache(maxsize=None)
def iris_frame():
    from sklearn.datasets import load_iris
    return load_iris(as_frame=True).data


def iris_rows(rows: int) -> tuple[list[str], list[list[float]]]:
    frame = iris_frame()
    values = frame.values.tolist()
    return list(frame.columns), [values[i % len(values)] for i in range(rows)]


@lru_cache(maxsize=None)
def payload(rows: int, body_format: str = "mlflow") -> bytes:
    columns, data = iris_rows(rows)
    if body_format == "v2":  # one FP64 input per column, decoded into a DataFrame by MLServer's pandas codec
        return json.dumps({"parameters": {"content_type": "pd"},
                           "inputs": [{"name": column, "shape": [rows, 1], "datatype": "FP64",
                                       "data": [row[i] for row in data]} for i, column in enumerate(columns)]}).encode()
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


async def _point(url: str, body: bytes, concurrency: int, duration: float, warmup: float, max_requests: int,
                 pids: list[int], raw: bool) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    window: dict[str, float] = {}
    done = asyncio.Event()
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def user() -> None:
            while not done.is_set() and time.perf_counter() < stop_at:
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=HEADERS) as response:
                        await response.read()
                        status = str(response.status)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
                    status = type(err).__name__
                answered = time.perf_counter()
                if measure_from <= answered <= stop_at and not done.is_set():
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        latencies.append(answered - sent)
                    if sum(statuses.values()) >= max_requests:
                        window["end"] = answered
                        window["cpu1"] = tree_cpu_seconds(pids)
                        window["own1"] = time.process_time()
                        done.set()

        async def monitor() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            window["cpu0"] = tree_cpu_seconds(pids)
            window["own0"] = time.process_time()
            window["start"] = time.perf_counter()
            try:
                await asyncio.wait_for(done.wait(), timeout=max(0.0, stop_at - time.perf_counter()))
            except asyncio.TimeoutError:
                window["end"] = time.perf_counter()
                window["cpu1"] = tree_cpu_seconds(pids)
                window["own1"] = time.process_time()
                done.set()

        await asyncio.gather(monitor(), *(user() for _ in range(concurrency)))

    elapsed = window["end"] - window["start"]
    answered = sum(statuses.values())
    cpu = window["cpu1"] - window["cpu0"]
    extra = {"latencies_ms": [round(value * 1000, 3) for value in latencies]} if raw else {}
    return {
        "requests": answered, "ok": len(latencies), "statuses": statuses, "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "server_cpu_s": round(cpu, 3),
        # the load generator's own CPU over the window: its share of the cores it shares
        "loadgen_cpu_s": round(window["own1"] - window["own0"], 3),
        # requests answered per second of server CPU: throughput per fully used core
        "rps_per_core": round(len(latencies) / cpu, 1) if cpu > 0 else None,
        **latency_summary(latencies), **extra,
    }


def point(url: str, rows: int, concurrency: int, duration: float, warmup: float = 0.5,
          max_requests: int = 100_000, pids: list[int] | None = None, raw: bool = False,
          body_format: str = "mlflow") -> dict:
    return asyncio.run(_point(url, payload(rows, body_format), concurrency, duration, warmup, max_requests,
                              pids or [], raw))


def ceiling(model_uri: str, rows: list[int], duration: float, rounds: int = 1, core: int | None = None) -> dict:
    """Iterations per second of predict (and of MLflow's invocations path) on one core: the best
    of `rounds` alternating rounds (noise only ever slows a round down)."""
    import pandas as pd
    from mlflow.pyfunc import load_model, scoring_server

    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    model = load_model(model_uri)
    input_schema = model.metadata.get_input_schema()
    result: dict = {"model_uri": model_uri, "core": core, "rounds": rounds, "threads_env": {
        name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}

    def loop(call) -> dict:
        warm_until = time.perf_counter() + min(0.2, duration / 2)
        while time.perf_counter() < warm_until:
            call()
        latencies = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        stop = wall0 + duration
        while True:
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            if t1 >= stop:
                break
        return {"latencies": latencies, "wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}

    calls = {}
    for n in rows:
        columns, data = iris_rows(n)
        frame = pd.DataFrame(data, columns=columns)
        body = payload(n)
        calls[(n, "predict")] = lambda frame=frame: model.predict(frame)
        calls[(n, "invocations")] = lambda body=body: scoring_server.invocations(body, "application/json", model,
                                                                                 input_schema)
    samples: dict = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            samples[key].append(loop(call))
    for (n, mode), runs in samples.items():
        best = max(runs, key=lambda r: len(r["latencies"]) / r["wall"])
        every = [value for r in runs for value in r["latencies"]]
        cpu = sum(r["cpu"] for r in runs)
        result.setdefault(str(n), {})[mode] = {
            "rps": round(len(best["latencies"]) / best["wall"], 1),
            "rounds_rps": [round(len(r["latencies"]) / r["wall"], 1) for r in runs],
            "rps_per_core": round(len(every) / cpu, 1) if cpu > 0 else None,
            **latency_summary(every)}
    return result


def middleware(duration: float, rounds: int = 5) -> dict:
    """The metrics middleware's own CPU cost per request: a minimal ASGI app that answers 200 at
    once, called directly in this process with and without mlflow_serving's PrometheusMiddleware,
    alternating in rounds. The middleware does the same work whatever it wraps (a counter, a
    histogram, a gauge, one wrapped `send`), so the difference is its cost; the inner app is
    tiny so that this difference is not lost in the noise of a 4 ms scoring request."""
    from mlflow_serving.metrics import PrometheusMiddleware

    async def inner(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"[0]\n  "})

    apps = {"bare": inner, "with_middleware": PrometheusMiddleware(inner)}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/invocations", "raw_path": b"/invocations", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080), "headers": []}

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        pass

    async def loop_for(app, seconds: float) -> tuple[int, float]:
        count, cpu0 = 0, time.process_time()
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            for _ in range(200):
                await app(scope, receive, send)
            count += 200
        return count, time.process_time() - cpu0

    async def main() -> dict:
        for app in apps.values():
            await loop_for(app, 0.1)
        per_round = {name: [] for name in apps}
        for index in range(rounds):
            names = list(apps) if index % 2 == 0 else list(reversed(list(apps)))
            for name in names:
                count, cpu = await loop_for(apps[name], duration)
                per_round[name].append(1e6 * cpu / count)
        return per_round

    per_round = asyncio.run(main())
    costs = sorted(w - b for w, b in zip(per_round["with_middleware"], per_round["bare"]))
    return {"rounds": rounds, "seconds_per_round": duration,
            "bare_us_per_call": [round(v, 2) for v in per_round["bare"]],
            "with_middleware_us_per_call": [round(v, 2) for v in per_round["with_middleware"]],
            "middleware_cpu_us_per_request": round(costs[len(costs) // 2], 2)}


if __name__ == "__main__":
    serve({"point": point, "ceiling": ceiling, "middleware": middleware})
