"""Cloud Monitoring's PromQL alert policies on `make local`: Prometheus evaluates them, Alertmanager
sends what fires (and resolves) to the recording sink's webhook (tools/local/notifications.py).

What is rehearsed is what ships: the rules come from the rendered plan (plan/<stack>/resources.yaml,
each `conditionPrometheusQueryLanguage`), the scrape jobs from the rendered PodMonitorings
(plan/<stack>/k8s/), labelled as Managed Service for Prometheus labels its targets
(GoogleCloudPlatform/prometheus-engine, pkg/operator/apis/monitoring/v1/pod_config.go):
`job` = the PodMonitoring's name, `namespace` always, `instance` = `<pod>:<port name>`, the
`targetLabels.metadata` labels (the pinned CRD's default when unset) and `targetLabels.fromPod` mappings.

Cloud Monitoring keeps one rule group per condition: `evaluationInterval` is the group's interval,
`duration` the rule's `for`. `time_scale` (< 1 in tests) shortens every interval and `for` alike;
the queries' own range windows ([5m]) are left as shipped.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import urlencode

import yaml

from tools.local.manifests import Manifests, pod_spec
from tools.local.processes import LocalPlatformError, ManagedProcess, free_port, http, http_ok

ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
PROMQL_CONDITION = "conditionPrometheusQueryLanguage"
POD_MONITORING = "PodMonitoring"
POD_MONITORING_CRD = Path(__file__).resolve().parents[1] / "schemas" / "crds" / "monitoring.googleapis.com_v1_PodMonitoring.json"
PROMETHEUS, ALERTMANAGER, PROMTOOL = "prometheus", "prometheus-alertmanager", "promtool"
INSTALL_HINT = "`apt-get install prometheus prometheus-alertmanager` (.ci/run installs them)"
MAX_STARTUP_SECONDS = 60.0


def find_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalPlatformError(f"{name} is not installed: {INSTALL_HINT}")
    return path


def seconds(duration: str) -> float:
    """A protobuf Duration as the provider renders it ("300s")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    if not match:
        raise ValueError(f"duration {duration!r}: expected seconds like '300s'")
    return float(match[1])


def prometheus_duration(value: float) -> str:
    milliseconds = max(1, round(value * 1000))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


@dataclass(frozen=True)
class AlertCondition:
    """One PromQL condition of an alert policy."""

    policy: str  # the resource name without its component's prefix: serving-errors
    display_name: str
    query: str
    duration_seconds: float
    interval_seconds: float
    enabled: bool


def alert_conditions(resources: Iterable[dict]) -> list[AlertCondition]:
    """Every PromQL condition of every alert policy of a rendered plan's resources."""
    found = []
    for resource in resources:
        if resource["type"] != ALERT_POLICY:
            continue
        inputs = resource["inputs"]
        policy = resource["name"].removeprefix(f"{resource.get('parent', '')}-")
        for condition in inputs["conditions"]:
            promql = condition.get(PROMQL_CONDITION)
            if promql:
                found.append(AlertCondition(policy, inputs["displayName"], promql["query"],
                                            seconds(promql.get("duration", "0s")),
                                            seconds(promql.get("evaluationInterval", "30s")),
                                            bool(inputs.get("enabled", True))))
    return found


def plan_conditions(plan_stack_dir: Path) -> list[AlertCondition]:
    return alert_conditions(yaml.safe_load((plan_stack_dir / "resources.yaml").read_text()))


def rules_document(conditions: Iterable[AlertCondition], time_scale: float = 1.0) -> dict:
    """A Prometheus rules file: one group per condition (as Cloud Monitoring embeds the group in it).
    `enabled` says whether the policy notifies on GCP (a disabled one opens no incident there)."""
    return {"groups": [{
        "name": condition.policy,
        "interval": prometheus_duration(condition.interval_seconds * time_scale),
        "rules": [{"alert": condition.policy, "expr": condition.query,
                   "for": prometheus_duration(condition.duration_seconds * time_scale),
                   "labels": {"policy": condition.policy, "enabled": str(condition.enabled).lower()},
                   "annotations": {"display_name": condition.display_name}}],
    } for condition in conditions]}


@dataclass(frozen=True)
class ScrapeEndpoint:
    """One endpoint of a rendered PodMonitoring: a Prometheus scrape job of its own."""

    job: str
    namespace: str
    port: str
    path: str
    interval_seconds: float
    match_labels: tuple[tuple[str, str], ...]
    metadata: tuple[str, ...]
    from_pod: tuple[tuple[str, str], ...]

    @property
    def job_name(self) -> str:
        return f"{POD_MONITORING}/{self.namespace}/{self.job}/{self.port}"

    @property
    def targets_file(self) -> str:
        return f"{self.namespace}-{self.job}-{self.port}.json"


def default_metadata_labels() -> tuple[str, ...]:
    """The metadata labels a PodMonitoring gets when `targetLabels.metadata` is unset: the pinned CRD's default."""
    schema = json.loads(POD_MONITORING_CRD.read_text())
    return tuple(schema["properties"]["spec"]["properties"]["targetLabels"]["properties"]["metadata"]["default"])


def scrape_endpoints(manifests: Manifests) -> list[ScrapeEndpoint]:
    found = []
    default_metadata = default_metadata_labels()
    for monitoring in manifests.all(POD_MONITORING):
        spec, meta = monitoring["spec"], monitoring["metadata"]
        if set(spec["selector"]) - {"matchLabels"}:
            raise LocalPlatformError(f"PodMonitoring {meta['name']}: only selector.matchLabels runs locally")
        target_labels = spec.get("targetLabels", {})
        for endpoint in spec["endpoints"]:
            found.append(ScrapeEndpoint(
                meta["name"], meta["namespace"], str(endpoint["port"]), endpoint.get("path", "/metrics"),
                seconds(endpoint.get("interval", "60s")), tuple(sorted(spec["selector"]["matchLabels"].items())),
                tuple(target_labels.get("metadata", default_metadata)),
                tuple((m["from"], m.get("to", m["from"])) for m in target_labels.get("fromPod", []))))
    return found


@dataclass(frozen=True)
class LocalPod:
    """A pod of the local platform: its workload's manifest, its name, and the local port of each of its
    containers that runs here (the Cloud SQL proxy does not: Postgres stands in for it)."""

    workload: dict
    name: str
    ports: dict[str, int]


def file_sd_targets(endpoint: ScrapeEndpoint, pods: Iterable[LocalPod]) -> list[dict]:
    """The targets Managed Prometheus would scrape for `endpoint` among `pods`, with its target labels."""
    targets = []
    for pod in pods:
        template = pod.workload["spec"]["template"]["metadata"]
        labels = template.get("labels", {})
        if pod.workload["metadata"]["namespace"] != endpoint.namespace or any(
                labels.get(key) != value for key, value in endpoint.match_labels):
            continue
        spec = pod_spec(pod.workload)
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            named = {port.get("name") for port in container.get("ports", [])}
            if endpoint.port not in named or container["name"] not in pod.ports:
                continue
            metadata = {"pod": pod.name, "container": container["name"],
                        "top_level_controller_name": pod.workload["metadata"]["name"],
                        "top_level_controller_type": pod.workload["kind"]}
            target_labels = {"namespace": endpoint.namespace, "instance": f"{pod.name}:{endpoint.port}",
                             **{key: metadata[key] for key in endpoint.metadata if key in metadata},
                             **{to: labels[source] for source, to in endpoint.from_pod if source in labels}}
            targets.append({"targets": [f"127.0.0.1:{pod.ports[container['name']]}"], "labels": target_labels})
    return targets


def prometheus_config(endpoints: Iterable[ScrapeEndpoint], targets_dir: Path, rules_path: Path,
                      alertmanager_port: int, time_scale: float = 1.0) -> dict:
    return {
        "rule_files": [str(rules_path)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [{
            "job_name": endpoint.job_name,
            "scrape_interval": prometheus_duration(endpoint.interval_seconds * time_scale),
            "metrics_path": endpoint.path,
            # Pods restart on new ports: the platform rewrites these files, Prometheus rereads them.
            "file_sd_configs": [{"files": [str(targets_dir / endpoint.targets_file)], "refresh_interval": "1s"}],
            "relabel_configs": [{"action": "replace", "target_label": "job", "replacement": endpoint.job}],
        } for endpoint in endpoints],
    }


def alertmanager_config(webhook_url: str, time_scale: float = 1.0) -> dict:
    """Every alert its own notification, resolutions too, as each incident notifies its channels."""
    return {
        "route": {"receiver": "recording-sink", "group_by": ["..."], "group_wait": "1s",
                  "group_interval": prometheus_duration(60 * time_scale), "repeat_interval": "24h"},
        "receivers": [{"name": "recording-sink",
                       "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


class LocalAlerting:
    """Prometheus and Alertmanager beside the pods, in `directory`, their logs in `logs_dir`."""

    def __init__(self, directory: Path, logs_dir: Path, manifests: Manifests, webhook_url: str,
                 redact: Callable[[str], str], time_scale: float = 1.0):
        self.binaries = {name: find_binary(name) for name in (PROMETHEUS, ALERTMANAGER)}
        self.directory, self.logs_dir, self.redact = directory, logs_dir, redact
        self.conditions = plan_conditions(manifests.directory.parent)
        self.endpoints = scrape_endpoints(manifests)
        self.webhook_url, self.time_scale = webhook_url, time_scale
        self.prometheus_port, self.alertmanager_port = free_port(), free_port()
        self.prometheus: Optional[ManagedProcess] = None
        self.alertmanager: Optional[ManagedProcess] = None

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def targets_dir(self) -> Path:
        return self.directory / "targets"

    def start(self, pods: Iterable[LocalPod]) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.targets_dir.mkdir(parents=True)
        self.update_targets(pods)
        rules = self.directory / "rules.yml"
        rules.write_text(yaml.safe_dump(rules_document(self.conditions, self.time_scale), sort_keys=False))
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(
            self.endpoints, self.targets_dir, rules, self.alertmanager_port, self.time_scale), sort_keys=False))
        (self.directory / "alertmanager.yml").write_text(
            yaml.safe_dump(alertmanager_config(self.webhook_url, self.time_scale), sort_keys=False))
        self.alertmanager = self._start(ALERTMANAGER, self.alertmanager_port, [
            f"--config.file={self.directory / 'alertmanager.yml'}", f"--storage.path={self.directory / 'alertmanager'}",
            "--cluster.listen-address="])  # no gossip port: one Alertmanager
        self.prometheus = self._start(PROMETHEUS, self.prometheus_port, [
            f"--config.file={self.directory / 'prometheus.yml'}", f"--storage.tsdb.path={self.directory / 'tsdb'}"])

    def _start(self, name: str, port: int, flags: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, [self.binaries[name], *flags, f"--web.listen-address=127.0.0.1:{port}"],
                                 env={"PATH": "/usr/bin:/bin"}, cwd=self.directory,
                                 log_path=self.logs_dir / f"{name}.log", redact=self.redact)
        process.start()
        process.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), MAX_STARTUP_SECONDS,
                           "/-/ready answering 200")
        return process

    def update_targets(self, pods: Iterable[LocalPod]) -> None:
        """Each job's targets file, replaced whole (a rename) so Prometheus never reads half of one."""
        pods = list(pods)
        for endpoint in self.endpoints:
            path = self.targets_dir / endpoint.targets_file
            staged = path.with_suffix(".tmp")
            staged.write_text(json.dumps(file_sd_targets(endpoint, pods), indent=1))
            staged.replace(path)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        response = http("GET", f"{self.prometheus_url}/api/v1/query?{urlencode({'query': expr})}")
        if response.status != 200:
            raise LocalPlatformError(f"prometheus query {expr!r}: HTTP {response.status} {response.body[:300]!r}")
        return response.json()["data"]["result"]

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.prometheus, self.alertmanager) if p is not None]

    def stop(self) -> None:
        for process in (self.prometheus, self.alertmanager):
            if process is not None:
                process.stop()

