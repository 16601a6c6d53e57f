"""The tracking server's IAP hook (mlflow_image/mlflow_iap_auth): who a request is, from IAP's signed
assertion; what it refuses, with 401; who may still use a password (break-glass and in-cluster machines)."""

from __future__ import annotations

import sys

import flask
import pytest

sys.path.insert(0, "mlflow_image")
import mlflow_iap_auth as hook  # noqa: E402
from mlflow_iap_auth import AssertionRefused, Audience, KeyCache, verify_assertion  # noqa: E402

from infra.cloud_rules import GOOGLE_LB_RANGES  # noqa: E402
from tests.iap_tokens import AUDIENCE, PROJECT_NUMBER, SigningKey  # noqa: E402

IAP_KEY = SigningKey.new("iap-1")
KEYS = {IAP_KEY.kid: IAP_KEY.public_pem}
THIS_PROJECT = Audience(PROJECT_NUMBER)


def test_a_valid_assertion_names_the_person_lower_cased():
    assert verify_assertion(IAP_KEY.sign("Ada@Example.com"), KEYS, THIS_PROJECT) == "ada@example.com"


@pytest.mark.parametrize("token, refusal", [
    pytest.param(SigningKey.new("iap-1").sign("ada@example.com"), "Could not verify token signature", id="forged"),
    pytest.param(SigningKey.new("other").sign("ada@example.com"), "is not one of the trusted keys", id="unknown-key"),
    pytest.param(IAP_KEY.sign("ada@example.com", issued_ago=700, lifetime=600), "expired", id="expired"),
    pytest.param(IAP_KEY.sign("ada@example.com", audience="/projects/999/global/backendServices/4242"),
                 "is not a backend service of project", id="other-project"),
    pytest.param(IAP_KEY.sign("ada@example.com", audience=f"/projects/{PROJECT_NUMBER}/apps/my-app"),
                 "is not a backend service of project", id="app-engine-audience"),
    pytest.param(IAP_KEY.sign("ada@example.com", issuer="https://accounts.google.com"), "issuer", id="issuer"),
    pytest.param("not.a.jwt", "malformed", id="malformed"),
])
def test_an_assertion_not_made_by_iap_for_this_backend_is_refused(token, refusal):
    with pytest.raises(AssertionRefused, match=refusal):
        verify_assertion(token, KEYS, THIS_PROJECT)


def test_a_known_backend_service_id_pins_the_audience_to_it():
    pinned = Audience(PROJECT_NUMBER, "4242")
    assert verify_assertion(IAP_KEY.sign("ada@example.com", audience=AUDIENCE), KEYS, pinned) == "ada@example.com"
    with pytest.raises(AssertionRefused, match="is not backend service 4242"):
        verify_assertion(IAP_KEY.sign("ada@example.com", audience=AUDIENCE.replace("4242", "77")), KEYS, pinned)


def test_a_token_signed_with_another_algorithm_is_refused_before_any_key_is_tried():
    from google.auth import jwt
    from google.auth.crypt import RSASigner
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    token = jwt.encode(RSASigner.from_string(rsa_pem, "iap-1"), {"email": "ada@example.com"}).decode()
    with pytest.raises(AssertionRefused, match="'RS256' is not ES256"):
        verify_assertion(token, KEYS, THIS_PROJECT)


def test_keys_are_refetched_hourly_or_for_an_unseen_key_id_at_most_once_a_minute():
    fetched, now = [], [0.0]
    cache = KeyCache("https://keys", fetch=lambda url: fetched.append(url) or KEYS, clock=lambda: now[0])
    token, rotated = IAP_KEY.sign("ada@example.com"), SigningKey.new("iap-2").sign("ada@example.com")
    cache.keys_for(token)
    cache.keys_for(token)
    cache.keys_for(rotated)
    assert len(fetched) == 1
    now[0] = 61
    cache.keys_for(rotated)
    cache.keys_for(rotated)
    assert len(fetched) == 2
    now[0] = 61 + 3600
    cache.keys_for(token)
    assert len(fetched) == 3


class FlakyKeys:
    """A key endpoint that answers KEYS, or fails while `down`; counts the fetches."""

    def __init__(self):
        self.down, self.fetches = False, 0

    def __call__(self, url: str):
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return KEYS


def test_a_failing_key_endpoint_keeps_the_last_keys_for_a_day_and_backs_off_between_tries():
    endpoint, now = FlakyKeys(), [0.0]
    cache = KeyCache("https://keys", fetch=endpoint, clock=lambda: now[0])
    token = IAP_KEY.sign("ada@example.com")
    assert cache.keys_for(token) == KEYS
    endpoint.down = True
    now[0] = 3600
    for _ in range(20):  # many requests while it is down: one fetch, then a wait
        assert cache.keys_for(token) == KEYS
    assert endpoint.fetches == 2
    now[0] = 3600 + 4
    cache.keys_for(token)
    assert endpoint.fetches == 2  # the first wait (5 s) is not over
    now[0] = 3600 + 5
    cache.keys_for(token)
    now[0] = 3600 + 5 + 9
    cache.keys_for(token)
    assert endpoint.fetches == 3  # the second wait is 10 s
    now[0] = 24 * 3600
    with pytest.raises(hook.KeysUnavailable, match="connection refused"):
        cache.keys_for(token)
    endpoint.down = False
    now[0] = 24 * 3600 + 300
    assert cache.keys_for(token) == KEYS


@pytest.mark.parametrize("answer", [OSError("timed out"), {}, ["not", "a", "map"]], ids=["down", "empty", "not-a-map"])
def test_without_any_usable_keys_the_cache_says_so(answer):
    def fetch(url):
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(hook.KeysUnavailable):
        KeyCache("https://keys", fetch=fetch, clock=lambda: 0.0).keys_for(IAP_KEY.sign("ada@example.com"))


# --- the hook inside a Flask request --------------------------------------------------------------
@pytest.fixture
def server(monkeypatch):
    """The hook's settings and keys, MLflow's user store and its basic-auth check replaced by records."""
    settings = hook.Settings(keys_url="https://keys", audience=THIS_PROJECT,
                             basic_auth_users=frozenset({"admin", "mlflow-serving"}),
                             domain_roles=(("example.com", "team-all"), ("risk.example.com", "team-risk")),
                             load_balancer_ranges=hook.Settings.from_env({
                                 hook.KEYS_URL_ENV: "k", hook.PROJECT_NUMBER_ENV: "1",
                                 hook.LOAD_BALANCER_RANGES_ENV: ",".join(GOOGLE_LB_RANGES)}).load_balancer_ranges)
    monkeypatch.setattr(hook, "_state", {"settings": settings, "keys": KeyCache("https://keys", fetch=lambda url: KEYS)})
    created: list[str] = []
    monkeypatch.setattr(hook, "_ensure_user", lambda user, roles: created.append((user, roles)))
    monkeypatch.setattr(hook, "_basic_auth", lambda: flask.request.authorization
                        if flask.request.authorization.password == "right" else flask.Response(status=401))
    return flask.Flask("t"), created


def _outcome(app: flask.Flask, headers: dict, peer: str = "10.8.0.7"):
    with app.test_request_context("/api/2.0/mlflow/experiments/search", headers=headers,
                                  environ_base={"REMOTE_ADDR": peer}):
        first = hook.authenticate_request()
        assert hook.authenticate_request() is first  # one verdict per request
        return first


def _basic(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a_person_through_iap_is_their_email_and_becomes_a_user(server):
    app, created = server
    outcome = _outcome(app, {hook.ASSERTION_HEADER: IAP_KEY.sign("ada@example.com")})
    assert outcome.username == "ada@example.com"
    assert created == [("ada@example.com", ["team-all"])]


def test_a_bad_assertion_is_401_even_with_the_admin_password_beside_it(server):
    app, created = server
    forged = SigningKey.new("iap-1").sign("admin@example.com")
    outcome = _outcome(app, {hook.ASSERTION_HEADER: forged, **_basic("admin", "right")})
    assert outcome.status_code == 401 and b"Could not verify token signature" in outcome.data
    assert created == []


def test_without_an_assertion_only_the_listed_machine_users_may_use_a_password(server):
    app, _ = server
    assert _outcome(app, _basic("admin", "right")).username == "admin"
    assert _outcome(app, _basic("admin", "wrong")).status_code == 401
    person = _outcome(app, _basic("ada@example.com", "right"))
    assert person.status_code == 401 and b"sign in through Identity-Aware Proxy" in person.data
    assert _outcome(app, {}).status_code == 401


def test_an_assertion_that_cannot_be_checked_for_want_of_keys_is_503_not_500(server, monkeypatch):
    app, created = server
    down = FlakyKeys()
    down.down = True
    monkeypatch.setitem(hook._state, "keys", KeyCache("https://keys", fetch=down))
    outcome = _outcome(app, {hook.ASSERTION_HEADER: IAP_KEY.sign("ada@example.com")})
    assert outcome.status_code == 503 and b"no usable IAP keys" in outcome.data
    assert created == []


@pytest.mark.parametrize("peer", ["130.211.0.9", "35.191.12.4"], ids=["google-front-end", "health-checker-range"])
def test_no_password_is_taken_from_googles_load_balancers_so_iap_switched_off_exposes_none(server, peer):
    app, _ = server
    outcome = _outcome(app, _basic("admin", "right"), peer=peer)
    assert outcome.status_code == 401 and b"kubectl port-forward" in outcome.data
    assert _outcome(app, _basic("mlflow-serving", "right"), peer=peer).status_code == 401
    assert _outcome(app, _basic("admin", "right"), peer="127.0.0.1").username == "admin"  # port-forward
    assert _outcome(app, _basic("mlflow-serving", "right"), peer="10.8.3.4").username == "mlflow-serving"
    assert _outcome(app, {hook.ASSERTION_HEADER: IAP_KEY.sign("ada@example.com")}, peer=peer).username == "ada@example.com"


def test_the_tracking_server_is_told_googles_load_balancer_ranges_and_the_in_cluster_password_users(stack_runs):
    from loadtest.stack.templates import USERNAME as LOAD_TEST_USER

    tracking = stack_runs["prod"].named("mlflow-deployment")
    env = {e["name"]: e.get("value") for c in tracking.inputs["spec"]["template"]["spec"]["containers"]
           for e in c.get("env", [])}
    assert env[hook.LOAD_BALANCER_RANGES_ENV].split(",") == list(GOOGLE_LB_RANGES)
    # the load test and the drift job run in the cluster, without IAP: they log in by password
    assert env[hook.BASIC_AUTH_USERS_ENV].split(",") == ["admin", "mlflow-serving", "mlflow-drift", LOAD_TEST_USER]


def test_settings_come_from_the_environment_and_refuse_a_missing_key_url():
    settings = hook.Settings.from_env({hook.KEYS_URL_ENV: "https://keys", hook.PROJECT_NUMBER_ENV: "1",
                                       hook.BASIC_AUTH_USERS_ENV: "admin,mlflow-serving",
                                       hook.DOMAIN_ROLES_ENV: "risk.example.com=team-risk,example.com=team-all"})
    assert settings.basic_auth_users == {"admin", "mlflow-serving"} and settings.audience == Audience("1")
    assert settings.roles_for("bob@risk.example.com") == ["team-risk"]
    assert settings.roles_for("eve@example.com") == ["team-all"]
    assert settings.roles_for("mallory@notrisk.example.com") == []
    with pytest.raises(RuntimeError, match=hook.KEYS_URL_ENV):
        hook.Settings.from_env({hook.PROJECT_NUMBER_ENV: "1"})
