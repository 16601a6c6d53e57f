"""Champion and challenger side by side: the tracks, the internal Gateway and the weighted route, as the
stacks declare them with and without a challenger."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from infra.cloud_rules import HEALTH_CHECK_RANGES
from k8s.serving import CHALLENGER, CHAMPION, READY_PATH, SERVING_PORT, TRACK_LABEL, TRACK_METRIC_LABEL
from k8s.traffic import GATE_MODULE, GATEWAY_CRDS, INTERNAL_GATEWAY_CLASS, Backend, route_spec
from tests.helpers import container, plain, pod_spec

sys.path.insert(0, "mlflow_image")
import mlflow_crdwait.__main__ as crdwait  # noqa: E402

CHAMPION_SVC, CHALLENGER_SVC = Backend("champ", 8080), Backend("chall", 8080)
WITH_CHALLENGER = {"serving.challenger.weight": 10}


def weights(spec: dict) -> dict[str, int]:
    [rule] = spec["rules"]
    return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}


@pytest.mark.parametrize("weight", [0, 10, 50, 100])
def test_the_route_gives_the_challenger_its_share_and_the_champion_the_rest(weight):
    assert weights(route_spec("gw", CHAMPION_SVC, CHALLENGER_SVC, weight, mirror=False)) == {
        "champ": 100 - weight, "chall": weight}


def test_without_a_challenger_the_champion_takes_everything():
    spec = route_spec("gw", CHAMPION_SVC, None, 0, mirror=False)
    assert weights(spec) == {"champ": 100} and "filters" not in spec["rules"][0]


def test_mirror_copies_every_request_to_the_challenger_which_answers_none():
    spec = route_spec("gw", CHAMPION_SVC, CHALLENGER_SVC, 0, mirror=True)
    assert weights(spec) == {"champ": 100, "chall": 0}
    [mirror] = spec["rules"][0]["filters"]
    assert mirror == {"type": "RequestMirror", "requestMirror": {"backendRef": {
        "group": "", "kind": "Service", "name": "chall", "port": 8080}}}


# --- the stacks -----------------------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_stacks_render_the_split_with_the_champion_at_100(stack_runs, stack):
    run = stack_runs[stack]
    route = run.named("mlflow-serving-route")
    assert weights(plain(route.inputs["spec"])) == {"mlflow-serving": 100}
    assert run.outputs["serving_route"] == "mlflow-serving/mlflow-serving"
    assert "serving_challenger_deployment" not in run.outputs
    gateway = run.named("mlflow-serving-gateway")
    assert gateway.inputs["spec"]["gatewayClassName"] == INTERNAL_GATEWAY_CLASS
    # The address the Gateway names is the one the stack exports, a reserved internal one of the node subnet.
    address = run.named("mlflow-net-serving-gateway-ip")
    assert gateway.inputs["spec"]["addresses"] == [{"type": "NamedAddress", "value": address.state["name"]}]
    assert address.inputs["addressType"] == "INTERNAL" and address.urn in gateway.dependencies
    assert run.outputs["serving_gateway_address"] == address.state["address"]
    # callers (the load rig too) get the Gateway's URL; the champion's Service would bypass the split
    assert run.outputs["serving_url"] == f"http://{address.state['address']}:80"
    assert "serving_in_cluster_url" not in run.outputs


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_gateway_waits_for_its_proxy_only_subnet_and_firewall_so_a_destroy_removes_it_first(stack_runs, stack):
    run = stack_runs[stack]
    gateway = run.named("mlflow-serving-gateway")
    subnet = run.named("mlflow-net-proxy-only")
    assert (subnet.inputs["purpose"], subnet.inputs["role"]) == ("REGIONAL_MANAGED_PROXY", "ACTIVE")
    [firewall] = run.of_type("gcp:compute/firewall:Firewall")
    assert {subnet.urn, firewall.urn} <= set(gateway.dependencies)
    assert gateway.urn in run.named("mlflow-serving-route").dependencies


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_gateway_api_kinds_wait_for_the_gate_job_that_waits_for_their_crds(stack_runs, stack):
    # GKE installs these CRDs minutes after the Gateway API setting is on; Pulumi retries an unknown kind ~1 min.
    run = stack_runs[stack]
    gate = run.named("mlflow-serving-gate")
    args = container(gate, "wait-for-crds")["args"]
    assert args[:2] == ["-m", GATE_MODULE] and set(GATEWAY_CRDS) <= set(args)
    assert set(GATEWAY_CRDS) == {"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
                                 "healthcheckpolicies.networking.gke.io"}
    timeout = float(args[args.index("--timeout") + 1])
    assert timeout < gate.inputs["spec"]["activeDeadlineSeconds"]  # it fails with its message, not a kill
    # its token only in its container, read where mlflow_crdwait looks
    [mount] = container(gate, "wait-for-crds")["volumeMounts"]
    assert mount["mountPath"] == crdwait.ACCOUNT and mount["readOnly"] is True
    gate_kinds = {r.inputs.get("kind") for r in run.resources if gate.urn in r.dependencies}
    assert {"Gateway", "HealthCheckPolicy"} <= gate_kinds
    # the route comes after the Gateway, hence after the gate
    assert run.named("mlflow-serving-gateway").urn in run.named("mlflow-serving-route").dependencies
    # RBAC: `get` on those CRDs only
    [role] = [r for r in run.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
              if r.name == "mlflow-serving-gate-role"]
    assert plain(role.inputs["rules"]) == [{"apiGroups": ["apiextensions.k8s.io"],
                                            "resources": ["customresourcedefinitions"],
                                            "resourceNames": list(GATEWAY_CRDS), "verbs": ["get"]}]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_load_balancer_reaches_the_serving_pods_through_firewall_and_network_policy(stack_runs, stack):
    run = stack_runs[stack]
    sources = {run.named("mlflow-net-proxy-only").inputs["ipCidrRange"], *HEALTH_CHECK_RANGES}
    [firewall] = run.of_type("gcp:compute/firewall:Firewall")
    assert set(firewall.inputs["sourceRanges"]) == sources
    assert firewall.inputs["allows"] == [{"protocol": "tcp", "ports": [str(SERVING_PORT)]}]
    # It targets the nodes serving runs on: the serving cluster's in prod, the only one in dev.
    assert firewall.inputs["targetServiceAccounts"] == [run.outputs["serving_node_service_account"]]
    policy = plain(run.named("mlflow-serving-netpol").inputs["spec"])
    admitted = {block["ipBlock"]["cidr"] for rule in policy["ingress"] for block in rule["from"] if "ipBlock" in block}
    assert admitted == sources


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_serving_cluster_serves_the_standard_gateway_api(stack_runs, stack):
    run = stack_runs[stack]
    channels = {cluster.name: (cluster.inputs.get("gatewayApiConfig") or {}).get("channel")
                for cluster in run.of_type("gcp:container/cluster:Cluster")}
    serving_cluster = "mlflow-serving-cluster" if stack == "prod" else "mlflow-platform-cluster"
    assert channels.pop(serving_cluster) == "CHANNEL_STANDARD"
    assert set(channels.values()) <= {None}


def test_with_a_serving_cluster_the_split_lives_there(stack_runs):
    run = stack_runs["prod"]
    serving_provider = run.named("mlflow-serving-deployment").provider
    assert "mlflow-serving" in serving_provider
    for name in ("mlflow-serving-gateway", "mlflow-serving-route", "mlflow-serving-health-check"):
        assert run.named(name).provider == serving_provider, name


def test_the_proxy_only_subnet_is_disjoint_from_every_other_range(stack_runs):
    run = stack_runs["prod"]
    proxy = ipaddress.IPv4Network(run.named("mlflow-net-proxy-only").inputs["ipCidrRange"])
    subnet = run.named("mlflow-net-subnet").inputs
    others = [subnet["ipCidrRange"], *(r["ipCidrRange"] for r in subnet["secondaryIpRanges"])]
    assert not any(proxy.overlaps(ipaddress.IPv4Network(cidr)) for cidr in others)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_challenger_is_a_second_track_like_the_champion_serving_its_own_alias(run_stack_with, stack):
    run = run_stack_with(stack, {**WITH_CHALLENGER, "serving.challenger.alias": "candidate"})
    champion, challenger = run.named("mlflow-serving-deployment"), run.named("mlflow-serving-challenger-deployment")
    assert run.outputs["serving_challenger_deployment"] == "mlflow-serving/mlflow-serving-challenger"
    uri = lambda record: container(record, "serving")["args"][container(record, "serving")["args"].index("--model-uri") + 1]
    assert (uri(champion), uri(challenger)) == ("models:/iris-classifier@champion", "models:/iris-classifier@candidate")
    champion_pod, challenger_pod = plain(champion.inputs["spec"]["template"]), plain(challenger.inputs["spec"]["template"])
    assert (champion_pod["metadata"]["labels"][TRACK_LABEL], challenger_pod["metadata"]["labels"][TRACK_LABEL]) == (
        CHAMPION, CHALLENGER)
    # The champion's selectors never match a challenger pod (the two Services answer for one track each).
    champion_selector = plain(champion.inputs["spec"]["selector"]["matchLabels"])
    assert not champion_selector.items() <= challenger_pod["metadata"]["labels"].items()
    # Same resources, probes and security as the champion: only the alias differs.
    strip = lambda spec: {**spec, "containers": [{**c, "args": None} for c in spec["containers"]],
                          "topologySpreadConstraints": None}  # each track spreads its own pods
    assert strip(pod_spec(champion)) == strip(pod_spec(challenger))
    for kind in ("hpa", "service", "netpol", "pod-monitoring", "health-check"):
        run.named(f"mlflow-serving-challenger-{kind}")
    if stack == "prod":  # minReplicas 2: a budget per track
        run.named("mlflow-serving-challenger-pdb")
    route = plain(run.named("mlflow-serving-route").inputs["spec"])
    assert weights(route) == {"mlflow-serving": 90, "mlflow-serving-challenger": 10}


def test_each_tracks_series_carry_the_track_and_the_load_balancer_checks_readiness(run_stack_with):
    run = run_stack_with("dev", WITH_CHALLENGER)
    for name, service in (("mlflow-serving", "mlflow-serving"), ("mlflow-serving-challenger", "mlflow-serving-challenger")):
        monitoring = plain(run.named(f"{name}-pod-monitoring").inputs["spec"])
        assert monitoring["targetLabels"] == {"fromPod": [{"from": TRACK_LABEL, "to": TRACK_METRIC_LABEL}]}
        check = plain(run.named(f"{name}-health-check").inputs["spec"])
        assert check["targetRef"] == {"group": "", "kind": "Service", "name": service}
        assert check["default"]["config"]["httpHealthCheck"]["requestPath"] == READY_PATH
