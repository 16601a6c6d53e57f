"""Dashboards and alerts over the platform's metrics (Managed Prometheus and Cloud SQL / GCS)."""

from __future__ import annotations

import functools

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from infra.naming import child_options
from infra.settings import MonitoringSettings

DASHBOARD_TEMPLATE = Path(__file__).resolve().parent / "dashboard.json"
# The log lines the pods print for notifications and drift scores (mlflow_image/mlflow_notify, mlflow_drift).
NOTIFY_MESSAGE = "mlflow.notify"
DRIFT_SCORE_MESSAGE = "mlflow.drift.score"
# A log-match policy must limit its notifications (notificationRateLimit, required for LogMatch conditions:
# Monitoring API, AlertStrategy); five minutes is the shortest period log-based alerting accepts. Events of
# one policy closer together than that reach people as one notification; the console lists each incident.
NOTIFY_RATE_LIMIT = "300s"
NOTIFY_AUTO_CLOSE = "1800s"
# Bucket bounds of the PSI distribution: the conventional 0.1 and 0.2 and the stack's threshold, so a score
# in the bucket above the threshold never reads, interpolated, as one below it.
PSI_BOUNDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# A policy on a log-based metric created moments before it is refused with 404 "Cannot find metric(s)" for up
# to ten minutes (hashicorp/terraform-provider-google#11102). The wait runs once, beside the cluster's creation.
METRIC_PROPAGATION = "10m"


def notify_filter() -> str:
    """Every notification line, from any pod or from `make promote` (which writes to the project's log)."""
    return f'jsonPayload.message="{NOTIFY_MESSAGE}"'


def drift_score_filter(namespace: str) -> str:
    return (f'resource.type="k8s_container" AND resource.labels.namespace_name="{namespace}" AND '
            f'jsonPayload.message="{DRIFT_SCORE_MESSAGE}"')


def psi_bounds(threshold: float) -> list[float]:
    return sorted(set(PSI_BOUNDS) | {threshold})


def render_dashboard(*, environment: str, tracking_namespace: str, serving_namespace: str, bucket: str,
                     serving_min_replicas: int, serving_max_replicas: int,
                     template: Path = DASHBOARD_TEMPLATE) -> str:
    """The dashboard JSON with this stack's names filled in, numeric zeros left out; fails on any unfilled
    placeholder."""
    text = string.Template(template.read_text()).substitute(
        environment=environment, tracking_namespace=tracking_namespace, serving_namespace=serving_namespace,
        bucket=bucket, serving_min_replicas=serving_min_replicas, serving_max_replicas=serving_max_replicas)
    return json.dumps(without_zero_numbers(json.loads(text)), indent=2, sort_keys=True)


def without_zero_numbers(node: Any) -> Any:
    """`node` without the fields whose value is the number 0. The Monitoring API returns a dashboard
    without its zero-valued scalar fields (proto3 JSON: a tile at xPos/yPos 0, a threshold of 0), so
    `gcp.monitoring.Dashboard` would show a difference on every `up` (hashicorp/terraform-provider-google#7242).
    Leaving them out means the same (0 is their default)."""
    if isinstance(node, dict):
        return {key: without_zero_numbers(value) for key, value in node.items()
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != 0}
    if isinstance(node, list):
        return [without_zero_numbers(value) for value in node]
    return node


# Serving alerts are per track (the `track` label PodMonitoring copies from the pods): a challenger failing
# its share of traffic alerts on its own instead of being diluted by the champion's successes.
def serving_p99_query(namespace: str, threshold_ms: int) -> str:
    return (f'histogram_quantile(0.99, sum by (track, le) (rate(mlflow_serving_request_duration_seconds_bucket'
            f'{{namespace="{namespace}",path="/invocations"}}[5m]))) > {threshold_ms / 1000:g}')


def serving_error_ratio_query(namespace: str, percent: int) -> str:
    """Failed predictions only: a pod waiting for its model answers the readiness probe's /ping with 503."""
    selector = f'namespace="{namespace}",path="/invocations"'
    return (f'sum by (track) (rate(mlflow_serving_requests_total{{{selector},status=~"5.."}}[5m])) / '
            f'sum by (track) (rate(mlflow_serving_requests_total{{{selector}}}[5m])) > {percent / 100:g}')


def tracking_down_query(namespace: str) -> str:
    """No tracking pod answers its scrape (or none is scraped at all)."""
    selector = f'namespace="{namespace}",job="mlflow-tracking"'
    return f'(sum(up{{{selector}}}) or vector(0)) < 1'


@dataclass(frozen=True)
class MonitoringArgs:
    project: str
    """GCP project."""
    environment: str
    """dev or prod: in titles and labels."""
    tracking_namespace: str
    """Namespace of the tracking pods."""
    serving_namespace: str
    """Namespace of the serving pods."""
    bucket: pulumi.Input[str]
    """Artifact bucket (its output), for its size chart."""
    serving_min_replicas: int
    """HPA minimum, drawn on the replicas chart."""
    serving_max_replicas: int
    """HPA maximum, drawn on the replicas chart."""
    labels: dict[str, str]
    """User labels of alert policies and channels."""
    settings: MonitoringSettings
    """Whether alerts notify, whom, and their thresholds."""
    metric_prefix: str = "mlflow"
    """Prefix of the log-based metric's name (the stack's name prefix)."""
    drift: bool = False
    """Whether the drift job runs (serving with its payload log): its metric and alert policy."""
    chat_channel: Optional[pulumi.Input[str]] = None
    """The chat relay's `pubsub` channel (infra/chat.py), notified beside the e-mail channels."""


class Monitoring(pulumi.ComponentResource):
    """One dashboard, the alert policies (workloads, database, notifications, drift) and an e-mail channel per
    address of `monitoring.notify.emails`, on every policy beside the chat channel if any."""

    dashboard_id: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:monitoring:Monitoring", name, None, opts)
        child = child_options(self, opts)
        dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=args.project,
            dashboard_json=pulumi.Output.from_input(args.bucket).apply(lambda bucket: render_dashboard(
                environment=args.environment, tracking_namespace=args.tracking_namespace,
                serving_namespace=args.serving_namespace, bucket=bucket,
                serving_min_replicas=args.serving_min_replicas, serving_max_replicas=args.serving_max_replicas)),
            opts=child,
        )
        channels = [gcp.monitoring.NotificationChannel(
            f"{name}-email-{index}", project=args.project, type="email",
            display_name=f"MLflow {args.environment}: {address}", labels={"email_address": address},
            user_labels=args.labels,
            # the first keeps the single channel of stacks set with `alertEmail`, rather than replacing it
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                aliases=[pulumi.Alias(name=f"{name}-email")] if index == 0 else None))).id
            for index, address in enumerate(args.settings.notify.emails)]
        if args.chat_channel is not None:
            channels.append(args.chat_channel)
        alert = functools.partial(self._alert, name, args, channels, child)
        for key, title, query, duration, runbook in promql_alerts(args):
            alert(key, title, "ERROR" if args.environment == "prod" else "WARNING",
                  gcp.monitoring.AlertPolicyConditionArgs(
                      display_name=title,
                      condition_prometheus_query_language=gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                          query=query, duration=duration, evaluation_interval="60s")),
                  runbook)
        alert("db-storage", f"Cloud SQL storage above {args.settings.db_storage_percent}%", "WARNING",
              gcp.monitoring.AlertPolicyConditionArgs(
                  display_name="Cloud SQL disk utilisation",
                  condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                      filter='resource.type = "cloudsql_database" AND '
                             'metric.type = "cloudsql.googleapis.com/database/disk/utilization"',
                      comparison="COMPARISON_GT",
                      threshold_value=args.settings.db_storage_percent / 100,
                      duration="600s",
                      aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                          alignment_period="300s", per_series_aligner="ALIGN_MEAN")],
                  )),
              "Storage grows automatically, but check what fills it (runs? logged metrics?) and the "
              "growth rate; see README, Operating it.")
        alert("notifications", "platform event", "WARNING",
              gcp.monitoring.AlertPolicyConditionArgs(
                  display_name="a notification line",
                  condition_matched_log=gcp.monitoring.AlertPolicyConditionConditionMatchedLogArgs(
                      filter=notify_filter(),
                      label_extractors={key: f"EXTRACT(jsonPayload.{key})" for key in ("kind", "text", "model")})),
              "A platform event: a version registered, an alias moved, a promotion refused or rolled back. "
              "The labels say which (`kind`, `text`); see README, Notifications.",
              gcp.monitoring.AlertPolicyAlertStrategyArgs(
                  notification_rate_limit=gcp.monitoring.AlertPolicyAlertStrategyNotificationRateLimitArgs(
                      period=NOTIFY_RATE_LIMIT),
                  auto_close=NOTIFY_AUTO_CLOSE))
        if args.drift:
            self._drift(name, args, alert, child)
        self.dashboard_id = dashboard.id
        self.register_outputs({"dashboard_id": self.dashboard_id})

    @staticmethod
    def _drift(name: str, args: MonitoringArgs, alert: Any, child: pulumi.ResourceOptions) -> None:
        """The drift job's scores as a log-based metric (one distribution per model, version and column) and
        the policy that fires when one crosses `monitoring.drift.psiThreshold`. A log-based metric needs no
        role for the job: it only prints its scores."""
        threshold = args.settings.drift.psi_threshold
        metric = gcp.logging.Metric(
            f"{name}-drift-psi",
            project=args.project,
            name=f"{args.metric_prefix}-drift-psi",
            description="PSI of each served column against the model version's training profile (the drift job).",
            filter=drift_score_filter(args.tracking_namespace),
            value_extractor="EXTRACT(jsonPayload.psi)",
            label_extractors={key: f"EXTRACT(jsonPayload.{key})" for key in ("model", "version", "column")},
            metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                metric_kind="DELTA", value_type="DISTRIBUTION", unit="1",
                labels=[gcp.logging.MetricMetricDescriptorLabelArgs(key=key, value_type="STRING")
                        for key in ("model", "version", "column")]),
            bucket_options=gcp.logging.MetricBucketOptionsArgs(
                explicit_buckets=gcp.logging.MetricBucketOptionsExplicitBucketsArgs(bounds=psi_bounds(threshold))),
            opts=child)
        # Triggered by the metric's id only: created with the metric, not again on every `up`.
        metric_visible = pulumiverse_time.Sleep(
            f"{name}-drift-psi-visible", create_duration=METRIC_PROPAGATION, triggers={"metric": metric.id},
            opts=child)
        alert("drift", f"served data drifted (PSI above {threshold:g})", "WARNING",
              gcp.monitoring.AlertPolicyConditionArgs(
                  display_name="a column's PSI above the threshold",
                  condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                      filter=metric.name.apply(lambda metric_name: (
                          f'resource.type = "k8s_container" AND '
                          f'metric.type = "logging.googleapis.com/user/{metric_name}"')),
                      comparison="COMPARISON_GT",
                      threshold_value=threshold,
                      duration="0s",
                      aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                          alignment_period="3600s", per_series_aligner="ALIGN_PERCENTILE_99",
                          group_by_fields=["metric.label.model", "metric.label.version", "metric.label.column"],
                          cross_series_reducer="REDUCE_MAX")],
                  )),
              "A column served to a model version no longer looks like its training data. The drift job's runs "
              "in the MLflow experiment `platform-monitoring` show which column and since when; retrain on recent "
              "data, or fix the client sending it. See README, Drift.", after=metric_visible)

    def _alert(self, name: str, args: MonitoringArgs, channels: list, child: pulumi.ResourceOptions, key: str,
               title: str, severity: str, condition: gcp.monitoring.AlertPolicyConditionArgs, runbook: str,
               strategy: Optional[gcp.monitoring.AlertPolicyAlertStrategyArgs] = None,
               after: Optional[pulumi.Resource] = None) -> None:
        gcp.monitoring.AlertPolicy(
            f"{name}-{key}",
            project=args.project,
            display_name=f"MLflow {args.environment}: {title}",
            combiner="OR",
            enabled=args.settings.alerts_enabled,
            severity=severity,
            conditions=[condition],
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(content=runbook, mime_type="text/markdown"),
            notification_channels=channels,
            alert_strategy=strategy,
            user_labels=args.labels,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[after] if after else [])),
        )


def promql_alerts(args: MonitoringArgs) -> list[tuple[str, str, str, str, str]]:
    """(key, title, PromQL query, duration, runbook) of each alert on the workloads' metrics."""
    return [
        ("serving-latency", f"serving p99 latency above {args.settings.serving_p99_ms} ms",
         serving_p99_query(args.serving_namespace, args.settings.serving_p99_ms), "300s",
         "Serving is slow (the incident names the track). Check the replicas chart (at the HPA maximum? raise `serving.maxReplicas`) "
         "and CPU throttling; see README, Operating it."),
        ("serving-errors", f"serving 5xx above {args.settings.serving_error_percent}%",
         serving_error_ratio_query(args.serving_namespace, args.settings.serving_error_percent), "300s",
         "Serving fails requests (the incident names the track). `kubectl -n mlflow-serving logs "
         "deploy/mlflow-serving` (or `deploy/mlflow-serving-challenger`); a bad model version? Roll back the "
         "alias, or send the challenger no traffic; see README, Operating it."),
        ("tracking-down", "tracking server unavailable", tracking_down_query(args.tracking_namespace),
         "180s", "No tracking pod answers. Check the Deployment, the cloud-sql-proxy sidecar logs and "
         "Cloud SQL; see README, Operating it."),
    ]
