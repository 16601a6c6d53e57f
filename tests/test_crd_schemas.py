"""Pinned GKE CRD schemas (tools/schemas/crds) and the strict custom-resource validator over them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from tools.offline import crd_validate
from tools.offline.crd_validate import SCHEMA_DIR, SUPPORTED_KINDS, strict_schema, validate_custom_resource

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATHS = sorted(SCHEMA_DIR.glob("*.json"))
EXPECTED_KINDS = {
    ("cloud.google.com/v1", "BackendConfig"),
    ("networking.gke.io/v1", "ManagedCertificate"),
    ("networking.gke.io/v1beta1", "FrontendConfig"),
    ("monitoring.googleapis.com/v1", "PodMonitoring"),
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("networking.gke.io/v1", "HealthCheckPolicy"),
}

METADATA = {"name": "mlflow-tracking", "namespace": "mlflow", "labels": {"app.kubernetes.io/name": "mlflow"}}

EXAMPLES = {
    "BackendConfig": {
        "apiVersion": "cloud.google.com/v1",
        "kind": "BackendConfig",
        "metadata": METADATA,
        "spec": {"healthCheck": {"requestPath": "/health"}},
    },
    "FrontendConfig": {
        "apiVersion": "networking.gke.io/v1beta1",
        "kind": "FrontendConfig",
        "metadata": METADATA,
        "spec": {
            "sslPolicy": "mlflow-tls-modern",
            "redirectToHttps": {"enabled": True, "responseCodeName": "MOVED_PERMANENTLY_DEFAULT"},
        },
    },
    "ManagedCertificate": {
        "apiVersion": "networking.gke.io/v1",
        "kind": "ManagedCertificate",
        "metadata": METADATA,
        "spec": {"domains": ["mlflow.example.com"]},
    },
    "PodMonitoring": {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": METADATA,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
            "endpoints": [{"port": "http", "interval": "30s", "path": "/metrics"}],
        },
    },
    "Gateway": {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": METADATA,
        "spec": {"gatewayClassName": "gke-l7-rilb", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    },
    "HTTPRoute": {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": METADATA,
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "a", "port": 8080, "weight": 90},
                                                                            {"name": "b", "port": 8080, "weight": 10}]}]},
    },
    "HealthCheckPolicy": {
        "apiVersion": "networking.gke.io/v1",
        "kind": "HealthCheckPolicy",
        "metadata": METADATA,
        "spec": {"default": {"config": {"type": "HTTP", "httpHealthCheck": {"requestPath": "/ping"}}},
                 "targetRef": {"group": "", "kind": "Service", "name": "a"}},
    },
}


def example(kind: str) -> dict:
    return copy.deepcopy(EXAMPLES[kind])


def plan_custom_resources() -> list:
    found = []
    for stack in ("dev", "prod"):
        for path in sorted((ROOT / "plan" / stack / "k8s").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and crd_validate.api_group(doc) in crd_validate.CRD_GROUPS:
                    found.append(pytest.param(doc, id=f"{stack}/{path.name}"))
    return found


PLAN_CUSTOM_RESOURCES = plan_custom_resources()


# --- the pinned files ---------------------------------------------------------------------------


def test_every_expected_kind_has_a_schema():
    assert set(SUPPORTED_KINDS) == EXPECTED_KINDS


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
def test_schema_file_loads_and_is_a_valid_json_schema(path: Path):
    text = path.read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema.get("type") == "object" and isinstance(schema.get("properties"), dict)
    assert "spec" in schema["properties"]
    Draft202012Validator.check_schema(schema)
    Draft202012Validator.check_schema(strict_schema(schema))
    # Pinned form: only the openAPIV3Schema, sorted keys, so upstream diffs stay reviewable.
    assert not {"apiVersion", "kind", "spec", "versions", "openAPIV3Schema"} & set(schema)
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
def test_schema_file_has_provenance(path: Path):
    sources = (SCHEMA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    row = next((line for line in sources.splitlines() if line.startswith(f"| `{path.name}`")), None)
    assert row, f"{path.name} has no row in tools/schemas/crds/SOURCES.md"
    assert "Apache-2.0" in row, f"{path.name}: license missing from its SOURCES.md row"
    commits = [cell for cell in row.split("`") if len(cell) == 40 and all(c in "0123456789abcdef" for c in cell)]
    assert commits, f"{path.name}: no pinned commit id in its SOURCES.md row"
    assert "2026-11-30" in sources


# --- valid examples -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_minimal_example_passes(kind: str):
    assert validate_custom_resource(example(kind)) == []


def test_pod_monitoring_port_is_int_or_string():
    doc = example("PodMonitoring")
    doc["spec"]["endpoints"][0]["port"] = 8080
    assert validate_custom_resource(doc) == []
    doc["spec"]["endpoints"][0]["port"] = True
    assert validate_custom_resource(doc) == ["$.spec.endpoints[0].port: expected integer or string, got true"]


def test_maps_declared_with_additional_properties_stay_open():
    doc = example("PodMonitoring")
    doc["spec"]["selector"]["matchLabels"]["any.key/at-all"] = "v"
    doc["spec"]["endpoints"][0]["params"] = {"collect[]": ["a", "b"]}
    assert validate_custom_resource(doc) == []


# --- strictness ---------------------------------------------------------------------------------


def test_typo_in_nested_field_is_rejected_and_named():
    doc = example("BackendConfig")
    doc["spec"]["healthCheck"] = {"requestPth": "/health"}
    errors = validate_custom_resource(doc)
    assert len(errors) == 1
    assert errors[0].startswith("$.spec.healthCheck.requestPth: unknown field 'requestPth'")
    assert "requestPath" in errors[0]  # the allowed names are listed


@pytest.mark.parametrize(
    "kind, path, value",
    [
        ("BackendConfig", ["specs"], {}),
        ("BackendConfig", ["spec", "healthcheck"], {}),
        ("FrontendConfig", ["spec", "sslPolcy"], "mlflow-tls-modern"),
        ("FrontendConfig", ["spec", "redirectToHTTPS"], {"enabled": True}),
        ("FrontendConfig", ["spec", "redirectToHttps", "responseCode"], "FOUND"),
        ("ManagedCertificate", ["spec", "domain"], ["a.example.com"]),
        ("PodMonitoring", ["spec", "endpoints", 0, "intervall"], "30s"),
        ("PodMonitoring", ["metadata", "lables"], {}),
        ("HTTPRoute", ["spec", "rules", 0, "backendRefs", 0, "weigth"], 90),
        ("Gateway", ["spec", "listeners", 0, "hostName"], "x.example.com"),
        ("HealthCheckPolicy", ["spec", "default", "config", "httpHealthCheck", "requestPth"], "/ping"),
    ],
)
def test_unknown_fields_are_rejected_at_every_level(kind, path, value):
    doc = example(kind)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    expected = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    errors = validate_custom_resource(doc)
    assert [e.split(":")[0] for e in errors] == [expected], errors
    assert f"unknown field {path[-1]!r}" in errors[0]


@pytest.mark.parametrize(
    "kind, path, value, expected",
    [
        ("BackendConfig", ["spec", "timeoutSec"], "300", "$.spec.timeoutSec: expected integer, got string"),
        ("BackendConfig", ["spec", "healthCheck", "port"], "5000", "$.spec.healthCheck.port: expected integer"),
        ("FrontendConfig", ["spec", "sslPolicy"], {"name": "mlflow-tls-modern"},
         "$.spec.sslPolicy: expected string, got object"),
        ("FrontendConfig", ["spec", "redirectToHttps"], True, "$.spec.redirectToHttps: expected object, got boolean"),
        ("FrontendConfig", ["spec", "redirectToHttps", "enabled"], "true",
         "$.spec.redirectToHttps.enabled: expected boolean, got string"),
        ("ManagedCertificate", ["spec", "domains"], "mlflow.example.com", "$.spec.domains: expected array"),
        ("PodMonitoring", ["spec", "endpoints"], {"port": "http"}, "$.spec.endpoints: expected array, got object"),
        ("PodMonitoring", ["metadata", "labels"], ["a"], "$.metadata.labels: expected object, got array"),
    ],
)
def test_wrong_type_is_rejected(kind, path, value, expected):
    doc = example(kind)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = validate_custom_resource(doc)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_schema_constraints_are_enforced():
    cert = example("ManagedCertificate")
    cert["spec"]["domains"] = ["Not_A_Domain.example.com"]
    assert [e.split(":")[0] for e in validate_custom_resource(cert)] == ["$.spec.domains[0]"]

    monitoring = example("PodMonitoring")
    monitoring["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    assert validate_custom_resource(monitoring) == ['$.spec.endpoints[0].interval: "thirty seconds" is not a valid duration']

    backend = example("BackendConfig")
    backend["spec"]["cdn"] = {"cachePolicy": {"includeHost": True}}
    assert validate_custom_resource(backend) == ["$.spec.cdn.enabled: required field is missing"]

    frontend = example("FrontendConfig")
    frontend["spec"]["redirectToHttps"] = {"responseCodeName": "MOVED_PERMANENTLY_DEFAULT"}
    assert validate_custom_resource(frontend) == ["$.spec.redirectToHttps.enabled: required field is missing"]


def test_route_weights_and_health_check_ranges_are_enforced():
    route = example("HTTPRoute")
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1_000_001
    assert [e.split(":")[0] for e in validate_custom_resource(route)] == ["$.spec.rules[0].backendRefs[0].weight"]
    policy = example("HealthCheckPolicy")
    policy["spec"]["default"]["checkIntervalSec"] = 0
    assert [e.split(":")[0] for e in validate_custom_resource(policy)] == ["$.spec.default.checkIntervalSec"]


def test_frontend_config_spec_fields():
    """The FrontendConfig field names the program renders, as pinned (upstream types.go)."""
    schema = crd_validate.load_schema("networking.gke.io/v1beta1", "FrontendConfig")
    spec = schema["properties"]["spec"]
    assert set(spec["properties"]) == {"sslPolicy", "redirectToHttps"}
    assert spec["properties"]["sslPolicy"]["type"] == "string"
    redirect = spec["properties"]["redirectToHttps"]
    assert {name: sub["type"] for name, sub in redirect["properties"].items()} == {
        "enabled": "boolean", "responseCodeName": "string"}
    assert redirect["required"] == ["enabled"]

    # Each part of the spec is optional on its own.
    for key in ("sslPolicy", "redirectToHttps"):
        doc = example("FrontendConfig")
        del doc["spec"][key]
        assert validate_custom_resource(doc) == []
    doc = example("FrontendConfig")
    doc["spec"]["redirectToHttps"] = {"enabled": False}
    assert validate_custom_resource(doc) == []


def test_metadata_is_checked():
    doc = example("BackendConfig")
    del doc["metadata"]["name"]
    assert validate_custom_resource(doc) == ["$.metadata.name: required field is missing"]
    doc = example("BackendConfig")
    doc["metadata"]["labels"] = {"app": 1}
    assert validate_custom_resource(doc) == ['$.metadata.labels.app: expected string, got integer 1']
    doc = example("BackendConfig")
    doc["metadata"]["name"] = "Not_Valid"
    assert [e.split(":")[0] for e in validate_custom_resource(doc)] == ["$.metadata.name"]


def test_strict_transform_leaves_the_pinned_schema_untouched():
    original = crd_validate.load_schema("cloud.google.com/v1", "BackendConfig")
    snapshot = copy.deepcopy(original)
    strict = strict_schema(original)
    assert original == snapshot
    assert strict["properties"]["spec"]["properties"]["healthCheck"]["additionalProperties"] is False
    assert "additionalProperties" not in original["properties"]["spec"]["properties"]["healthCheck"]


def test_preserve_unknown_fields_and_declared_additional_properties_are_respected():
    schema = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "closed": {"type": "object", "properties": {"b": {"type": "array", "items": {"type": "object", "properties": {"c": {}}}}}},
        },
    }
    strict = strict_schema(schema)
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert strict["properties"]["closed"]["properties"]["b"]["items"]["additionalProperties"] is False


# --- unknown kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "api_version, kind",
    [("networking.gke.io/v1", "FrontendConfig"), ("cloud.google.com/v1beta1", "BackendConfig"), (None, None)],
)
def test_unknown_kind_is_rejected_listing_supported_kinds(api_version, kind):
    errors = validate_custom_resource({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}})
    assert len(errors) == 1
    assert repr(kind) in errors[0] and "supported kinds" in errors[0]
    for supported_api_version, supported_kind in EXPECTED_KINDS:
        assert f"{supported_kind} ({supported_api_version})" in errors[0]


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all([example(k) for k in sorted(EXAMPLES)] + [{"apiVersion": "v1", "kind": "Namespace"}]))
    assert crd_validate.main([str(good)]) == 0

    bad = tmp_path / "bad.yaml"
    doc = example("BackendConfig")
    doc["spec"]["healthCheck"]["requestPth"] = "/health"
    bad.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert crd_validate.main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.yaml" in out and "$.spec.healthCheck.requestPth" in out and "good.yaml" not in out


def test_cli_reports_gke_custom_resources_without_a_schema(tmp_path, capsys):
    path = tmp_path / "attachment.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "networking.gke.io/v1", "kind": "ServiceAttachment",
                                    "metadata": {"name": "x"}}))
    assert crd_validate.main([str(path)]) == 1
    assert "supported kinds" in capsys.readouterr().out


# --- the committed plan -------------------------------------------------------------------------


def test_committed_plan_has_custom_resources_to_check():
    assert PLAN_CUSTOM_RESOURCES, "no custom resources found under plan/*/k8s; this check would be vacuous"


@pytest.mark.parametrize("doc", PLAN_CUSTOM_RESOURCES)
def test_committed_plan_custom_resource_is_valid(doc: dict):
    assert validate_custom_resource(doc) == []
