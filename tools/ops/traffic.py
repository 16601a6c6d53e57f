"""The challenger track on GKE (tools.ops.interfaces): the serving HTTPRoute's weights and mirror
filter, patched on the live route (as a promotion patches the rollout annotation), and each track's
numbers from Managed Service for Prometheus.

The route's rules are rewritten by the program's own builder (k8s.traffic.route_spec): `weight` to the
challenger's Service and the rest to the champion's, or a `RequestMirror` filter to the challenger. The numbers are
PromQL over the pods' own metrics (mlflow_image/mlflow_serving/metrics.py), told apart by the
`track` target label the PodMonitoring copies from the pods' TRACK_LABEL, through the Prometheus
HTTP API of Cloud Monitoring (`GET https://monitoring.googleapis.com/v1/projects/PROJECT/location/
global/prometheus/api/v1/query`, Application Default Credentials with the monitoring.read scope).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

from infra.settings import CanarySettings
from k8s.serving import CHALLENGER, CHAMPION, TRACK_METRIC_LABEL
from k8s.traffic import GATEWAY_GROUP, Backend, route_spec
from k8s.workload import SCRAPE_INTERVAL
from tools.ops.canary import Thresholds
from tools.ops.interfaces import RolloutError, TargetError, TrackStats
from tools.ops.lease import Lease, LeaseHeld
from tools.ops.scrape import LATENCY, REQUESTS, SCORING_PATH

GATEWAY_VERSION, HTTPROUTES = "v1", "httproutes"
# GKE's Gateway controller programs the load balancer some time after the patch returns; a step's window
# starts once it reports the new generation of the route Accepted with its backends resolved.
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")
ROUTE_PROGRAMMED_TIMEOUT, ROUTE_POLL_SECONDS = 300.0, 5.0
FIELD_MANAGER = "mlflow-ops"
LEASE_ANNOTATION = "mlflow.org/split-lease"
PROMETHEUS_API = "https://monitoring.googleapis.com/v1/projects/{project}/location/global/prometheus/api/v1/query"
MONITORING_READ = "https://www.googleapis.com/auth/monitoring.read"
# Managed Prometheus samples each pod once per PodMonitoring interval: over a window shorter than two
# scrapes a track's counters may have one sample or none, and `increase` says nothing.
MIN_WINDOW_SECONDS = 2 * int(SCRAPE_INTERVAL.removesuffix("s"))


def route_rules(spec: dict, champion_service: str, weight: int, mirror: bool) -> list[dict]:
    """The rules of the live route's `spec` as k8s.traffic.route_spec writes them for `weight` and
    `mirror` (what `pulumi up` would write for those settings): the champion is `champion_service`,
    the challenger the route's other backendRef."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight={weight}: allowed 0..100")
    refs = [ref for rule in spec.get("rules", []) for ref in rule.get("backendRefs", [])]
    champions = [ref for ref in refs if ref["name"] == champion_service]
    challengers = [ref for ref in refs if ref["name"] != champion_service]
    if len(champions) != 1 or len(challengers) != 1:
        raise RolloutError(f"the serving HTTPRoute does not route to the champion Service {champion_service!r} and "
                           "one challenger Service: was it declared with serving.challenger?")
    gateway = spec["parentRefs"][0]["name"]
    backend = lambda ref: Backend(ref["name"], ref["port"])  # noqa: E731
    return route_spec(gateway, backend(champions[0]), backend(challengers[0]), weight, mirror)["rules"]


def programmed(route: dict) -> bool:
    """Every parent Gateway reports the route's current generation Accepted and its backends resolved."""
    generation = route["metadata"].get("generation")
    parents = route.get("status", {}).get("parents", [])
    return bool(parents) and all(
        any(condition["type"] == kind and condition["status"] == "True"
            and condition.get("observedGeneration") == generation for condition in parent.get("conditions", []))
        for parent in parents for kind in ROUTE_CONDITIONS)


class HttpRouteRouter:
    """The serving HTTPRoute `namespace/name` through `api` (a kubernetes CustomObjectsApi)."""

    def __init__(self, api, namespace: str, name: str, champion_service: str, *,
                 timeout: float = ROUTE_PROGRAMMED_TIMEOUT, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.api, self.namespace, self.name, self.champion_service = api, namespace, name, champion_service
        self.timeout, self.sleep, self.clock = timeout, sleep, clock
        self.held = False

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self.api, method)(GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, HTTPROUTES, self.name,
                                             *args, **kwargs)
        except Exception as err:  # RBAC, network, 404: nothing changed
            status = getattr(err, "status", None)
            raise RolloutError(f"Kubernetes API {method} of httproute/{self.name} -n {self.namespace} failed: "
                               f"{f'HTTP {status} ' if status else ''}{getattr(err, 'reason', None) or err}") from None

    def check(self) -> None:
        self._call("get_namespaced_custom_object")

    def route(self, weight: int, mirror: bool) -> str:
        rules = route_rules(self._call("get_namespaced_custom_object")["spec"], self.champion_service, weight, mirror)
        # A merge patch replaces the whole list: the rules are written as read, with new weights.
        patched = self._call("patch_namespaced_custom_object", {"spec": {"rules": rules}}, field_manager=FIELD_MANAGER)
        waited = self._wait_programmed(patched)
        return (f"httproute/{self.name} -n {self.namespace}: challenger "
                f"{'gets a copy of every request' if mirror else f'{weight}%'} (programmed after {waited:.0f} s)")

    def _wait_programmed(self, route: dict) -> float:
        """Seconds until the Gateway controller reports `route`'s generation programmed; RolloutError after
        the timeout, with the conditions it reported."""
        start = self.clock()
        while not programmed(route):
            if self.clock() - start >= self.timeout:
                raise RolloutError(f"httproute/{self.name} -n {self.namespace}: generation "
                                   f"{route['metadata'].get('generation')} not Accepted with ResolvedRefs by the "
                                   f"Gateway within {self.timeout:.0f} s: {route.get('status', {}).get('parents', [])}")
            self.sleep(ROUTE_POLL_SECONDS)
            route = self._call("get_namespaced_custom_object")
        return self.clock() - start

    def abort(self) -> str:
        self.route(0, False)
        return f"httproute/{self.name} -n {self.namespace}: all traffic to the champion, mirror off"

    def acquire(self, lease: Lease) -> None:
        route = self._call("get_namespaced_custom_object")
        where = f"annotation {LEASE_ANNOTATION} of httproute/{self.name} -n {self.namespace}"
        release = f"`kubectl annotate httproute {self.name} -n {self.namespace} {LEASE_ANNOTATION}-`"
        held = route["metadata"].get("annotations", {}).get(LEASE_ANNOTATION)
        if held:
            raise Lease.parse(held).refusal(where, release)
        # The resourceVersion read above is a precondition: a command writing the route meanwhile wins.
        body = {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"],
                             "annotations": {LEASE_ANNOTATION: lease.text()}}}
        try:
            self.api.patch_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, HTTPROUTES,
                                                    self.name, body, field_manager=FIELD_MANAGER)
        except Exception as err:
            if getattr(err, "status", None) == 409:
                raise LeaseHeld(f"another command changed httproute/{self.name} -n {self.namespace} while this one "
                                "took its lease: try again once it is done") from None
            raise RolloutError(f"taking the {where}: {getattr(err, 'reason', None) or err}") from None
        self.held = True

    def release(self) -> None:
        if self.held:
            self._call("patch_namespaced_custom_object", {"metadata": {"annotations": {LEASE_ANNOTATION: None}}},
                       field_manager=FIELD_MANAGER)
            self.held = False


def track_queries(track: str, cluster: str, namespace: str, seconds: int) -> dict[str, str]:
    """PromQL of one track's /invocations over the last `seconds`. Managed Prometheus keeps a project's
    clusters in one store, each series labelled with its `cluster`: another cluster's namespace of the same
    name (a second stack in the project) is not this one's."""
    selector = f'cluster="{cluster}",namespace="{namespace}",{TRACK_METRIC_LABEL}="{track}",path="{SCORING_PATH}"'
    window = f"[{seconds}s]"
    return {
        "requests": f"sum(increase({REQUESTS}_total{{{selector}}}{window}))",
        # every status >= 400 (ERROR_STATUS_MIN): 4xx and 5xx
        "errors": f'sum(increase({REQUESTS}_total{{{selector},status=~"[45].."}}{window}))',
        "p99": f"histogram_quantile(0.99, sum by (le) (increase({LATENCY}_bucket{{{selector}}}{window})))",
    }


def scalar(answer: dict) -> Optional[float]:
    """The one value of an instant-vector answer of the Prometheus API; None when it has none (or NaN)."""
    if answer.get("status") != "success":
        raise RolloutError(f"Managed Prometheus answered {answer.get('errorType')}: {answer.get('error')}")
    result = answer["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


class PrometheusMetrics:
    """Each track's numbers from Managed Prometheus; `get(url, params) -> JSON` is an authorized GET."""

    def __init__(self, project: str, cluster: str, namespace: str, get: Callable[[str, dict], dict],
                 clock: Callable[[], float] = time.time):
        self.url, self.get, self.clock = PROMETHEUS_API.format(project=project), get, clock
        self.cluster, self.namespace = cluster, namespace

    def mark(self) -> float:
        return self.clock()

    def since(self, mark: Any) -> dict[str, TrackStats]:
        seconds = max(1, math.ceil(self.clock() - float(mark)))
        found = {}
        for track in (CHAMPION, CHALLENGER):
            values = {name: scalar(self.get(self.url, {"query": query}))
                      for name, query in track_queries(track, self.cluster, self.namespace, seconds).items()}
            found[track] = TrackStats(values["requests"] or 0.0, values["errors"] or 0.0, values["p99"])
        return found


def prometheus_thresholds(canary: CanarySettings, stack: str) -> Thresholds:
    """serving.canary as the GKE canary judges it: its windows hold at least two scrapes of each pod
    (shorter ones stay possible locally, where tools/ops reads the pods at the window's ends)."""
    if canary.window_seconds < MIN_WINDOW_SECONDS:
        raise TargetError(
            f"serving.canary.windowSeconds is {canary.window_seconds} in stack {stack}: on GKE it must be at least "
            f"{MIN_WINDOW_SECONDS} s, two Managed Prometheus scrapes (PodMonitoring interval {SCRAPE_INTERVAL}); "
            f"a shorter window may hold no sample of a track and judge nothing")
    return Thresholds.from_settings(canary)


def adc_get() -> Callable[[str, dict], dict]:
    """GET with Application Default Credentials (what `gcloud auth application-default login` set up)."""
    import google.auth
    from google.auth.exceptions import GoogleAuthError
    from google.auth.transport.requests import AuthorizedSession

    try:
        credentials, _ = google.auth.default(scopes=[MONITORING_READ])
    except GoogleAuthError as err:
        raise RolloutError(f"no Application Default Credentials for Managed Prometheus: {err}") from None
    session = AuthorizedSession(credentials)

    def get(url: str, params: dict) -> dict:
        try:
            response = session.get(url, params=params, timeout=30)
        except Exception as err:
            raise RolloutError(f"querying Managed Prometheus: {err}") from None
        if response.status_code != 200:
            raise RolloutError(f"Managed Prometheus answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    return get
