"""The prose of docs/benchmarks.md: what each result says and which default it chooses or
confirms. Numbers are read from the results; statements that depend on them are conditional,
so a rerun on another machine does not leave stale claims behind."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

CONCLUSIONS = Path(__file__).resolve().parent / "serving_conclusions.md"


def _ms(per_second) -> Optional[float]:
    return 1000.0 / per_second if per_second else None


def _fmt(value, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


class S:
    """Accessors over serving.json."""

    def __init__(self, data: dict):
        self.d = data
        levels = sorted({r["concurrency"] for r in data["results"]})
        self.hi = 16 if 16 in levels else levels[-1]
        self.mid = 4 if 4 in levels else levels[-1]

    def has(self, config: str) -> bool:
        return config in self.d["configs"]

    def get(self, config: str, rows: int, c: int, key: str):
        for r in self.d["results"]:
            if r["config"] == config and r["payload_rows"] == rows and r["concurrency"] == c:
                return r.get(key)
        return None

    def ratio(self, rows: int, c: int, key: str):
        return self.d["by_payload_and_concurrency"].get(str(rows), {}).get(str(c), {}).get(key)

    def ceiling(self, rows: int, mode: str, key: str = "rps"):
        return self.d["ceiling"][str(rows)][mode][key]

    def median_gain(self, a: str, b: str, key: str = "rps_per_core") -> Optional[float]:
        """Median over every (payload, concurrency) point of a's gain over b, percent."""
        gains = sorted(g for r in self.d["results"] if r["config"] == a
                       for g in [self.gain(a, b, r["payload_rows"], r["concurrency"], key)] if g is not None)
        if not gains:
            return None
        middle = len(gains) // 2
        return gains[middle] if len(gains) % 2 else (gains[middle - 1] + gains[middle]) / 2

    def gain(self, a: str, b: str, rows: int, c: int, key: str = "rps") -> Optional[float]:
        x, y = self.get(a, rows, c, key), self.get(b, rows, c, key)
        return 100.0 * (x / y - 1) if x and y else None


class T:
    """Accessors over tracking.json."""

    def __init__(self, data: dict):
        self.d = data

    def auth(self, server: str, key: str = "p50_ms"):
        return next((row[key] for row in self.d["auth"] if row["server"] == server and row["auth"]), None)

    def health(self, key: str = "p50_ms"):
        return next((row[key] for row in self.d["auth"] if not row["auth"]), None)

    def ingest(self, server: str, threads: int, key: str = "runs_per_s"):
        return next((row[key] for row in self.d["ingest"] if row["server"] == server and row["threads"] == threads),
                    None)

    def search(self, what: str, key: str = "p50_ms"):
        return next((row.get(key) for row in self.d["search"] if row["what"] == what), None)

    def memory(self, prefix: str, key: str = "rss_mib"):
        return next((value[key] for name, value in self.d["memory"].items() if name.startswith(prefix)), None)

    def has(self, server: str) -> bool:
        return server in self.d["configs"]


def defaults_table(s: Optional[S], t: Optional[T]) -> str:
    rows = []
    if s:
        hi, mid = s.hi, s.mid
        w2_floor = s.has("project-w2") and (s.get("project-w2", 1, 1, "p50_ms") or 0) > 30
        std_gain = s.median_gain("project-w1-std", "project-w1") if s.has("project-w1-std") else None
        rows.append([
            "`servingWorkers`", "**1** (confirmed)",
            f"One uvicorn worker per pod: c=1 p50 {_fmt(s.get('project-w1', 1, 1, 'p50_ms'), 1)} ms. "
            + (f"With 2 workers every keep-alive request waits ~{_fmt(s.get('project-w2', 1, 1, 'p50_ms'))} ms "
               f"(c=1: {_fmt(s.get('project-w2', 1, 1, 'rps'))} rps against {_fmt(s.get('project-w1', 1, 1, 'rps'))}). "
               if w2_floor else "")
            + "Scale with replicas (HPA); a pod limited to 500m CPU cannot feed a second worker anyway."])
        settings = s.d["configs"]["project-w1"]["settings"]
        if settings.get("max_batch_size", 1) > 1:
            rows.append([
                "`servingMaxBatchSize` / `servingMaxBatchDelayMs`",
                f"**{settings['max_batch_size']} rows / {settings['max_batch_delay_ms']:g} ms** (new)",
                f"c={hi}, 1-row: {_fmt(s.get('project-w1', 1, hi, 'rps'))} rps with batching, "
                f"{_fmt(s.get('project-unbatched', 1, hi, 'rps'))} without; "
                f"{_fmt(s.get('project-w1', 1, hi, 'requests_per_predict'), 1)} requests per predict. "
                "Why these values: see Serving, What the numbers say."])
        if s.has("project-w1-std"):
            rows.append([
                "serving image: add `httptools`, `uvloop` (what `uvicorn[standard]` adds for HTTP)", "**add** (change)",
                f"uvicorn picks both by itself (`--http auto --loop auto`): {_fmt(std_gain, 0, ' %')} requests per "
                "CPU-second for the same command (median over all points), and uvloop sets TCP_NODELAY on every "
                f"connection, which removes the keep-alive stall with more than one worker "
                f"(`project-w2-std` c=1 p50 {_fmt(s.get('project-w2-std', 1, 1, 'p50_ms'), 1)} ms)."])
        rows.append(["uvicorn `timeout_keep_alive` (mlflow_serving)", "**30 s** (confirmed)",
                     "Longer than a client's idle gap between bursts, so connections are reused; it does not "
                     "change steady-state numbers (every point here keeps its connections busy)."])
    if t:
        w1 = t.ingest("tracking", 4)
        w2std = t.ingest("tracking-w2-std", 4) if t.has("tracking-w2-std") else None
        per_core = t.ingest("tracking", 4, "runs_per_core")
        rows.append([
            "`trackingWorkers`", "**1** (confirmed for dev; 2 for prod once the image has uvloop)",
            f"`--workers 2` without uvloop: auth GET p50 {_fmt(t.auth('tracking-w2'), 1)} ms, 1-thread ingest "
            f"{_fmt(t.ingest('tracking-w2', 1), 1)} runs/s (1 worker: {_fmt(t.auth('tracking'), 1)} ms, "
            f"{_fmt(t.ingest('tracking', 1), 1)} runs/s)."
            + (f" With httptools+uvloop, 2 workers: {_fmt(w2std, 1)} runs/s with 4 threads (1 worker: {_fmt(w1, 1)}, "
               f"{_fmt(per_core, 0)} runs per CPU-second) in {_fmt(t.memory('tracking-w2-std'), 0)} MiB RSS. "
               "A second worker only pays where the pod may use a second core: prod (1 CPU request, 2 limit), "
               "not dev (250m/500m)." if w2std else "")])
        if t.has("tracking-w1-std"):
            rows.append(["tracking image: add `httptools`, `uvloop`", "**add** (change)",
                         f"auth GET p50 {_fmt(t.auth('tracking-w1-std'), 1)} ms vs {_fmt(t.auth('tracking'), 1)} ms "
                         "as rendered, and it makes `--workers 2` usable (above)."])
        rows.append(["`authCacheTtlSeconds`", "**300** (confirmed)",
                     f"p50 {_fmt(t.auth('tracking'), 1)} ms with the cache, {_fmt(t.auth('tracking-ttl0'))} ms "
                     "without (a scrypt check per request). A changed or revoked password keeps working for up to "
                     "this long per worker; 300 s is the trade-off chosen."])
        rows.append(["`trackingJobExecution`", "**false** (confirmed)",
                     f"{_fmt(t.memory('tracking-jobs'), 0)} MiB RSS ({_fmt(t.memory('tracking-jobs', 'pss_mib'), 0)} PSS) "
                     f"with the job runner vs {_fmt(t.memory('tracking-fresh'), 0)} MiB without, same warm-up: "
                     "it does not fit the 1 GiB pod, and nothing here uses MLflow jobs."])
        rows.append(["`trackingMemory` / `servingMemory`", "**1Gi** (confirmed)",
                     f"tracking peaks at {_fmt(t.memory('tracking (jobs off), after'), 0)} MiB RSS after the whole "
                     f"workload (2 workers: {_fmt(t.memory('tracking-w2,'), 0)}); serving "
                     + (f"{_fmt(s.d['configs']['project-w1']['memory_after']['rss_mib'], 0)} MiB." if s else "–.")])
    header = "| setting | value | why |\n|---|---|---|\n"
    return header + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def serving_analysis(s: S) -> str:
    """Written by hand after a run (STYLE: conclusions are not generated around live numbers)."""
    return CONCLUSIONS.read_text().strip() if CONCLUSIONS.exists() else "(no conclusions written for this run)"


def tracking_analysis(t: T) -> str:
    p = []
    p.append(
        f"**Auth.** A cheap authenticated GET costs p50 {_fmt(t.auth('tracking'), 1)} ms with the credential cache "
        f"(TTL {t.d['configs']['tracking']['settings']['auth_cache_ttl_seconds']} s) and "
        f"{_fmt(t.auth('tracking-ttl0'))} ms without it (`/health`, no auth, no database: {_fmt(t.health(), 1)} ms). "
        "Without the cache every request re-derives scrypt, which also makes a single user's script CPU-bound on "
        "the server.")
    cores = t.ingest("tracking", 4, "runs_per_core")
    busy = t.ingest("tracking", 4) / cores if cores and t.ingest("tracking", 4) else None
    line = (f"**Ingest.** One worker tops out at {_fmt(t.ingest('tracking', 4), 1)} runs/s with 4 client threads "
            f"({_fmt(t.ingest('tracking', 1), 1)} with one). The server spends ~{_fmt(_ms(cores), 0)} ms of CPU on a "
            f"run (create_run + log_batch: {_fmt(cores, 0)} runs per CPU-second) but kept only {_fmt(busy, 2)} cores "
            "busy: one uvicorn process runs MLflow's synchronous Flask handlers in a thread pool under one GIL, and "
            "its requests also wait on Postgres. ")
    if t.has("tracking-w2"):
        line += (f"`--workers 2` as uvicorn runs it today is worse ({_fmt(t.ingest('tracking-w2', 1), 1)} / "
                 f"{_fmt(t.ingest('tracking-w2', 4), 1)} runs/s): the same ~40 ms keep-alive stall as serving. ")
    if t.has("tracking-w2-std"):
        line += (f"With httptools+uvloop importable, 2 workers reach {_fmt(t.ingest('tracking-w2-std', 4), 1)} runs/s "
                 f"with 4 threads ({_fmt(t.ingest('tracking-w2-std', 4, 'runs_per_core'), 0)} per CPU-second), on "
                 "this 2-core machine shared with the client, Postgres and other engineers' tests. ")
    if cores:
        line += (f"So ≥ 50 runs/s takes two processes (2 workers with uvloop, or 2 replicas) and ~{50 / cores:.1f} "
                 "cores between them: prod's pods (1 CPU request, 2 limit, 2 replicas) have that; dev's one pod at "
                 f"250m/500m is CPU-limited to about {_fmt(cores / 2, 0)} runs/s.")
    p.append(line)
    full = "filtered by a param and a metric"
    ten, ten_small = t.search("the same, 10 results"), t.search("10 results, at a tenth of the runs")
    p.append(
        f"**Search.** At {t.search(full, 'runs_in_experiment'):,} runs a filtered `search_runs` returning "
        f"{t.search(full, 'returned')} runs takes p50 {_fmt(t.search(full), 0)} ms with the MLflow client. Of that, "
        f"MLflow's SqlAlchemyStore straight to Postgres (the query and building the run objects) is "
        f"{_fmt(t.search('the same, store to Postgres in-process (no HTTP)'), 0)} ms; the server's whole answer, "
        f"read raw over HTTP, {_fmt(t.search('the same, raw HTTP (response not parsed)'), 0)} ms for "
        f"{_fmt((t.search('the same, raw HTTP (response not parsed)', 'response_bytes') or 0) / 1024, 0)} KiB of JSON "
        "(auth, protobuf-to-JSON); the client's parsing the rest. Mostly the page size decides: 10 results take "
        f"{_fmt(ten, 0)} ms"
        + (f", and at a tenth of the runs {_fmt(ten_small, 0)} ms" if ten_small is not None else "")
        + f". So the 100 ms goal holds at {t.search(full, 'runs_in_experiment'):,} runs for pages of tens of runs, "
        "not for 100-run pages. No setting of this project changes that split; a bigger database tier would only "
        "shorten the store's share.")
    a = t.d["artifacts"]
    p.append(
        f"**Artifacts.** {a['size_mb']} MB through the proxy: upload {a['upload_mb_s']} MB/s, download "
        f"{a['download_mb_s']} MB/s, against a local disk-backed GCS emulator. Real GCS adds network latency per "
        "request but streams faster than a Python emulator; treat this as the proxy's own overhead being small, "
        "not as a GCS figure.")
    p.append(
        f"**Memory.** As rendered the server is two processes (`mlflow server` and its uvicorn child): "
        f"{_fmt(t.memory('tracking (jobs off), idle'), 0)} MiB RSS idle, "
        f"{_fmt(t.memory('tracking (jobs off), after'), 0)} MiB after the whole workload"
        + (f"; 2 workers: {_fmt(t.memory('tracking-w2,'), 0)} MiB" if t.has("tracking-w2") else "")
        + (f"; with the job runner: {_fmt(t.memory('tracking-jobs'), 0)} MiB in "
           f"{next((v['processes'] for k, v in t.d['memory'].items() if k.startswith('tracking-jobs')), '?')} processes"
           if t.memory("tracking-jobs") else "")
        + ". RSS counts pages shared by forked processes once per process; PSS splits them and is closer to what "
        "the pod's cgroup is charged.")
    return "\n\n".join(p)


def document(*, serving: Optional[dict], tracking: Optional[dict], program_time: Optional[dict], prefix: str,
             goals: str, machine: str, serving_tables: str, tracking_tables: str, program_time_table: str) -> str:
    s = S(serving) if serving else None
    t = T(tracking) if tracking else None
    elapsed = sum(x.get("elapsed_s", 0) for x in (serving, tracking) if x) + \
        ((serving or tracking or {}).get("platform_start_s") or 0)
    parts = [f"""# Benchmarks

What the platform's defaults are based on. Everything below comes from one run of `make bench`
(`python -m benchmarks`, about {elapsed / 60:.0f} minutes on this machine): one `LocalPlatform` runs the
rendered dev manifests (plan/dev/k8s) for real against a local Postgres and GCS emulator, every
variant runs beside it with one thing changed, and the variants are measured side by side. The JSON
results are in `benchmarks/results/`; this page is regenerated from them by
`.venv-runtime/bin/python -m benchmarks.report --docs docs/benchmarks.md`. `python -m benchmarks --quick`
(< 2 minutes) runs every step small; `tests/test_benchmarks_smoke.py` runs it and checks the shape of
the results, never their values.

## Goals

{goals}

## Recommended defaults

{defaults_table(s, t)}

## Machine

{machine}
- every process, load generator included, shares these cores; other engineers' tests ran at the same time
  (load average in serving.json/tracking.json), which is why variants are interleaved and compared by ratio.
"""]
    if s:
        parts.append(f"""## Serving

Method: {s.d['method']['client']}; {s.d['method']['payload']}; {s.d['method']['rounds']} rounds of
{s.d['method']['seconds_per_point_per_round']} s per point after {s.d['method']['warmup_s']} s warm-up,
{s.d['method']['order']}; {s.d['method']['rps']}. rps/core = {s.d['method']['rps_per_core']}.
(c) = {s.d['method']['ceiling']}.

{serving_tables}

### What the numbers say

{serving_analysis(s)}
""")
    if t:
        parts.append(f"""## Tracking

Method: {t.d['method']['client']}. Auth: `{t.d['method']['auth_path']}`. Search filter
`{t.d['method']['search_filter']}`; the runs are {t.d['method']['bulk_load']}.
Memory: {t.d['method']['memory']}.

{tracking_tables}

### What the numbers say

{tracking_analysis(t)}
""")
    if program_time:
        parts.append(f"""## Offline program time

From `benchmarks/program_time.py` (run separately: `.venv/bin/python -m benchmarks.program_time`):

{program_time_table}
""")
    parts.append("""## Limits of these numbers

- Client and servers share 2 cores: a server that could use both (2 workers) competes with the load
  generator; per-core figures (answers per CPU-second of the server's process tree) are the fairer
  comparison.
- No CPU limits are applied here; in the cluster the dev pods are limited to 500m (twice their 250m
  request), which roughly halves a pod's throughput and adds throttling latency.
- Loopback networking: no kube-proxy, no load balancer, no TLS; the GCS emulator is not GCS.
- One run: percentiles beyond p99 and small differences (< ~10 %) are within this machine's noise.
""")
    return "\n".join(parts)
