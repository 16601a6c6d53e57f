"""Nothing fails while the platform changes (DESIGN decision 10), rehearsed on one local platform
under Locust load, behind its HAProxy load balancer (tools/local/balancer.py), with pods replaced as
their Deployments' strategies declare and stopped through their preStop, SIGTERM and grace period:

1. three promotions of serving in a row under steady load: no failed request, and every request
   sent after a promotion returned is answered by the new version;
2. a rolling restart of tracking under 8 writers: no failed request, nothing acknowledged lost;
3. a Postgres restart under the same writers: tracking answers again by itself within 30 s, and
   nothing acknowledged is lost.

With REHEARSAL_REPORT=1 the measured values and charts are written to docs/loadtest.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from loadtest.locust_run import LoadRun, LocustProcesses, wait_for_first_requests
from loadtest.payloads import PROBE_ROW, dataframe_split
from loadtest.report import update_rehearsals
from loadtest.results import endpoints, history, started_at
from tools.local.manifests import ROOT
from tools.local.processes import http
from tools.local.testing import scratch_platform
from tools.ops.promote import RuntimeGranter, promote, registry_client
from tools.ops.local import PlatformRoller, admin_runner

pytestmark = pytest.mark.slow

SERVING_USERS = 8
WRITERS = 8
PROMOTIONS = 3
DATABASE_RECOVERY_SECONDS = 30.0


@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-under-load-") as local:
        local.start()
        yield local
        local.wait_retired()  # every drained pod stopped within its grace period


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    if os.environ.get("REHEARSAL_REPORT"):
        return ROOT / "loadtest-results" / "rehearsals"
    return tmp_path_factory.mktemp("under-load")


@pytest.fixture(scope="module")
def report():
    entries: list[dict] = []
    yield entries
    if os.environ.get("REHEARSAL_REPORT") and entries:
        update_rehearsals(ROOT / "docs" / "loadtest.md", entries)


def load(name: str, host: str, users: int, out_dir: Path, env: dict | None = None) -> tuple[LoadRun, Path]:
    """A single-process Locust run recording what it saw; bounded at 150 s, ended by the test."""
    records = out_dir / f"{name}-records"
    records.mkdir(parents=True, exist_ok=True)
    run = LoadRun(name, host, users, 150, out_dir, env={"LOADTEST_RECORD_DIR": str(records), **(env or {})})
    return run, records


def jsonl(directory: Path, prefix: str) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob(f"{prefix}-*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


# What MLflow's client retries (mlflow.utils.rest_utils: 429 and these 5xx, with backoff): a
# failure with one of them during the database restart is one a real client rides out.
CLIENT_RETRIED = {"500", "502", "503", "504", "429"}


def failure_statuses(run: LoadRun) -> dict[str, int]:
    """HTTP status of Locust's failures -> occurrences (`conn` for a connection error)."""
    statuses: dict[str, int] = {}
    with open(f"{run.csv_prefix}_failures.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            match = re.search(r"HTTP (\d{3})", row["Error"])
            key = match[1] if match else "conn"
            statuses[key] = statuses.get(key, 0) + int(row["Occurrences"])
    return statuses


def failures_before(run: LoadRun, when: float) -> int:
    """Failed requests Locust had counted by unix time `when`."""
    start = started_at(run.csv_prefix) or 0
    return max((s.total_failures for s in history(run.csv_prefix) if start + s.t <= when), default=0)


def test_three_promotions_under_load_fail_nothing_and_then_serve_the_new_version(platform, results_dir, report):
    registry = registry_client(platform.tracking_url, platform.admin_username, platform.admin_password)
    granter = RuntimeGranter(admin_runner(platform), platform.serving_username)
    v1 = platform.demo_run["version"]
    v2 = platform.run_client("train", "--model-name", platform.model_name, "--alias", "candidate",
                             "--experiment", "iris-demo", "--variant", "shifted").json()["version"]
    _, body = dataframe_split([PROBE_ROW])
    first = http("POST", f"{platform.serving_url}/invocations", json_body=json.loads(body)).json()["predictions"][0]

    run, records = load("serving", platform.serving_url, SERVING_USERS, results_dir)
    locust = LocustProcesses(run).start()
    windows = []  # (version, promotion returned at, next promotion started at)
    try:
        wait_for_first_requests(run)
        time.sleep(2)
        for version in [v2, v1, v2][:PROMOTIONS]:
            started = time.time()
            if windows:
                windows[-1] = (*windows[-1][:2], started)
            promote(registry, granter, PlatformRoller(platform), model=platform.model_name, version=version,
                    alias=platform.model_alias, log=lambda message: None)
            windows.append((version, time.time(), None))
            time.sleep(1)  # answers after the rollout, before the next one
    finally:
        locust.finish()
    stats = endpoints(run.json_path)
    requests, failed = sum(e.requests for e in stats), sum(e.failures for e in stats)
    seconds = history(run.csv_prefix)
    rps = requests / max(1, seconds[-1].t if seconds else 1)

    answers = jsonl(records, "answers")
    before = {a["p"] for a in answers if a["t"] < windows[0][1] - 30}
    assert before <= {first}, f"before the promotions only version {v1} answers: {before}"
    later = {}
    for version, returned, next_started in windows:
        seen = {a["p"] for a in answers if a["t"] > returned and (next_started is None or a["t"] < next_started)}
        later[version] = later.get(version, set()) | seen
        assert len(seen) == 1, f"after promoting version {version}, answers from several versions: {seen}"
    assert later[v2] != {first} and later[v1] == {first}, f"answers after each promotion: {later}"
    assert failed == 0, f"{failed} of {requests} requests failed during {PROMOTIONS} promotions (see {run.out_dir})"

    start = started_at(run.csv_prefix) or 0
    report.append({"name": f"{PROMOTIONS} promotions of serving under load", "csv_prefix": str(run.csv_prefix),
                   "events": [[round(returned - start), f"version {version} serving"]
                              for version, returned, _ in windows],
                   "facts": {"users (closed loop)": SERVING_USERS, "requests": f"{requests:,}",
                             "failed requests": failed, "requests/s (whole run)": f"{rps:.0f}",
                             "answers checked for their version": f"{len(answers):,}"}})


def test_tracking_restart_and_postgres_restart_under_8_writers_lose_nothing(platform, results_dir, report):
    run, records = load("tracking", platform.tracking_url, WRITERS, results_dir,
                        {"LOADTEST_USERNAME": platform.admin_username,
                         "LOADTEST_PASSWORD_FILE": str(platform.admin_password_file)})
    locust = LocustProcesses(run).start()
    auth = (platform.admin_username, platform.admin_password)
    search = {"experiment_ids": ["0"], "max_results": 1}
    try:
        wait_for_first_requests(run)
        time.sleep(3)
        roll_started = time.time()
        platform.roll_tracking()
        roll_seconds = time.time() - roll_started
        time.sleep(3)
        roll_failures = failures_before(run, time.time())

        database_restarted = time.time()
        platform.restart_postgres()
        while http("POST", f"{platform.tracking_url}/api/2.0/mlflow/runs/search", json_body=search,
                   auth=auth, timeout=10).status != 200:
            assert time.time() - database_restarted < 60, "tracking did not recover within 60 s"
            time.sleep(0.2)
        recovery = time.time() - database_restarted
        time.sleep(3)
    finally:
        locust.finish()
    stats = endpoints(run.json_path)
    requests, failed = sum(e.requests for e in stats), sum(e.failures for e in stats)

    acks = jsonl(records, "acks")
    runs = {a["run_id"] for a in acks if a["kind"] == "run"}
    lost = []
    for run_id in runs:
        response = http("GET", f"{platform.tracking_url}/api/2.0/mlflow/runs/get?run_id={run_id}", auth=auth)
        if response.status != 200:
            lost.append(f"run {run_id}: HTTP {response.status}")
            continue
        logged = {m["key"] for m in response.json()["run"]["data"].get("metrics", [])}
        lost += [f"run {a['run_id']}: metrics {sorted(set(a['keys']) - logged)}" for a in acks
                 if a["kind"] == "metrics" and a["run_id"] == run_id and not set(a["keys"]) <= logged]
    experiment = platform_experiment(platform, auth)
    for artifact in (a for a in acks if a["kind"] == "artifact"):
        got = http("GET", f"{platform.tracking_url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/"
                   f"{artifact['run_id']}/artifacts/{artifact['path']}", auth=auth)
        if got.status != 200 or len(got.body) != artifact["size"]:
            lost.append(f"artifact of {artifact['run_id']}: HTTP {got.status}, {len(got.body)} bytes")

    statuses = failure_statuses(run)
    start = started_at(run.csv_prefix) or 0
    report.append({"name": "tracking: rolling restart, then Postgres restart, under 8 writers",
                   "csv_prefix": str(run.csv_prefix),
                   "events": [[round(roll_started - start), "tracking rolled"],
                              [round(database_restarted - start), "Postgres restarted"]],
                   "facts": {"writers": WRITERS, "requests": f"{requests:,}",
                             "failed requests during the tracking rollout": roll_failures,
                             "failed requests during the Postgres restart": failed - roll_failures,
                             "new tracking pod ready and in the balancer, s": f"{roll_seconds:.1f}",
                             "tracking answering again after the Postgres restart began, s": f"{recovery:.1f}",
                             "acknowledged runs / metric batches / artifacts checked":
                                 f"{len(runs)} / {sum(a['kind'] == 'metrics' for a in acks)} / "
                                 f"{sum(a['kind'] == 'artifact' for a in acks)}",
                             "acknowledged writes lost": len(lost),
                             "failures by HTTP status": ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
                             or "none"}})
    assert runs, "the writers acknowledged nothing: no load"
    assert not lost, f"acknowledged writes lost: {lost[:10]}"
    assert roll_failures == 0, f"{roll_failures} requests failed during the tracking rollout (see {run.out_dir})"
    assert recovery <= DATABASE_RECOVERY_SECONDS, f"tracking answered again only after {recovery:.1f}s"
    assert set(statuses) <= CLIENT_RETRIED, f"failures MLflow's client would not retry: {statuses}"


def platform_experiment(platform, auth) -> str:
    response = http("GET", f"{platform.tracking_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=loadtest",
                    auth=auth)
    return response.json()["experiment"]["experiment_id"]
