"""Canary promotions and the challenger track, without processes: the controller's verdicts on fake
numbers (thresholds, minimum requests, windows, the baseline at 100%), the promotion's order of
changes and what a breach undoes (the in-memory registry of test_promote), the HAProxy split and
mirror configuration (checked by haproxy itself), the HTTPRoute patch, the PromQL and the counters'
arithmetic, and the day-2 commands' refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.settings import CanarySettings
from tests.test_promote import MemoryRegistry, Recorder
from tools.local.balancer import Backend, find_haproxy, haproxy_config, split_commands
from tools.ops import challenger as challenger_cli
from tools.ops.canary import MAX_WINDOWS, AbortFailed, CanaryBreach, Thresholds, judge, parse_steps, run_steps
from tools.ops.interfaces import ChallengerTarget, RolloutError, TargetError, TrackStats
from tools.ops.promote import EXIT_CANARY, EXIT_PARTLY, CanaryRolledBack, PartlyDone, PromotionError, RolloutFailed, \
    promote_canary
from tools.ops.scrape import Counts, parse, quantile
from tools.ops.lease import Lease, LeaseHeld
from tools.ops.rollout import ReplicaHold
from tools.ops.local import HaproxyRouter
from tools.ops.traffic import LEASE_ANNOTATION, HttpRouteRouter, PrometheusMetrics, prometheus_thresholds, route_rules, scalar, track_queries

THRESHOLDS = Thresholds(steps=(10, 50, 100), window_seconds=60, min_requests=100, max_error_rate_increase=1.0,
                        max_p99_ratio=1.5)
GOOD = TrackStats(1000, 2, 0.020)
WARM_UP = (GOOD, TrackStats(200, 0, 0.020))


def stats(requests=1000, errors=0, p99=0.020) -> TrackStats:
    return TrackStats(requests, errors, p99)


# --- verdicts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("challenger, outcome, words", [
    (stats(200, 2, 0.021), "pass", "challenger 200 requests, 2 errors (1.00%)"),
    # +1.3 points, but 3 errors in 200 requests is within chance of the champion's 0.2% + 1 point.
    (stats(200, 3, 0.021), "pass", "challenger 200 requests, 3 errors (1.50%)"),
    (stats(200, 20, 0.021), "breach", "error rate +9.80 points over the champion's, at least 6.30 with 95% confidence, "
                                      "more than serving.canary.maxErrorRateIncrease (1)"),
    (stats(200, 0, 0.0301), "breach", "p99 1.50 × the champion's, more than serving.canary.maxP99Ratio (1.5)"),
    (stats(200, 0, 0.030), "pass", "p99 30.0 ms"),
    (stats(99, 50, 0.5), "wait", "99 of 100 requests so far"),
    (stats(99.6, 0, 0.02), "wait", "99.6 of 100 requests so far"),  # increase() extrapolates
])
def test_a_step_is_judged_on_the_error_rate_increase_and_the_p99_ratio(challenger, outcome, words):
    verdict = judge(stats(1000, 2, 0.020), challenger, THRESHOLDS, last_window=False)
    assert verdict.outcome == outcome
    assert words in verdict.reason


def test_a_p99_under_the_floor_never_breaches_however_it_compares():
    # 1 ms vs 3 ms is three times slower, and still scheduling noise.
    assert judge(stats(p99=0.001), stats(p99=0.003), THRESHOLDS, last_window=False).outcome == "pass"
    assert judge(stats(p99=0.001), stats(p99=0.011), THRESHOLDS, last_window=False).outcome == "breach"


def test_too_few_requests_on_the_last_window_fail_as_not_enough_traffic():
    verdict = judge(GOOD, stats(requests=40), THRESHOLDS, last_window=True)
    assert verdict.outcome == "breach"
    assert f"not enough traffic: the challenger answered 40 requests in {MAX_WINDOWS} windows" in verdict.reason
    assert "serving.canary.minRequests (100)" in verdict.reason


class FakeRouter:
    """Records the routes; `fail` makes every change after the first `fail` ones raise RolloutError."""

    def __init__(self, fail: int | None = None):
        self.routes: list[tuple] = []
        self.fail = fail

    def _record(self, change):
        if self.fail is not None and len(self.routes) >= self.fail:
            raise RolloutError("Kubernetes API patch of httproute/mlflow-serving failed: HTTP 403")
        self.routes.append(change)

    def route(self, weight, mirror):
        self._record((weight, mirror))
        return f"route {weight} {mirror}"

    def abort(self):
        self._record(("abort",))
        return "abort"

    held: Lease | None = None
    leases: int = 0

    def acquire(self, lease):
        if self.held:
            raise self.held.refusal("test", "release it")
        self.held, self.leases = lease, self.leases + 1

    def release(self):
        self.held = None


class FakeMetrics:
    """Answers each `since` with the next (champion, challenger) of `windows`."""

    def __init__(self, windows):
        self.windows = list(windows)
        self.marks = 0

    def mark(self):
        self.marks += 1
        return self.marks

    def since(self, mark):
        champion, challenger = self.windows.pop(0)
        return {"champion": champion, "challenger": challenger}


def test_steps_go_in_order_and_a_step_waits_for_enough_requests():
    router = FakeRouter()
    metrics = FakeMetrics([WARM_UP, (GOOD, stats(50)), (GOOD, stats(150)), (GOOD, GOOD), (stats(0, 0, None), GOOD)])
    sleeps = []
    passed = run_steps(router, metrics, THRESHOLDS, log=lambda _: None, sleep=sleeps.append)
    assert router.routes == [(10, False), (50, False), (100, False)]
    assert sleeps == [60.0] * 5  # the warm-up, and step 10% needed two windows
    assert [line.split(":")[0] for line in passed] == ["step 10%", "step 50%", "step 100%"]
    assert metrics.marks == 4  # the warm-up's, then one per step: a wait extends the step's window


def test_the_warm_up_window_judges_errors_but_not_the_cold_pods_p99():
    cold = (GOOD, stats(200, 0, 0.500))
    run_steps(FakeRouter(), FakeMetrics([cold, (GOOD, GOOD), (GOOD, GOOD), (stats(0, 0, None), GOOD)]), THRESHOLDS,
              log=lambda _: None, sleep=lambda _: None)
    with pytest.raises(CanaryBreach, match="step 10%: warm-up window: error rate"):
        run_steps(FakeRouter(), FakeMetrics([(GOOD, stats(200, 60))]), THRESHOLDS, log=lambda _: None,
                  sleep=lambda _: None)


def test_a_version_as_good_as_the_champion_is_rarely_rolled_back_by_chance():
    """Both tracks fail 1% of requests; the challenger is judged on minRequests (100). A raw difference
    rolled back about one step in six; the confidence bound, fewer than one in twenty. A version
    failing 30% is still caught every time at that count."""
    rng = random.Random(24)
    draw = lambda n, p: stats(n, sum(rng.random() < p for _ in range(n)))  # noqa: E731
    false_rollbacks = sum(judge(draw(1000, 0.01), draw(100, 0.01), THRESHOLDS, False).outcome == "breach"
                          for _ in range(2000))
    assert false_rollbacks / 2000 < 0.05
    assert all(judge(draw(1000, 0.01), draw(100, 0.30), THRESHOLDS, False).outcome == "breach" for _ in range(200))


def test_at_100_percent_the_challenger_is_compared_with_the_champion_of_the_last_step():
    """The champion answers nothing at 100%: its numbers of the 50% step are the baseline."""
    router = FakeRouter()
    slow_champion_at_50 = stats(1000, 0, 0.100)
    metrics = FakeMetrics([WARM_UP, (GOOD, GOOD), (slow_champion_at_50, stats(p99=0.120)),
                           (stats(0, 0, None), stats(p99=0.140))])
    run_steps(router, metrics, THRESHOLDS, log=lambda _: None, sleep=lambda _: None)
    assert router.routes[-1] == (100, False)


def test_a_breach_sends_all_traffic_back_at_once_and_says_why_with_the_numbers():
    router = FakeRouter()
    metrics = FakeMetrics([WARM_UP, (GOOD, GOOD), (stats(500, 0), stats(500, 150))])
    with pytest.raises(CanaryBreach) as caught:
        run_steps(router, metrics, THRESHOLDS, log=lambda _: None, sleep=lambda _: None)
    assert router.routes == [(10, False), (50, False), ("abort",)]
    assert str(caught.value).startswith("step 50%: error rate +30.00 points")
    assert "challenger 500 requests, 150 errors (30.00%)" in str(caught.value)
    assert "champion 500 requests, 0 errors (0.00%)" in str(caught.value)


def test_a_challenger_without_traffic_fails_after_the_last_window():
    router = FakeRouter()
    metrics = FakeMetrics([(GOOD, stats(10))] * (MAX_WINDOWS + 1))
    with pytest.raises(CanaryBreach, match="not enough traffic"):
        run_steps(router, metrics, THRESHOLDS, log=lambda _: None, sleep=lambda _: None)
    assert router.routes[-1] == ("abort",)


def interrupted(seconds):
    raise KeyboardInterrupt


def test_an_interrupt_mid_step_sends_all_traffic_back_before_it_stops():
    router = FakeRouter()
    with pytest.raises(KeyboardInterrupt):
        run_steps(router, FakeMetrics([]), THRESHOLDS, log=lambda _: None, sleep=interrupted)
    assert router.routes == [(10, False), ("abort",)]


def test_an_abort_that_fails_says_the_challenger_may_still_get_traffic():
    router = FakeRouter(fail=1)
    metrics = FakeMetrics([(GOOD, stats(500, 150))])
    with pytest.raises(AbortFailed) as caught:
        run_steps(router, metrics, THRESHOLDS, log=lambda _: None, sleep=lambda _: None)
    assert str(caught.value).startswith("step 10%: warm-up window: error rate +")
    assert "sending all traffic back to the champion failed too: Kubernetes API patch" in str(caught.value)
    assert "run `make challenger-abort`" in str(caught.value)


@pytest.mark.parametrize("text", ["10,5,100", "10,50", "0,100", "ten,100", "10,10,100", "100"])
def test_steps_are_refused_as_the_setting_refuses_them(text):
    with pytest.raises(ValueError, match=f"STEPS='{text}'"):
        parse_steps(text)


# --- the promotion ------------------------------------------------------------------------------
def challenger_target(recorder, windows) -> tuple[ChallengerTarget, FakeRouter]:
    router = FakeRouter()
    fast = Thresholds((50, 100), 1, 100, 1.0, 1.5)
    return ChallengerTarget("m", "champion", "challenger", recorder, router, FakeMetrics(windows), fast, (0, False)), router


def canary(registry, champion_roller, target, version="2"):
    return promote_canary(registry, champion_roller, champion_roller, target, model="m", version=version,
                          alias="champion", thresholds=target.thresholds, log=lambda _: None)


def test_a_good_canary_moves_the_alias_routes_back_and_retires_the_challenger():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [WARM_UP, (GOOD, GOOD), (stats(0, 0, None), GOOD)])
    outcome = canary(registry, champion, target)
    assert (outcome.version, outcome.previous) == ("2", "1")
    assert registry.models["m"]["aliases"] == {"champion": "2", "challenger": "2"}
    assert router.routes == [(50, False), (100, False), (0, False)]  # back to the declared route
    assert [c for c in champion.calls if c[0] == "roll"] == [("roll", "2")]
    # Served as challenger; it had no version before, so it keeps the new champion's, unrolled.
    assert [c for c in challenger.calls if c[0] == "roll"] == [("roll", "2")]


def test_a_breach_leaves_the_alias_and_puts_the_challenger_back():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    registry.models["m"]["aliases"]["challenger"] = "1"
    target, router = challenger_target(challenger, [(GOOD, stats(400, 120))])
    with pytest.raises(CanaryRolledBack) as caught:
        canary(registry, champion, target)
    assert caught.value.exit_code == EXIT_CANARY == 6
    assert "m@champion is still version 1" in str(caught.value)
    assert "challenger 400 requests, 120 errors (30.00%)" in str(caught.value)
    assert registry.models["m"]["aliases"] == {"champion": "1", "challenger": "1"}
    assert router.routes == [(50, False), ("abort",)]
    assert not [c for c in champion.calls if c[0] == "roll"]  # the champion's pods were never touched


def test_an_interrupted_canary_exits_7_with_traffic_on_the_unchanged_champion():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [])
    target.metrics.since = lambda mark: interrupted(0)
    with pytest.raises(PartlyDone) as caught:
        canary(registry, champion, target)
    assert caught.value.exit_code == EXIT_PARTLY == 7
    assert router.routes == [(50, False), ("abort",)]
    assert registry.models["m"]["aliases"] == {"champion": "1", "challenger": "2"}
    assert "m@champion is still version 1; m@challenger still serves version 2, without traffic" in str(caught.value)


def test_a_failed_abort_after_a_breach_is_no_traceback_and_says_what_changed():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [(GOOD, stats(400, 120))])
    router.fail = 1
    with pytest.raises(PartlyDone, match=r"stopped: step 50%.*failed too.*m@champion is still version 1; "
                                         r"m@challenger serves version 2"):
        canary(registry, champion, target)


def test_a_champion_rollout_that_fails_after_the_steps_sends_traffic_back_and_restores_the_alias():
    registry, champion, challenger = MemoryRegistry(), Recorder(fail_roll=True), Recorder()
    target, router = challenger_target(challenger, [WARM_UP, (GOOD, GOOD), (stats(0, 0, None), GOOD)])
    with pytest.raises(RolloutFailed, match="m@champion moved back to 1"):
        canary(registry, champion, target)
    assert router.routes[-1] == ("abort",)
    assert registry.models["m"]["aliases"]["champion"] == "1"


def test_a_route_that_cannot_go_back_after_the_promotion_says_the_alias_moved():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [WARM_UP, (GOOD, GOOD), (stats(0, 0, None), GOOD)])
    router.fail = 2
    with pytest.raises(PartlyDone, match=r"m@champion = version 2, promoted and served; but putting the route back"):
        canary(registry, champion, target)
    assert registry.models["m"]["aliases"]["champion"] == "2"


@pytest.mark.parametrize("change, message", [
    (lambda r: r.models["m"]["aliases"].clear(), "model 'm' has no 'champion' alias"),
    (lambda r: None, "m@champion already points to version 1"),
])
def test_a_canary_needs_a_champion_to_compare_with(change, message):
    registry, recorder = MemoryRegistry(), Recorder()
    change(registry)
    target, _ = challenger_target(recorder, [])
    with pytest.raises(PromotionError, match=message):
        canary(registry, recorder, target, version="1")
    assert not registry.writes


def test_a_stack_without_a_challenger_is_refused_naming_the_setting():
    with pytest.raises(PromotionError, match=r"no challenger track \(setting serving.challenger\): "
                                             r"`pulumi config set --path serving.challenger.alias challenger`"):
        promote_canary(MemoryRegistry(), Recorder(), Recorder(), None, model="m", version="2", alias="champion",
                       thresholds=THRESHOLDS)


@pytest.mark.parametrize("argv, message", [
    (["--weight", "101"], "WEIGHT='101': a whole percentage 0..100"),
    (["--weight", "-1"], "WEIGHT='-1': a whole percentage 0..100"),
    (["--mirror", "yes"], "MIRROR='yes': on or off"),
    (["--version", "2"], "--version and --model go together"),
    (["--model", "m", "--version", ""], "--version and --model go together (make challenger MODEL=NAME VERSION=N)"),
    (["--model", "", "--version", "2"], "--version and --model go together"),
    (["--model", "m", "--weight", "5"], "--version and --model go together"),
])
def test_day2_commands_refuse_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        challenger_cli.parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("model, version, change, message", [
    ("other", "2", lambda r: r.models.update(other=r.models["m"]), "model 'other' is not the served one"),
    ("nope", "2", lambda r: None, "registered model 'nope' does not exist"),
    ("m", "9", lambda r: None, "model 'm' has no version 9"),
    ("m", "2", lambda r: r.models["m"]["aliases"].clear(), "model 'm' has no 'champion' alias"),
])
def test_setting_the_challenger_refuses_an_unknown_model_or_version_or_a_model_without_champion(
        model, version, change, message):
    registry = MemoryRegistry()
    change(registry)
    target, _ = challenger_target(Recorder(), [])
    with pytest.raises(PromotionError, match=message):
        challenger_cli.check_version(registry, target, model, version)


def test_a_second_canary_is_refused_while_the_split_is_held_and_a_finished_one_releases_it():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [WARM_UP, (GOOD, GOOD), (stats(0, 0, None), GOOD)])
    router.held = Lease("alice@laptop pid 7: promote", "2026-12-07T20:00:00+00:00")
    with pytest.raises(LeaseHeld, match="held by alice@laptop pid 7: promote since 2026-12-07T20:00:00"):
        canary(registry, champion, target)
    assert not registry.writes and not router.routes
    router.held = None
    canary(registry, champion, target)
    assert router.leases == 1 and router.held is None


def test_the_local_lease_is_one_file_created_exclusively(tmp_path):
    first, second = (HaproxyRouter(tmp_path / "haproxy.sock", tmp_path / "split.map") for _ in range(2))
    first.acquire(Lease("alice@laptop pid 7: promote", "since"))
    with pytest.raises(LeaseHeld, match=f"held by alice@laptop pid 7: promote .*delete {tmp_path}/split.lease"):
        second.acquire(Lease.mine())
    second.release()  # not its lease: nothing happens
    assert (tmp_path / "split.lease").exists()
    first.release()
    second.acquire(Lease.mine())


class LeasedRoutes:
    """A CustomObjectsApi holding one route; `conflict` answers the precondition's 409 once."""

    def __init__(self, annotations=None, conflict=False):
        self.route = {"metadata": {"resourceVersion": "41", "annotations": dict(annotations or {})}, "spec": SPEC}
        self.conflict, self.patches = conflict, []

    def get_namespaced_custom_object(self, *args):
        return self.route

    def patch_namespaced_custom_object(self, *args, field_manager):
        body = args[-1]
        if self.conflict:
            self.conflict = False
            raise type("ApiException", (Exception,), {"status": 409, "reason": "Conflict"})()
        self.patches.append(body)
        return self.route


def test_the_cluster_lease_is_an_annotation_written_with_the_read_resource_version():
    api = LeasedRoutes()
    router = HttpRouteRouter(api, "mlflow-serving", "mlflow-serving", "mlflow-serving")
    router.acquire(Lease("bob@ci pid 3: promote", "since"))
    assert api.patches[0]["metadata"]["resourceVersion"] == "41"
    assert json.loads(api.patches[0]["metadata"]["annotations"][LEASE_ANNOTATION])["holder"] == "bob@ci pid 3: promote"
    router.release()
    assert api.patches[1] == {"metadata": {"annotations": {LEASE_ANNOTATION: None}}}
    held = LeasedRoutes({LEASE_ANNOTATION: Lease("bob@ci pid 3: promote", "since").text()})
    with pytest.raises(LeaseHeld, match=f"held by bob@ci pid 3: promote since since .*kubectl annotate httproute "
                                        f"mlflow-serving -n mlflow-serving {LEASE_ANNOTATION}-"):
        HttpRouteRouter(held, "mlflow-serving", "mlflow-serving", "mlflow-serving").acquire(Lease.mine())
    with pytest.raises(LeaseHeld, match="another command changed httproute/mlflow-serving"):
        HttpRouteRouter(LeasedRoutes(conflict=True), "mlflow-serving", "mlflow-serving", "mlflow-serving").acquire(
            Lease.mine())


class FakeHpa:
    """An AutoscalingV2Api with one HPA (minReplicas 2, maxReplicas 10) currently at `current` replicas."""

    def __init__(self, current):
        self.spec = SimpleNamespace(min_replicas=2, max_replicas=10)
        self.current, self.patches = current, []

    def read_namespaced_horizontal_pod_autoscaler(self, name, namespace):
        return SimpleNamespace(spec=self.spec, status=SimpleNamespace(current_replicas=self.current))

    def patch_namespaced_horizontal_pod_autoscaler(self, name, namespace, body, field_manager):
        self.patches.append(body["spec"]["minReplicas"])
        self.spec.min_replicas = body["spec"]["minReplicas"]


def test_the_champion_keeps_its_replicas_during_a_canary_and_its_autoscaler_gets_its_minimum_back():
    registry, champion, challenger = MemoryRegistry(), Recorder(), Recorder()
    target, router = challenger_target(challenger, [(GOOD, stats(400, 120))])
    api = FakeHpa(current=6)
    target = dataclasses.replace(target, champion_replicas=ReplicaHold(api, "mlflow-serving", "mlflow-serving"))
    with pytest.raises(CanaryRolledBack):
        canary(registry, champion, target)
    assert api.patches == [6, 2]  # held at its 6 replicas while the challenger had traffic, then back to 2
    capped = FakeHpa(current=40)
    ReplicaHold(capped, "mlflow-serving", "mlflow-serving").hold()
    assert capped.patches == [10]


def test_traffic_goes_to_the_challenger_only_once_its_alias_is_set():
    registry = MemoryRegistry()
    target, _ = challenger_target(Recorder(), [])
    with pytest.raises(PromotionError, match="model 'm' has no 'challenger' alias: the challenger serves nothing yet"):
        challenger_cli.check_served(registry, target)
    registry.models["m"]["aliases"]["challenger"] = "2"
    challenger_cli.check_served(registry, target)


# --- the local split: HAProxy's own check of the configuration --------------------------------
def test_haproxy_accepts_the_split_and_mirror_configuration(tmp_path):
    backends = [Backend("serving", 18090, "/ping", 5, 3, split_to="challenger"), Backend("challenger", 18091, "/ping", 5, 3)]
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(backends, tmp_path / "haproxy.sock"))
    (tmp_path / "split.map").write_text("weight 0\nmirror 0\n")
    checked = subprocess.run([find_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert "use_backend challenger if { rand(100),sub(txn.split_weight) lt 0 }" in text
    assert "lua.mirror http://127.0.0.1:18091 if mirrored scoring" in text


def test_the_split_commands_refuse_a_weight_outside_0_to_100():
    assert split_commands(Path("/x/split.map"), 30, False) == ["set map /x/split.map weight 30",
                                                               "set map /x/split.map mirror 0"]
    with pytest.raises(ValueError, match="weight=101: allowed 0..100"):
        split_commands(Path("/x/split.map"), 101, False)


# --- the HTTPRoute and Managed Prometheus --------------------------------------------------------
SPEC = {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "mlflow-serving"}],
        "rules": [{"backendRefs": [{"group": "", "kind": "Service", "name": "mlflow-serving", "port": 8080, "weight": 100},
                                   {"group": "", "kind": "Service", "name": "mlflow-serving-challenger", "port": 8080,
                                    "weight": 0}]}]}


def test_the_route_patch_weights_both_services_and_mirrors_to_the_challenger():
    split = route_rules(SPEC, "mlflow-serving", 30, False)
    assert [(ref["name"], ref["weight"]) for ref in split[0]["backendRefs"]] == [
        ("mlflow-serving", 70), ("mlflow-serving-challenger", 30)]
    assert "filters" not in split[0]
    mirrored = route_rules({**SPEC, "rules": split}, "mlflow-serving", 0, True)
    assert [ref["weight"] for ref in mirrored[0]["backendRefs"]] == [100, 0]
    assert mirrored[0]["filters"] == [{"type": "RequestMirror", "requestMirror": {"backendRef": {
        "group": "", "kind": "Service", "name": "mlflow-serving-challenger", "port": 8080}}}]
    assert "filters" not in route_rules({**SPEC, "rules": mirrored}, "mlflow-serving", 0, False)[0]


def test_a_route_without_a_challenger_is_not_patched():
    alone = {**SPEC, "rules": [{"backendRefs": SPEC["rules"][0]["backendRefs"][:1]}]}
    with pytest.raises(RolloutError, match="was it declared with serving.challenger"):
        route_rules(alone, "mlflow-serving", 30, False)


def live_route(generation, observed):
    conditions = [{"type": kind, "status": "True", "observedGeneration": observed} for kind in ("Accepted", "ResolvedRefs")]
    return {"metadata": {"generation": generation}, "spec": SPEC,
            "status": {"parents": [{"parentRef": {"name": "mlflow-serving"}, "conditions": conditions}]}}


class FakeRoutes:
    """A CustomObjectsApi whose Gateway controller reports a patched generation after `lag` reads."""

    def __init__(self, lag):
        self.lag, self.reads, self.generation = lag, 0, 1

    def get_namespaced_custom_object(self, *args):
        self.reads += 1
        return live_route(self.generation, self.generation if self.reads > self.lag else self.generation - 1)

    def patch_namespaced_custom_object(self, *args, field_manager):
        self.generation, self.reads = self.generation + 1, 0
        return live_route(self.generation, self.generation - 1)


def test_a_route_change_returns_once_the_gateway_reports_the_new_generation():
    api, clock = FakeRoutes(lag=2), [0.0]
    router = HttpRouteRouter(api, "mlflow-serving", "mlflow-serving", "mlflow-serving", timeout=60,
                             sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    assert router.route(30, False).endswith("challenger 30% (programmed after 15 s)")
    assert api.reads == 3
    api.lag = 100
    with pytest.raises(RolloutError, match="generation 3 not Accepted with ResolvedRefs by the Gateway within 60 s"):
        router.route(50, False)


def test_promql_selects_the_track_and_the_scoring_path_over_the_window():
    queries = track_queries("challenger", "mlflow-prod-serving", "mlflow", 75)
    # 4xx too: MLflow's scoring answers 400 when the model raises; this stack's cluster only
    assert queries["errors"] == ('sum(increase(mlflow_serving_requests_total{cluster="mlflow-prod-serving",'
                                 'namespace="mlflow",track="challenger",path="/invocations",status=~"[45].."}[75s]))')
    assert queries["p99"].startswith("histogram_quantile(0.99, sum by (le) (increase("
                                     "mlflow_serving_request_duration_seconds_bucket{")


def test_prometheus_answers_become_track_numbers():
    answers = {"requests": "480", "errors": "12", "p99": "0.042"}

    def get(url, params):
        assert url == "https://monitoring.googleapis.com/v1/projects/p1/location/global/prometheus/api/v1/query"
        kind = "p99" if "histogram_quantile" in params["query"] else "errors" if "status=~" in params["query"] else "requests"
        return {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, answers[kind]]}]}}

    clock = iter([100.0, 160.2])
    metrics = PrometheusMetrics("p1", "c1", "mlflow", get, clock=lambda: next(clock))
    found = metrics.since(metrics.mark())
    assert found["challenger"] == TrackStats(480.0, 12.0, 0.042)
    assert scalar({"status": "success", "data": {"result": []}}) is None


# --- counters read from the pods ---------------------------------------------------------------------
EXPOSITION = """
mlflow_serving_requests_total{path="/invocations",method="POST",status="200"} 85.0
mlflow_serving_requests_total{path="/invocations",method="POST",status="302"} 1.0
mlflow_serving_requests_total{path="/invocations",method="POST",status="400"} 10.0
mlflow_serving_requests_total{path="/invocations",method="POST",status="500"} 4.0
mlflow_serving_requests_total{path="/ping",method="GET",status="200"} 7.0
mlflow_serving_request_duration_seconds_bucket{path="/invocations",le="0.01"} 50.0
mlflow_serving_request_duration_seconds_bucket{path="/invocations",le="0.1"} 100.0
mlflow_serving_request_duration_seconds_bucket{path="/invocations",le="+Inf"} 100.0
"""


def test_counters_of_a_pod_count_scoring_requests_and_every_answer_from_400_as_an_error():
    # a model raising an ordinary exception answers 400 (MLflow's scoring): it must count
    counts = parse(EXPOSITION)
    assert (counts.requests, counts.errors) == (100.0, 14.0)
    assert counts.buckets == ((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0))


def test_a_difference_is_per_pod_and_a_restarted_pod_counts_from_zero():
    before, after = parse(EXPOSITION), Counts(150.0, 14.0, ((0.01, 100.0), (0.1, 150.0), (math.inf, 150.0)))
    assert after.minus(before) == Counts(50.0, 0.0, ((0.01, 50.0), (0.1, 50.0), (math.inf, 50.0)))
    restarted = Counts(5.0, 0.0, ((0.01, 5.0), (0.1, 5.0), (math.inf, 5.0)))
    assert restarted.minus(before) == restarted


def test_p99_is_interpolated_in_its_bucket_as_histogram_quantile_does():
    assert quantile(0.99, ((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0))) == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert quantile(0.99, ((0.01, 0.0), (math.inf, 10.0))) == 0.01  # in +Inf: the highest finite bound
    assert quantile(0.99, ()) is None


# --- how tools/ops finds a running `make local`'s challenger ---------------------------------------
def test_endpoints_of_make_local_name_the_tracks_or_no_challenger():
    from tools.ops.local import HaproxyRouter, PodMetrics, local_challenger

    base = {"model_uri": "models:/iris-classifier@champion", "serving_url": "http://127.0.0.1:1"}
    assert local_challenger(base, Recorder(), THRESHOLDS) is None
    found = local_challenger({**base, "challenger_url": "http://127.0.0.1:2", "challenger_alias": "challenger",
                              "balancer_socket": "/w/balancer/haproxy.sock", "split_map": "/w/balancer/split.map",
                              "track_backends": {"champion": "serving", "challenger": "challenger"},
                              "declared_split": [20, 0]}, Recorder(), THRESHOLDS)
    assert (found.model, found.champion_alias, found.alias, found.declared) == (
        "iris-classifier", "champion", "challenger", (20, False))
    assert isinstance(found.router, HaproxyRouter) and found.router.split_map == Path("/w/balancer/split.map")
    assert isinstance(found.metrics, PodMetrics) and found.metrics.backends["challenger"] == "challenger"


def test_day2_commands_on_a_stack_without_challenger_name_the_setting(monkeypatch, capsys):
    from types import SimpleNamespace

    from tools.ops import targets

    monkeypatch.setattr(targets, "platform", lambda args: SimpleNamespace(
        promotion=lambda timeout: SimpleNamespace(challenger=None)))
    assert challenger_cli.main(["--weight", "20"]) == 1
    assert "no challenger track (setting serving.challenger)" in capsys.readouterr().err


# --- the local mirror, on a real HAProxy (a process: slow) ----------------------------------------
class Stub:
    """An HTTP server answering /ping 200 and POSTs with `status` and its own name; records the bodies."""

    def __init__(self, name: str, status: int):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self
        self.bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                stub.bodies.append(self.rfile.read(length) if length else self._chunked())
                self.send_response(status)
                self.send_header("content-length", str(len(name)))
                self.end_headers()
                self.wfile.write(name.encode())

            def _chunked(self) -> bytes:
                body = b""
                while (size := int(self.rfile.readline().strip() or b"0", 16)):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return body

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_a_mirrored_copy_never_reaches_the_client_and_a_failing_mirror_never_fails_it(tmp_path):
    from tools.local.balancer import LocalBalancer
    from tools.local.processes import free_port, http

    champion, challenger = Stub("champion", 200), Stub("challenger", 500)
    balancer = LocalBalancer([Backend("serving", free_port(), "/ping", 1, 1, split_to="challenger"),
                              Backend("challenger", free_port(), "/ping", 1, 1)], tmp_path, tmp_path / "haproxy.log",
                             lambda text: text)
    balancer.start()
    try:
        balancer.add("serving", champion.port)
        balancer.add("challenger", challenger.port)
        balancer.split(0, True)

        def send(n: int) -> set:
            return {(r.status, r.body) for r in (http("POST", f"{balancer.url('serving')}/invocations",
                                                      json_body={"i": i}) for i in range(n))}

        assert send(20) == {(200, b"champion")}
        deadline = time.time() + 5
        while len(challenger.bodies) < 20 and time.time() < deadline:
            time.sleep(0.05)
        assert sorted(json.loads(body)["i"] for body in challenger.bodies) == list(range(20))
        balancer.split(100, False)  # split, not mirrored: the challenger's own answers now
        assert send(5) == {(500, b"challenger")}
        balancer.split(0, True)
        challenger.stop()  # the mirror's target is gone: clients see nothing of it
        assert send(20) == {(200, b"champion")}
    finally:
        balancer.stop()
        champion.stop()


# --- windows on GKE --------------------------------------------------------------------------------
def test_gke_refuses_a_window_shorter_than_two_managed_prometheus_scrapes_by_name():
    with pytest.raises(TargetError, match=r"serving.canary.windowSeconds is 30 in stack prod: on GKE it must be at "
                                          r"least 60 s, two Managed Prometheus scrapes \(PodMonitoring interval 30s\)"):
        prometheus_thresholds(CanarySettings(window_seconds=30), "prod")
    assert prometheus_thresholds(CanarySettings(window_seconds=60), "prod").window_seconds == 60


def test_short_windows_stay_possible_locally():
    assert Thresholds.from_settings(CanarySettings(window_seconds=10)).window_seconds == 10
