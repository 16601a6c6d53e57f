"""Pod shutdown as the manifests declare it (preStop drain, grace period, keep-alive), how the
local platform reads it (tools/local/lifecycle.py), and the local load balancer's configuration."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from k8s import serving, tracking
from k8s.pods import drain_on_stop
from tools.local.balancer import ENDPOINT_PROPAGATION_SECONDS, Backend, haproxy_config
from tools.local.lifecycle import REMOVE_FIRST, SURGE_FIRST, pre_stop_seconds, rollout_order, termination
from tools.local.manifests import Manifests, container
from tools.local.processes import LocalPlatformError

SERVED = {"tracking": "mlflow", "serving": "serving"}  # the container behind each Service


def test_drain_is_a_sleep_action_needing_no_binary_in_the_image():
    assert drain_on_stop(7) == {"preStop": {"sleep": {"seconds": 7}}}


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("component", ["tracking", "serving"])
def test_pods_behind_a_service_drain_longer_than_endpoints_take_and_within_their_grace(stack, component):
    deployment = Manifests.load(stack).one("Deployment", component=component)
    plan = termination(deployment)
    drain = plan.pre_stop_seconds[SERVED[component]]
    assert drain > ENDPOINT_PROPAGATION_SECONDS, f"{stack} {component}: SIGTERM before the endpoint is gone"
    assert plan.grace_seconds >= drain + 20, f"{stack} {component}: no time left for requests in flight"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_tracking_keeps_idle_connections_longer_than_the_google_load_balancer(stack):
    args = container(Manifests.load(stack).one("Deployment", component="tracking"), "mlflow")["args"]
    uvicorn = args[args.index("--uvicorn-opts") + 1].split()
    assert int(uvicorn[uvicorn.index("--timeout-keep-alive") + 1]) > 600  # the GCLB's backend idle timeout


def test_serving_keeps_idle_connections_longer_than_the_gateways_load_balancer(monkeypatch):
    sys.path.insert(0, "mlflow_image")
    import mlflow_serving.__main__ as server

    seen = {}
    monkeypatch.setattr(server.uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(server.tempfile, "mkdtemp", lambda prefix: f"/tmp/{prefix}")
    monkeypatch.setattr(server.os, "environ", dict(os.environ))  # main() sets its own; gone after the test
    server.main(["-m", "models:/m@champion"])
    assert seen["timeout_keep_alive"] > 600  # the internal Application Load Balancer's backend idle timeout


def test_builders_use_their_modules_values():
    assert tracking.GRACE_SECONDS > tracking.DRAIN_SECONDS and serving.GRACE_SECONDS > serving.DRAIN_SECONDS


@pytest.mark.parametrize("hook, seconds", [
    (None, 0.0), ({"sleep": {"seconds": 5}}, 5.0), ({"exec": {"command": ["sleep", "3"]}}, 3.0),
])
def test_pre_stop_sleeps_are_read(hook, seconds):
    spec = {"name": "c", **({"lifecycle": {"preStop": hook}} if hook else {})}
    assert pre_stop_seconds(spec) == seconds


def test_other_pre_stop_hooks_are_refused_not_skipped():
    with pytest.raises(LocalPlatformError, match="cannot run locally"):
        pre_stop_seconds({"name": "c", "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 80}}}})


def _deployment(strategy: dict | None, grace: int | None = None) -> dict:
    spec = {"containers": [{"name": "c"}], **({"terminationGracePeriodSeconds": grace} if grace else {})}
    return {"spec": {**({"strategy": strategy} if strategy else {}), "template": {"spec": spec}}}


@pytest.mark.parametrize("strategy, order", [
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, SURGE_FIRST),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, REMOVE_FIRST),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "100%"}}, REMOVE_FIRST),
    ({"type": "Recreate"}, REMOVE_FIRST),
    (None, SURGE_FIRST),  # Kubernetes' default 25 %/25 % rounds to surge 1 for one replica
])
def test_rollout_order_follows_the_strategy(strategy, order):
    assert rollout_order(_deployment(strategy)) == order


def test_grace_period_defaults_to_kubernetes_30_seconds():
    assert termination(_deployment(None)).grace_seconds == 30.0
    assert termination(_deployment(None, grace=45)).grace_seconds == 45.0


def test_balancer_checks_readiness_and_never_retries_elsewhere(tmp_path: Path):
    text = haproxy_config([Backend("serving", 18080, "/ping", 5, 3)], tmp_path / "s.sock")
    assert "option httpchk GET /ping" in text
    assert "inter 5s fall 3 rise 1" in text
    assert "bind 127.0.0.1:18080" in text
    assert "retries 0" in text  # a failure must reach the client, as through kube-proxy
    assert f"stats socket {tmp_path / 's.sock'} mode 600 level admin" in text
