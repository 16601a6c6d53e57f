"""Dashboards and alerts: valid, about the metrics the pods really export, thresholds from config."""

from __future__ import annotations

import json
import re

import pytest

from infra.monitoring import METRIC_PROPAGATION, render_dashboard, serving_error_ratio_query, serving_p99_query
from tools.offline.dependencies import waits_for
from tools.offline.stack import ROOT

# What the exporters of this platform produce (tracking: prometheus-flask-exporter via
# --expose-prometheus; serving: mlflow_serving.metrics; proxy: --prometheus; GMP: up).
EXPORTED = {"mlflow_http_request_total", "mlflow_http_request_duration_seconds_bucket",
            "mlflow_serving_requests_total", "mlflow_serving_request_duration_seconds_bucket",
            "mlflow_serving_requests_in_flight", "cloudsqlconn_dial_failure_count", "up"}
PROMQL_FUNCTIONS = {"sum", "rate", "histogram_quantile", "clamp_min", "count", "by", "le", "or", "vector"}


def dashboard(stack: str) -> dict:
    return json.loads((ROOT / "plan" / stack / "monitoring" / "mlflow-monitoring-dashboard.json").read_text())


def queries(document: dict) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            found.extend(v for k, v in node.items() if k == "prometheusQuery")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(document)
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dashboard_is_rendered_into_the_plan_with_every_chart(stack):
    document = dashboard(stack)
    titles = [tile["widget"]["title"] for tile in document["mosaicLayout"]["tiles"]]
    for needle in ("Tracking: requests/s", "Tracking: error ratio", "Tracking: latency p50 / p99",
                   "Serving: requests/s", "Serving: error ratio", "Serving: latency p50 / p99",
                   "Serving: replicas vs HPA bounds", "Cloud SQL proxy: connection errors", "Cloud SQL: CPU",
                   "Cloud SQL: storage", "Cloud SQL: connections", "Artifact bucket"):
        assert any(title.startswith(needle) for title in titles), needle
    assert f"({stack})" in document["displayName"]


def test_dashboard_queries_use_only_exported_metrics():
    used = set()
    for query in queries(dashboard("prod")):
        assert query.count("(") == query.count(")"), query
        used |= {name for name in re.findall(r"\b([a-z_]+)\s*(?=\{|\(|\[)", query)} - PROMQL_FUNCTIONS
    assert used <= EXPORTED, used - EXPORTED
    assert {"mlflow_http_request_total", "mlflow_serving_requests_total"} <= used


def test_dashboard_draws_the_hpa_bounds_of_the_stack():
    thresholds = next(tile["widget"]["xyChart"]["thresholds"] for tile in dashboard("prod")["mosaicLayout"]["tiles"]
                      if tile["widget"]["title"].startswith("Serving: replicas"))
    assert [t["value"] for t in thresholds] == [2, 10]


def numeric_zeros(node, path="") -> list[str]:
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in numeric_zeros(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [found for i, value in enumerate(node) for found in numeric_zeros(value, f"{path}[{i}]")]
    return [path] if not isinstance(node, bool) and isinstance(node, (int, float)) and node == 0 else []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dashboard_leaves_out_the_zeros_the_api_leaves_out(stack):
    # The Monitoring API omits zero-valued fields (a tile at xPos/yPos 0): declaring them would show a
    # difference on every `up` (hashicorp/terraform-provider-google#7242).
    document = dashboard(stack)
    assert numeric_zeros(document) == []
    origin = [tile for tile in document["mosaicLayout"]["tiles"] if "xPos" not in tile and "yPos" not in tile]
    assert [tile["widget"]["title"] for tile in origin] == ["Tracking: requests/s by status"]


def test_a_zero_threshold_is_left_out_and_the_rest_kept():
    document = json.loads(render_dashboard(environment="dev", tracking_namespace="a", serving_namespace="b",
                                           bucket="c", serving_min_replicas=0, serving_max_replicas=3))
    thresholds = next(tile["widget"]["xyChart"]["thresholds"] for tile in document["mosaicLayout"]["tiles"]
                      if tile["widget"]["title"].startswith("Serving: replicas"))
    assert thresholds == [{"label": "HPA min"}, {"label": "HPA max", "value": 3}]
    assert numeric_zeros(document) == []


def test_unfilled_placeholder_fails(tmp_path):
    template = tmp_path / "d.json"
    template.write_text('{"displayName": "${nope}"}')
    with pytest.raises(KeyError):
        render_dashboard(environment="dev", tracking_namespace="a", serving_namespace="b", bucket="c",
                         serving_min_replicas=1, serving_max_replicas=2, template=template)


def test_alert_queries_carry_the_thresholds():
    assert serving_p99_query("mlflow-serving", 250).endswith("> 0.25")
    assert serving_error_ratio_query("mlflow-serving", 5).endswith("> 0.05")


def test_serving_errors_count_predictions_not_the_probes_of_pods_waiting_for_a_model(stack_runs):
    # a pod waiting for its first model answers the kubelet's /ping with 503 every few seconds
    query = serving_error_ratio_query("mlflow-serving", 5)
    assert query.count('path="/invocations"') == 2
    tile = next(tile for tile in dashboard("prod")["mosaicLayout"]["tiles"]
                if tile["widget"]["title"] == "Serving: error ratio (5xx) by track")
    promql = tile["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["prometheusQuery"]
    assert promql.count('path="/invocations"') == 2


def test_serving_charts_and_alerts_show_each_track_on_its_own():
    """Champion and challenger side by side: every serving chart and alert groups by the `track` label."""
    tiles = [tile["widget"] for tile in dashboard("prod")["mosaicLayout"]["tiles"]
             if tile["widget"]["title"].startswith("Serving:")]
    for widget in tiles:
        for dataset in widget["xyChart"]["dataSets"]:
            query = dataset["timeSeriesQuery"]["prometheusQuery"]
            if "mlflow_serving_requests_in_flight" not in query:
                assert re.search(r"by \(track\b", query), (widget["title"], query)
    for query in (serving_p99_query("mlflow-serving", 250), serving_error_ratio_query("mlflow-serving", 5)):
        assert query.count("by (track") == query.count("sum"), query


def alerts(run) -> dict[str, dict]:
    return {r.name: r.inputs for r in run.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}


def test_prod_alerts_are_on_and_mail_the_on_call(stack_runs):
    run = stack_runs["prod"]
    policies = alerts(run)
    assert set(policies) == {f"mlflow-monitoring-{k}" for k in ("serving-latency", "serving-errors",
                                                                 "tracking-down", "db-storage", "notifications",
                                                                 "drift")}
    channel = run.named("mlflow-monitoring-email-0")
    assert channel.inputs["labels"] == {"email_address": "mlflow-oncall@example.com"}
    for name, policy in policies.items():
        # the mocks give every resource the id NAME-id; prod also posts to chat (tests/test_chat_stack.py)
        assert policy["enabled"] is True and policy["notificationChannels"] == [f"{channel.name}-id",
                                                                                 "mlflow-chat-channel-id"], name
        assert "README" in policy["documentation"]["content"]


def test_dev_alerts_are_declared_but_off(stack_runs):
    policies = alerts(stack_runs["dev"])
    assert len(policies) == 6 and not any(p["enabled"] for p in policies.values())
    assert stack_runs["dev"].of_type("gcp:monitoring/notificationChannel:NotificationChannel") == []


def test_every_address_gets_a_channel_on_every_policy(run_stack_with):
    run = run_stack_with("dev", {"monitoring.notify.emails": ["a@example.com", "b@example.com"]})
    channels = run.of_type("gcp:monitoring/notificationChannel:NotificationChannel")
    assert sorted(c.inputs["labels"]["email_address"] for c in channels) == ["a@example.com", "b@example.com"]
    for name, policy in alerts(run).items():
        assert sorted(policy["notificationChannels"]) == sorted(f"{c.name}-id" for c in channels), name


def test_platform_events_notify_through_a_rate_limited_log_match(stack_runs):
    policy = alerts(stack_runs["prod"])["mlflow-monitoring-notifications"]
    condition = policy["conditions"][0]["conditionMatchedLog"]
    assert condition["filter"] == 'jsonPayload.message="mlflow.notify"'
    assert condition["labelExtractors"]["kind"] == "EXTRACT(jsonPayload.kind)"
    # required for a log-match condition; five minutes is the shortest GCP accepts
    assert policy["alertStrategy"]["notificationRateLimit"]["period"] == "300s"


def test_thresholds_follow_config(run_stack_with):
    policies = alerts(run_stack_with("prod", {"monitoring.servingP99Ms": "100", "monitoring.dbStoragePercent": "70"}))
    latency = policies["mlflow-monitoring-serving-latency"]["conditions"][0]
    assert latency["conditionPrometheusQueryLanguage"]["query"].endswith("> 0.1")
    storage = policies["mlflow-monitoring-db-storage"]["conditions"][0]["conditionThreshold"]
    assert storage["thresholdValue"] == 0.7


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_drift_policy_waits_for_its_new_metric_to_be_visible(stack_runs, stack):
    # GCP refuses a policy on a log-based metric created moments before (terraform-provider-google#11102)
    run = stack_runs[stack]
    [metric] = run.of_type("gcp:logging/metric:Metric")
    [wait] = [w for w in run.of_type("time:index/sleep:Sleep") if w.name == "mlflow-monitoring-drift-psi-visible"]
    assert wait.inputs["createDuration"] == METRIC_PROPAGATION
    # triggered by the metric's id alone: waited for once, when the metric is created
    assert wait.inputs["triggers"] == {"metric": metric.state.get("id", f"{metric.name}-id")}
    assert metric.urn in wait.dependencies
    policy = run.named("mlflow-monitoring-drift")
    assert wait.urn in waits_for(run)[policy.urn]
