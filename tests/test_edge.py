"""Edge protection on the Ingress: TLS policy, Cloud Armor rate limiting and Identity-Aware Proxy."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, settings_from_values
from tools.offline.crd_validate import validate_custom_resource
from tools.offline.mocks import OFFLINE_PROJECT_NUMBER
from tools.offline.render import manifest

NS = "mlflow-platform"
IAP = {"edge.iap": "true", "edge.iapMembers": '["group:ml-team@example.com", "user:ana@example.com"]'}
BASE = {"gcp:project": "my-proj-123", f"{NS}:environment": "dev"}


def with_edge(**edge: str) -> dict:
    return {**BASE, f"{NS}:edge": edge}
PROGRAMMATIC_CLIENT = "1234-abc.apps.googleusercontent.com"


def test_cloud_armor_needs_an_ingress():
    with pytest.raises(ConfigError, match=f"{NS}:edge.cloudArmor = True: needs {NS}:edge.ingressHost"):
        settings_from_values(with_edge(cloudArmor="true"))


def test_an_oauth_client_secret_is_no_setting_any_more():
    """IAP's Google-managed client needs none; a stack that still sets one learns so before anything runs."""
    edge = {"ingressHost": "m.example.com", "iap": "true", "iapMembers": '["group:ml@example.com"]'}
    settings_from_values(with_edge(**edge))
    with pytest.raises(ConfigError, match=f"{NS}:edge.iapOauthClientSecret: unknown setting"):
        settings_from_values(with_edge(**edge, iapOauthClientSecret="GOCSPX-do-not-print"))


def test_iap_without_members_is_refused_since_it_would_admit_nobody():
    edge = {"ingressHost": "m.example.com", "iap": "true"}
    with pytest.raises(ConfigError, match=f"{NS}:edge.iap = True: needs {NS}:edge.iapMembers"):
        settings_from_values(with_edge(**edge))
    with pytest.raises(ConfigError, match="not an IAM member; allowed: user:EMAIL"):
        settings_from_values(with_edge(**edge, iapMembers='["ana@example.com"]'))


@pytest.mark.parametrize("member,reason", [
    ("allUsers", "would make the tracking server public"),
    ("allAuthenticatedUsers", "promises every Google account, yet IAP's Google-managed OAuth client admits only"),
    ("user:ana@gmail.com", "is a consumer Google account, outside any organization"),
    ("user:Ana@GoogleMail.com", "is a consumer Google account, outside any organization"),
])
def test_iap_refuses_members_its_google_managed_client_would_not_admit(member, reason):
    # https://cloud.google.com/iap/docs/custom-oauth-configuration: internal users only
    with pytest.raises(ConfigError) as caught:
        settings_from_values(with_edge(ingressHost="m.example.com", iap="true",
                                       iapMembers=f'["group:ml@example.com", "{member}"]'))
    assert f"{NS}:edge.iapMembers" in str(caught.value) and f"'{member}' {reason}" in str(caught.value)
    assert "the domain of the project's organization" in str(caught.value)


def test_iap_enables_its_api_and_grants_each_member_passage(run_stack_with):
    run = run_stack_with("prod", IAP)
    assert "iap.googleapis.com" in {r.inputs["service"] for r in run.of_type("gcp:projects/service:Service")}
    grants = run.of_type("gcp:iap/webIamMember:WebIamMember")
    assert {(g.inputs["role"], g.inputs["member"]) for g in grants} == {
        ("roles/iap.httpsResourceAccessor", "group:ml-team@example.com"),
        ("roles/iap.httpsResourceAccessor", "user:ana@example.com")}


def test_iap_api_is_not_enabled_without_iap(stack_runs):
    services = {r.inputs["service"] for r in stack_runs["dev"].of_type("gcp:projects/service:Service")}
    assert "iap.googleapis.com" not in services


def test_ingress_refuses_tls_below_1_2_through_its_frontend_config(stack_runs):
    run = stack_runs["prod"]
    [policy] = run.of_type("gcp:compute/sSLPolicy:SSLPolicy")
    assert policy.inputs["minTlsVersion"] == "TLS_1_2"
    frontend = run.named("mlflow-frontend-config")
    assert frontend.inputs["spec"] == {"sslPolicy": policy.state["name"]}
    assert validate_custom_resource(manifest(frontend)) == []
    ingress = run.named("mlflow-ingress").inputs["metadata"]["annotations"]
    assert ingress["networking.gke.io/v1beta1.FrontendConfig"] == frontend.inputs["metadata"]["name"]


def test_prod_attaches_a_rate_limiting_policy_to_the_backend(stack_runs):
    run = stack_runs["prod"]
    policy = run.of_type("gcp:compute/securityPolicy:SecurityPolicy")[0]
    throttle = next(rule for rule in policy.inputs["rules"] if rule["action"] == "throttle")
    limits = throttle["rateLimitOptions"]
    assert limits["rateLimitThreshold"] == {"count": 600, "intervalSec": 60}
    assert (limits["enforceOnKey"], limits["exceedAction"]) == ("IP", "deny(429)")
    backend = run.named("mlflow-backend-config").inputs["spec"]
    assert backend["securityPolicy"] == {"name": policy.state["name"]}


def test_dev_has_no_edge_protection(stack_runs):
    assert stack_runs["dev"].of_type("gcp:compute/securityPolicy:SecurityPolicy") == []


def test_iap_uses_googles_managed_client_so_no_kubernetes_secret_exists(run_stack_with):
    run = run_stack_with("prod", IAP)
    backend = run.named("mlflow-backend-config")
    assert backend.inputs["spec"]["iap"] == {"enabled": True}  # no oauthclientCredentials
    assert validate_custom_resource(manifest(backend)) == []
    assert run.of_type("kubernetes:core/v1:Secret") == []
    assert run.of_type("gcp:iap/settings:Settings") == []  # browsers only, unless a programmatic client is named


def test_a_programmatic_client_is_allowed_by_iaps_settings_with_no_secret(run_stack_with):
    run = run_stack_with("prod", {**IAP, "edge.iapOauthClientId": PROGRAMMATIC_CLIENT})
    [settings] = run.of_type("gcp:iap/settings:Settings")
    assert settings.inputs["name"] == f"projects/{OFFLINE_PROJECT_NUMBER}/iap_web"  # by number, not id
    assert settings.inputs["accessSettings"]["oauthSettings"]["programmaticClients"] == [PROGRAMMATIC_CLIENT]
    assert run.of_type("kubernetes:core/v1:Secret") == []
