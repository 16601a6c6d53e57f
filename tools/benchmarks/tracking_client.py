"""Runtime-virtualenv worker: the tracking-server measurements, as an MLflow user makes them.

Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; the bulk loader's
database URI from BENCH_DB_URI. Nothing secret is ever returned or printed.

Ops (JSON lines, see tools.venvs.serve):
  latency    sequential GETs on one keep-alive session (with or without basic auth)
  ingest     create_run + log_batch(10 params, 10 metrics) from N threads for a bounded time
  bulk_runs  N finished runs with 10 params and 10 metrics each, inserted through MLflow's own
             table definitions in a few multi-row INSERTs (HTTP ingest would take minutes)
  search     search_runs with a filter, sequentially (search_raw: one HTTP POST, answer not parsed;
             search_store: MLflow's SqlAlchemyStore straight to Postgres)
  artifacts  log_artifact / download_artifacts of one file through the server's artifact proxy
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tools.benchmarks.common import latency_summary, tree_cpu_seconds
from tools.venvs import serve

N_PARAMS = 10
N_METRICS = 10


def _auth():
    return (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])


def latency(url: str, path: str, n: int, max_seconds: float, auth: bool = True, warmup: int = 2,
            raw: bool = False) -> dict:
    import requests

    session = requests.Session()
    kwargs = {"auth": _auth()} if auth else {}
    statuses: dict[str, int] = {}
    first = None
    for index in range(warmup):
        t0 = time.perf_counter()
        status = session.get(url + path, timeout=60, **kwargs).status_code
        if index == 0:
            first = time.perf_counter() - t0  # with a credential cache: the one uncached request
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    latencies = []
    stop = time.perf_counter() + max_seconds
    while len(latencies) < n and time.perf_counter() < stop:
        t0 = time.perf_counter()
        response = session.get(url + path, timeout=60, **kwargs)
        latencies.append(time.perf_counter() - t0)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    session.close()
    return {"path": path, "auth": auth, "statuses": statuses,
            "first_ms": round(first * 1000, 2) if first is not None else None, **latency_summary(latencies),
            **({"latencies_ms": [round(value * 1000, 3) for value in latencies]} if raw else {})}


def _client(url: str):
    from mlflow import MlflowClient
    return MlflowClient(tracking_uri=url)


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def ingest(url: str, experiment: str, threads: int, duration: float, max_runs: int = 100_000,
           warmup: float = 1.0, pids: list[int] | None = None) -> dict:
    from mlflow.entities import Metric, Param

    client = _client(url)
    experiment_id = _experiment_id(client, experiment)
    started = time.perf_counter()
    measure_from, stop_at = started + warmup, started + warmup + duration
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        rng = random.Random()
        while time.perf_counter() < stop_at:
            with lock:
                if len(latencies) >= max_runs:
                    return
            t0 = time.perf_counter()
            try:
                run = client.create_run(experiment_id)
                now = int(time.time() * 1000)
                client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(f"m{i}", rng.random(), now, 0) for i in range(N_METRICS)],
                    params=[Param(f"p{i}", f"v{rng.randrange(10)}") for i in range(N_PARAMS)])
            except Exception as err:  # counted, reported
                with lock:
                    errors.append(f"{type(err).__name__}: {err}"[:200])
                continue
            t1 = time.perf_counter()
            if measure_from <= t1 <= stop_at:
                with lock:
                    latencies.append(t1 - t0)

    cpu: dict[str, float] = {}

    def meter() -> None:  # the server's CPU over the measured window
        time.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu["start"] = tree_cpu_seconds(pids or [])
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu["end"] = tree_cpu_seconds(pids or [])

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    pool.append(threading.Thread(target=meter, daemon=True))
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=warmup + duration + 120)
    window = min(duration, time.perf_counter() - measure_from)
    server_cpu = cpu.get("end", 0.0) - cpu.get("start", 0.0)
    return {"threads": threads, "runs": len(latencies), "seconds": round(window, 2),
            "runs_per_s": round(len(latencies) / window, 1), "server_cpu_s": round(server_cpu, 2),
            "runs_per_core": round(len(latencies) / server_cpu, 1) if server_cpu > 0 else None,
            "errors": len(errors), "first_errors": errors[:3],
            **{f"run_{key}": value for key, value in latency_summary(latencies).items() if key != "n"}}


def bulk_runs(experiment_id: str, n: int, batch: int = 2000, seed: int = 7) -> dict:
    """Finished runs with params p0..p9 = v0..v9 (p0 uniform over 10 values) and metrics
    m0..m9 uniform in [0, 1), as log_batch would store them (metrics + latest_metrics)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    rng = random.Random(seed)
    engine = sa.create_engine(os.environ["BENCH_DB_URI"])
    started = time.perf_counter()
    base_ms = int(time.time() * 1000) - n * 1000
    inserted = 0
    with engine.begin() as connection:
        for offset in range(0, n, batch):
            runs, params, metrics, tags = [], [], [], []
            for i in range(offset, min(n, offset + batch)):
                run_id = uuid.uuid4().hex
                start = base_ms + i * 1000
                runs.append({"run_uuid": run_id, "name": f"bulk-{i}", "source_type": "LOCAL", "source_name": "",
                             "entry_point_name": "", "user_id": "admin", "status": "FINISHED",
                             "start_time": start, "end_time": start + 500, "deleted_time": None,
                             "source_version": "", "lifecycle_stage": "active",
                             "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                             "experiment_id": int(experiment_id)})
                params += [{"key": f"p{k}", "value": f"v{rng.randrange(10)}", "run_uuid": run_id}
                           for k in range(N_PARAMS)]
                metrics += [{"key": f"m{k}", "value": rng.random(), "timestamp": start, "step": 0, "is_nan": False,
                             "run_uuid": run_id} for k in range(N_METRICS)]
                tags += [{"key": "mlflow.runName", "value": f"bulk-{i}", "run_uuid": run_id},
                         {"key": "mlflow.user", "value": "admin", "run_uuid": run_id}]
            connection.execute(sa.insert(SqlRun.__table__), runs)
            connection.execute(sa.insert(SqlParam.__table__), params)
            connection.execute(sa.insert(SqlMetric.__table__), metrics)
            connection.execute(sa.insert(SqlLatestMetric.__table__), metrics)
            connection.execute(sa.insert(SqlTag.__table__), tags)
            inserted += len(runs)
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()
    return {"runs": inserted, "seconds": round(time.perf_counter() - started, 2)}


def search(url: str, experiment_id: str, filter_string: str, n: int, max_seconds: float,
           max_results: int = 100, order_by: list[str] | None = None, warmup: int = 2) -> dict:
    client = _client(url)
    kwargs = dict(experiment_ids=[experiment_id], filter_string=filter_string, max_results=max_results,
                  order_by=order_by)
    for _ in range(warmup):
        returned = len(client.search_runs(**kwargs))
    latencies = []
    stop = time.perf_counter() + max_seconds
    while len(latencies) < n and time.perf_counter() < stop:
        t0 = time.perf_counter()
        returned = len(client.search_runs(**kwargs))
        latencies.append(time.perf_counter() - t0)
    return {"filter": filter_string, "max_results": max_results, "order_by": order_by, "returned": returned,
            **latency_summary(latencies)}


def search_raw(url: str, experiment_id: str, filter_string: str, n: int, max_seconds: float,
               max_results: int = 100, warmup: int = 2) -> dict:
    """The same search as one HTTP POST, the answer read but not parsed: the server's share."""
    import requests

    session = requests.Session()
    body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": max_results}
    endpoint = url + "/api/2.0/mlflow/runs/search"
    for _ in range(warmup):
        session.post(endpoint, json=body, auth=_auth(), timeout=120).raise_for_status()
    latencies, size = [], 0
    stop = time.perf_counter() + max_seconds
    while len(latencies) < n and time.perf_counter() < stop:
        t0 = time.perf_counter()
        response = session.post(endpoint, json=body, auth=_auth(), timeout=120)
        size = len(response.content)
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()
    return {"filter": filter_string, "max_results": max_results, "order_by": None,
            "returned": len(response.json().get("runs", [])), "response_bytes": size, **latency_summary(latencies)}


def search_store(experiment_id: str, filter_string: str, n: int, max_seconds: float, max_results: int = 100,
                 warmup: int = 2, **_ignored) -> dict:
    """The same search through MLflow's SqlAlchemyStore in this process, straight to Postgres:
    the database's and the store's share, without HTTP, auth or JSON."""
    from mlflow.entities import ViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with tempfile.TemporaryDirectory() as scratch:
        store = SqlAlchemyStore(os.environ["BENCH_DB_URI"], scratch)
        for _ in range(warmup):
            returned = len(store.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results))
        latencies = []
        stop = time.perf_counter() + max_seconds
        while len(latencies) < n and time.perf_counter() < stop:
            t0 = time.perf_counter()
            returned = len(store.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results))
            latencies.append(time.perf_counter() - t0)
        store.engine.dispose()
    return {"filter": filter_string, "max_results": max_results, "order_by": None, "returned": returned,
            **latency_summary(latencies)}


def artifacts(url: str, experiment: str, size_mb: float, repeats: int) -> dict:
    client = _client(url)
    run = client.create_run(_experiment_id(client, experiment))
    run_id = run.info.run_id
    size = int(size_mb * 1024 * 1024)
    uploads, downloads = [], []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "blob.bin"
        source.write_bytes(os.urandom(size))
        for attempt in range(repeats):
            t0 = time.perf_counter()
            client.log_artifact(run_id, str(source), artifact_path=f"bench/{attempt}")
            uploads.append(time.perf_counter() - t0)
            target = Path(scratch) / f"download-{attempt}"
            target.mkdir()
            t0 = time.perf_counter()
            local = client.download_artifacts(run_id, f"bench/{attempt}/blob.bin", str(target))
            downloads.append(time.perf_counter() - t0)
            if Path(local).stat().st_size != size:
                raise RuntimeError(f"downloaded {Path(local).stat().st_size} bytes, uploaded {size}")
            Path(local).unlink()
    client.set_terminated(run_id)
    mb = size / 1024 / 1024
    return {"size_mb": round(mb, 1), "repeats": repeats,
            "upload_s": [round(t, 3) for t in uploads], "download_s": [round(t, 3) for t in downloads],
            "upload_mb_s": round(mb / statistics.median(uploads), 1),
            "download_mb_s": round(mb / statistics.median(downloads), 1)}


def count_runs(url: str, experiment_id: str) -> dict:
    """Runs in an experiment (paged search, 1000 a page, at most 50 pages)."""
    client = _client(url)
    total, token = 0, None
    for _ in range(50):
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        total += len(page)
        token = page.token
        if not token:
            break
    return {"runs": total}


if __name__ == "__main__":
    serve({"latency": latency, "ingest": ingest, "bulk_runs": bulk_runs, "search": search,
               "search_raw": search_raw, "search_store": search_store,
               "artifacts": artifacts, "count_runs": count_runs, "experiment_id": lambda url, name: {
                   "experiment_id": _experiment_id(_client(url), name)}})
