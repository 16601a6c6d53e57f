"""The policy rule `kubernetes-secrets-hold-no-credentials`: a Kubernetes Secret carrying a password
or key is refused (by key name or value shape, `data` decoded), the message never repeats the value;
and the committed stacks hold no Kubernetes Secret at all (IAM database authentication left no
database password, Secret Manager holds the application secrets)."""

from __future__ import annotations

import base64
import copy

import pytest

from tools.offline.mocks import secret
from tools.policy import rules

RULE = rules.check_kubernetes_secrets_hold_no_credentials
SECRET = rules.K8S_SECRET_TYPE
PASSWORD = "Zq8vN2xKp4LmR7tYw1sDf6gH"  # shaped like the program's generated passwords


def manifest(**string_data) -> dict:
    return {"metadata": {"name": "mlflow-tracking", "namespace": "mlflow"}, "type": "Opaque",
            "stringData": string_data}


# A tracking Secret as it will be with IAM database authentication: no credential at all.
CLEAN = manifest(**{
    "backend-store-uri": "postgresql+psycopg2://mlflow-tracking-dev%40p.iam@127.0.0.1:5432/mlflow",
    "basic_auth.ini": "[mlflow]\ndefault_permission = READ\ndatabase_uri = postgresql+psycopg2://u@127.0.0.1:5432/a\n"
                      "admin_username = admin\nauth_cache_ttl_seconds = 300\n",
})


def test_a_secret_without_credentials_passes():
    assert RULE(SECRET, CLEAN) == []
    assert RULE("kubernetes:core/v1:ConfigMap", {"data": {"password": PASSWORD}}) == []  # other kinds: other rules


@pytest.mark.parametrize("key, value, says", [
    ("admin-password", "x", "named like a password or key"),
    ("flask-secret-key", "x", "named like a password or key"),
    ("client_secret", "x", "named like a password or key"),
    ("key.json", "{}", "named like a password or key"),
    ("tls.key", "x", "named like a password or key"),
    ("backend-store-uri", f"postgresql+psycopg2://mlflow:{PASSWORD}@127.0.0.1:5432/mlflow", "a URI with a password"),
    ("basic_auth.ini", f"[mlflow]\ndatabase_uri = postgresql://mlflow:{PASSWORD}@h/db\n", "a URI with a password"),
    ("settings.ini", f"[mlflow]\nadmin_password = {PASSWORD}\n", "a password or key setting"),
    ("sa", '{"type": "service_account", "private_key": "..."}', "a service-account key"),
    ("cert", "-----BEGIN RSA PRIVATE KEY-----\nMII...", "a private key"),
    ("value", PASSWORD, "a random token"),
])
def test_a_credential_by_name_or_shape_is_refused_without_repeating_it(key, value, says):
    found = RULE(SECRET, {**CLEAN, "stringData": {**CLEAN["stringData"], key: value}})
    assert len(found) == 1 and says in found[0] and f"key {key!r}" in found[0], found
    assert PASSWORD not in found[0]


def test_data_is_decoded_and_secrets_are_looked_through():
    uri = f"postgresql://mlflow:{PASSWORD}@h/db"
    encoded = {"metadata": CLEAN["metadata"], "data": {"uri": base64.b64encode(uri.encode()).decode()}}
    assert "a URI with a password" in RULE(SECRET, encoded)[0]
    wrapped = {"metadata": CLEAN["metadata"], "stringData": secret({"uri": uri})}
    assert "a URI with a password" in RULE(SECRET, wrapped)[0]


def test_a_key_named_like_a_password_is_refused_even_while_its_value_is_unknown():
    found = RULE(SECRET, manifest(password=rules.UNKNOWN))
    assert found and "named like a password" in found[0]


def test_the_rule_is_in_the_pack():
    assert ("kubernetes-secrets-hold-no-credentials", RULE) in [(name, check) for name, _, check in rules.POLICIES]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_deliberately_broken_copy_of_the_stack_is_refused(stack_runs, stack):
    """The tracking auth config as a Secret with the admin password in it, as before Secret Manager."""
    record = stack_runs[stack].named("mlflow-auth-config")
    assert RULE(SECRET, {"metadata": record.inputs["metadata"], "stringData": record.inputs["data"]}) == []
    broken = {"metadata": copy.deepcopy(record.inputs["metadata"]),
              "stringData": {**record.inputs["data"], "admin-password": PASSWORD}}
    assert any("'admin-password' is named like a password" in v for v in RULE(SECRET, broken))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_committed_stacks_declare_no_kubernetes_secret(stack_runs, stack):
    assert [r.urn for r in stack_runs[stack].of_type(SECRET)] == []
