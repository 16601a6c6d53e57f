"""Canary promotions rehearsed on one local platform with a challenger track (the dev plan rendered
with `serving.challenger`), behind HAProxy splitting serving by weight, under steady Locust load:

1. a good version (variant `shifted`) promoted by canary reaches 100% and becomes the champion with
   no failed request;
2. a version failing on part of its inputs (variant `faulty`: 500 for any request holding a row with
   a long petal) is rolled back by itself at its first step: the alias is unchanged, the promotion
   fails with exit code 6, and the failed requests are at most the step's share × the version's own
   failure rate × the requests sent during the step (+ binomial slack), and none after the rollback.

The thresholds are `serving.canary`'s with short windows; maxP99Ratio is raised to 3 because both
tracks share two cores with the load generator here, where p99 moves with the split itself.
"""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from loadtest.locust_run import LoadRun, LocustProcesses, wait_for_first_requests
from loadtest.payloads import PROBE_ROW, dataframe_split
from loadtest.results import endpoints, history, started_at
from tests.test_under_load import failures_before, load
from tools.local.processes import http
from tools.local.testing import scratch_platform
from tools.offline.plan import write_plan
from tools.offline.render import render
from tools.offline.stack import run_stack
from tools.ops.canary import Thresholds
from tools.ops.interfaces import ChallengerTarget
from tools.ops.local import HaproxyRouter, PlatformRoller, PodMetrics, admin_runner
from tools.ops.promote import EXIT_CANARY, CanaryRolledBack, RuntimeGranter, promote_canary, registry_client

pytestmark = pytest.mark.slow

USERS = 6
THRESHOLDS = Thresholds(steps=(10, 50, 100), window_seconds=8, min_requests=40, max_error_rate_increase=1.0,
                        max_p99_ratio=3.0)


@pytest.fixture(scope="module")
def platform(request, tmp_path_factory):
    plan = tmp_path_factory.mktemp("plan")
    write_plan(render(run_stack("dev", overrides={"serving.challenger.alias": "challenger"})), plan / "dev")
    with scratch_platform(request, "mlflow-canary-", plan_dir=plan) as local:
        local.start()
        assert local.challenger is not None and local.declared_split == (0, False)
        yield local
        local.wait_retired()


def challenger_target(platform) -> ChallengerTarget:
    socket = platform.balancer.socket_path
    return ChallengerTarget(platform.model_name, platform.model_alias, platform.challenger_alias,
                            PlatformRoller(platform, serving="challenger"),
                            HaproxyRouter(socket, platform.balancer.split_map),
                            PodMetrics(socket, {"champion": "serving", "challenger": "challenger"}), THRESHOLDS,
                            platform.declared_split)


def predict(platform) -> int:
    _, body = dataframe_split([PROBE_ROW])
    return http("POST", f"{platform.serving_url}/invocations", json_body=json.loads(body)).json()["predictions"][0]


def canary(platform, version: str, thresholds: Thresholds, log: list[tuple[float, str]]):
    """promote_canary in-process; `log` gets (unix time, line) of each line it prints."""
    registry = registry_client(platform.tracking_url, platform.admin_username, platform.admin_password)
    granter = RuntimeGranter(admin_runner(platform), platform.serving_username)
    target = challenger_target(platform)
    return promote_canary(registry, granter, PlatformRoller(platform), target, model=platform.model_name,
                          version=version, alias=platform.model_alias, thresholds=thresholds,
                          log=lambda line: log.append((time.time(), line)))


@contextmanager
def steady_load(platform, out_dir: Path) -> Iterator[LoadRun]:
    """Locust on serving (USERS closed-loop users, the mix of loadtest/serving_locust.py) while the block runs."""
    run, _ = load("serving", platform.serving_url, USERS, out_dir)
    locust = LocustProcesses(run).start()
    try:
        wait_for_first_requests(run)
        time.sleep(2)
        yield run
    finally:
        locust.finish()


def totals(run: LoadRun) -> tuple[int, int]:
    """(requests, failed requests) of the whole run."""
    stats = endpoints(run.json_path)
    return sum(e.requests for e in stats), sum(e.failures for e in stats)


def test_a_good_version_reaches_100_percent_with_no_failed_request(platform, tmp_path):
    first = predict(platform)
    v2 = platform.train_model(variant="shifted", move_alias=False)["version"]
    log: list[tuple[float, str]] = []
    with steady_load(platform, tmp_path) as run:
        outcome = canary(platform, v2, THRESHOLDS, log)
        time.sleep(2)
    requests, failed = totals(run)
    print(f"\ngood canary: {requests} requests, {failed} failed\n" + "\n".join(line for _, line in log))
    assert outcome.version == v2 and outcome.previous == platform.demo_run["version"]
    assert [line.split(" passed")[0] for _, line in log if " passed:" in line] == ["step 10%", "step 50%", "step 100%"]
    assert failed == 0, f"{failed} of {requests} requests failed during the canary (see {run.out_dir})"
    assert predict(platform) != first, "the champion does not answer with the promoted version"


def test_a_version_failing_on_part_of_its_inputs_is_rolled_back_at_its_first_step(platform, tmp_path):
    registry = registry_client(platform.tracking_url, platform.admin_username, platform.admin_password)
    champion = registry.get_registered_model(platform.model_name).aliases[platform.model_alias]
    answer = predict(platform)
    bad = platform.train_model(variant="faulty", move_alias=False)["version"]
    log: list[tuple[float, str]] = []
    with steady_load(platform, tmp_path) as run:
        with pytest.raises(CanaryRolledBack) as caught:
            canary(platform, bad, THRESHOLDS.with_steps((10, 100)), log)
        time.sleep(5)  # the champion alone: nothing may fail any more
    requests, failed = totals(run)
    step_started = next(t for t, line in log if line == "local split: challenger 10%")
    aborted = next(t for t, line in log if line.startswith("local split: all traffic to the champion"))
    sent_during_step = _requests_between(run, step_started, aborted)
    breach = str(caught.value)
    challenger_rate = _challenger_failure_rate(breach)
    expected = 0.10 * challenger_rate * sent_during_step
    bound = expected + 3 * math.sqrt(max(expected, 1)) + 5  # binomial slack, and requests in flight at the switch
    print(f"\nbad canary: {requests} requests, {failed} failed; {sent_during_step} sent during the step, "
          f"challenger failure rate {challenger_rate:.1%}: bound {bound:.1f}\n{breach}")
    assert caught.value.exit_code == EXIT_CANARY
    assert breach.startswith(f"canary of {platform.model_name} version {bad} rolled back at step 10%: error rate")
    assert registry.get_registered_model(platform.model_name).aliases[platform.model_alias] == champion
    assert predict(platform) == answer
    assert 0 < failed <= bound, f"{failed} failed requests, bound {bound:.1f} (see {run.out_dir})"
    assert failures_before(run, aborted + 1) == failed, "requests failed after the rollback"


def _requests_between(run, begin: float, end: float) -> int:
    """Requests Locust sent between two unix times (its per-second history)."""
    start = started_at(run.csv_prefix) or 0
    seen = [(start + s.t, s.total_requests) for s in history(run.csv_prefix)]
    before = max((n for t, n in seen if t <= begin), default=0)
    after = max((n for t, n in seen if t <= end + 1), default=0)
    return after - before


def _challenger_failure_rate(breach: str) -> float:
    """The challenger's own error share, from the numbers the breach prints."""
    numbers = re.search(r"challenger (\d+) requests, (\d+) errors", breach)
    return int(numbers[2]) / int(numbers[1])
