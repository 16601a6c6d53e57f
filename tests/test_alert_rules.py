"""The PromQL alert policies the plans ship, checked by Prometheus's own tool (tools/local/alerts.py): promtool
accepts the rules made from each plan (dev, prod, dev with a challenger), and `promtool test rules` shows each
policy firing when it should and not when it should not, on series labelled as Managed Prometheus labels the
pods' metrics. A broken copy of the rules fails the same test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tools.local.alerts import (
    INSTALL_HINT, PROMTOOL, LocalPod, file_sd_targets, find_binary, plan_conditions, prometheus_config,
    rules_document, scrape_endpoints,
)
from tools.local.manifests import ROOT, Manifests
from tools.local.notifications import ALERT, alert_notifications
from tools.local.processes import LocalPlatformError
from tools.offline.plan import write_plan
from tools.offline.render import render
from tools.offline.stack import run_stack

pytestmark = pytest.mark.unit

POLICIES = {"serving-errors", "serving-latency", "tracking-down"}
SERVING = 'namespace="mlflow-serving",job="mlflow-serving",path="/invocations"'
BUCKETS = ("0.1", "0.25", "0.5", "+Inf")


@pytest.fixture(scope="module")
def challenger_plan(tmp_path_factory) -> Path:
    plan = tmp_path_factory.mktemp("challenger-plan")
    write_plan(render(run_stack("dev", overrides={"serving.challenger.alias": "challenger"})), plan / "dev")
    return plan / "dev"


@pytest.fixture(params=["dev", "prod", "dev-challenger"])
def plan_stack_dir(request) -> Path:
    if request.param == "dev-challenger":
        return request.getfixturevalue("challenger_plan")
    return ROOT / "plan" / request.param


def promtool(*args: str) -> subprocess.CompletedProcess:
    try:
        binary = find_binary(PROMTOOL)
    except LocalPlatformError as err:
        pytest.fail(str(err), pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def write_rules(directory: Path, plan_stack_dir: Path) -> Path:
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules_document(plan_conditions(plan_stack_dir)), sort_keys=False))
    return path


def test_promtool_accepts_the_rules_and_the_scrape_config_of_each_plan(plan_stack_dir, tmp_path):
    conditions = plan_conditions(plan_stack_dir)
    assert {c.policy for c in conditions} == POLICIES
    rules = write_rules(tmp_path, plan_stack_dir)
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0 and f"SUCCESS: {len(POLICIES)} rules found" in checked.stdout, checked
    endpoints = scrape_endpoints(Manifests.load(plan_stack_dir.name, plan_stack_dir.parent))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(endpoints, tmp_path, rules, 9093)))
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked


def counter(status: str, track: str, per_minute: int) -> dict:
    return {"series": f'mlflow_serving_requests_total{{{SERVING},method="POST",status="{status}",track="{track}"}}',
            "values": f"0+{per_minute}x20"}


def histogram(track: str, per_bucket: tuple[int, ...]) -> list[dict]:
    """Cumulative buckets: `per_bucket[i]` requests a minute at or under BUCKETS[i]."""
    return [{"series": f'mlflow_serving_request_duration_seconds_bucket{{{SERVING},le="{le}",track="{track}"}}',
             "values": f"0+{count}x20"} for le, count in zip(BUCKETS, per_bucket)]


def tracking_up(values: str, job: str = "mlflow-tracking", namespace: str = "mlflow") -> dict:
    return {"series": f'up{{namespace="{namespace}",job="{job}",instance="mlflow-tracking-7d9f:metrics"}}',
            "values": values}


def rule_tests(plan_stack_dir: Path) -> list[dict]:
    """Scenarios over a 1-minute scrape: a failing challenger (only its track fires; the champion's many 4xx do
    not), a slow challenger, a tracking pod whose scrape fails, and one that is gone (no `up` at all)."""
    by_policy = {c.policy: c for c in plan_conditions(plan_stack_dir)}

    def fired(policy: str, **labels: str) -> dict:
        condition = by_policy[policy]
        return {"exp_labels": {"policy": policy, "enabled": str(condition.enabled).lower(), **labels},
                "exp_annotations": {"display_name": condition.display_name}}

    def alert(policy: str, minute: int, *alerts: dict) -> dict:
        return {"eval_time": f"{minute}m", "alertname": policy, "exp_alerts": list(alerts)}

    return [
        {"interval": "1m",
         "input_series": [counter("200", "champion", 100), counter("404", "champion", 400),
                          counter("500", "champion", 0), counter("200", "challenger", 50),
                          counter("500", "challenger", 10)],
         "alert_rule_test": [alert("serving-errors", 3),  # above 5% since minute 1, not yet for 5m
                             alert("serving-errors", 10, fired("serving-errors", track="challenger"))]},
        {"interval": "1m",
         "input_series": [*histogram("champion", (100, 100, 100, 100)), *histogram("challenger", (0, 0, 100, 100))],
         "alert_rule_test": [alert("serving-latency", 3),
                             alert("serving-latency", 10, fired("serving-latency", track="challenger"))]},
        {"interval": "1m",
         "input_series": [tracking_up("1x4 0x10")],
         "alert_rule_test": [alert("tracking-down", 4), alert("tracking-down", 7),  # down since 5m, for 3m
                             alert("tracking-down", 9, fired("tracking-down"))]},
        {"interval": "1m",
         "input_series": [tracking_up("1x10", job="mlflow-serving", namespace="mlflow-serving")],
         "alert_rule_test": [alert("tracking-down", 4, fired("tracking-down"))]},
        {"interval": "1m",
         "input_series": [tracking_up("1x10")],
         "alert_rule_test": [alert("tracking-down", 9)]},
    ]


def run_rule_tests(directory: Path, rules: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    path = directory / "rules_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    return promtool("test", "rules", str(path))


def test_each_policy_fires_when_it_should_and_only_then(plan_stack_dir, tmp_path):
    tested = run_rule_tests(tmp_path, write_rules(tmp_path, plan_stack_dir), rule_tests(plan_stack_dir))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("broken, wrong", [
    ("mlflow_serving_requests_total{", "mlflow_serving_request_total{"),  # a typo'd metric selects nothing
    ("> 0.05", "> 0.5"),  # a threshold ten times too high
    ('status=~"5.."', 'status=~"[45].."'),  # 4xx counted as failures
])
def test_a_broken_copy_of_the_rules_fails_the_same_test(tmp_path, broken, wrong):
    plan_stack_dir = ROOT / "plan" / "dev"
    rules = write_rules(tmp_path, plan_stack_dir)
    assert broken in rules.read_text()
    rules.write_text(rules.read_text().replace(broken, wrong))
    tested = run_rule_tests(tmp_path, rules, rule_tests(plan_stack_dir))
    assert tested.returncode != 0 and "serving-errors" in tested.stdout + tested.stderr, tested


def test_targets_carry_the_labels_managed_prometheus_gives_them(challenger_plan):
    manifests = Manifests.load("dev", challenger_plan.parent)
    endpoints = {(e.job, e.port): e for e in scrape_endpoints(manifests)}
    tracking = manifests.one("Deployment", component="tracking")
    serving = [d for d in manifests.all("Deployment") if d["metadata"]["namespace"] == "mlflow-serving"]
    pods = [LocalPod(tracking, "mlflow-tracking-0", {"mlflow": 5001, "metrics-exporter": 5002}),
            *(LocalPod(d, f"{d['metadata']['name']}-0", {"serving": 6000 + i}) for i, d in enumerate(serving))]
    [exporter] = file_sd_targets(endpoints[("mlflow-tracking", "metrics")], pods)
    assert exporter == {"targets": ["127.0.0.1:5002"], "labels": {
        "namespace": "mlflow", "instance": "mlflow-tracking-0:metrics", "container": "metrics-exporter",
        "pod": "mlflow-tracking-0", "top_level_controller_name": "mlflow-tracking",
        "top_level_controller_type": "Deployment"}}
    assert file_sd_targets(endpoints[("mlflow-tracking", "proxy-http")], pods) == []  # Postgres stands in for it
    tracks = {t["labels"]["track"]: t["labels"]["pod"] for job in ("mlflow-serving", "mlflow-serving-challenger")
              for t in file_sd_targets(endpoints[(job, "http")], pods)}
    assert tracks == {"champion": "mlflow-serving-0", "challenger": "mlflow-serving-challenger-0"}


def test_an_alertmanager_post_is_one_alert_notification_per_alert():
    payload = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "serving-errors", "track": "challenger"},
         "annotations": {"display_name": "MLflow dev: serving 5xx above 5%"}, "startsAt": "t0", "endsAt": "t1"},
        {"status": "resolved", "labels": {"alertname": "tracking-down"}, "annotations": {}}]}
    entries = alert_notifications(payload)
    assert [(e["kind"], e["alert"], e["status"]) for e in entries] == [
        (ALERT, "serving-errors", "firing"), (ALERT, "tracking-down", "resolved")]
    assert entries[0]["labels"]["track"] == "challenger"


def test_missing_binaries_are_named_with_how_to_install_them(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LocalPlatformError, match=re.escape(f"prometheus is not installed: {INSTALL_HINT}")):
        find_binary("prometheus")
