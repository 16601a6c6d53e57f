"""People and machines as Google says they are: MLflow's `authorization_function` behind IAP.

The auth config names `mlflow_iap_auth:authenticate_request`. A request that carries IAP's signed
assertion (`x-goog-iap-jwt-assertion`) is the person or service account IAP let through: its ES256
signature is checked against the keys at MLFLOW_IAP_KEYS_URL (Google's, or `make local`'s stand-in),
then the issuer, the expiry and the audience; its e-mail becomes the MLflow user, created on first
sign-in with a random password nobody knows. A request with an assertion that fails any check is
refused with 401; it never falls back to a password. Without any usable key to check it: 503.

A request without an assertion did not come through IAP (IAP strips client-sent `x-goog-*` headers
and adds its own): only the basic-auth users named in MLFLOW_IAP_BASIC_AUTH_USERS (the break-glass
admin and the in-cluster machine users) may then log in with their password; anyone else gets 401.
Not from Google's load balancers though (MLFLOW_IAP_LOAD_BALANCER_RANGES): a password request from the
Ingress means IAP was switched off in front of it, and the public path must not take passwords.
https://cloud.google.com/iap/docs/signed-headers-howto
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from google.auth import exceptions as google_exceptions
from google.auth import jwt

ASSERTION_HEADER = "x-goog-iap-jwt-assertion"
ISSUER = "https://cloud.google.com/iap"
ALGORITHM = "ES256"
GOOGLE_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
# Google allows 30 s of clock skew on `iat` and `exp`.
CLOCK_SKEW_SECONDS = 30
# The audience of a GKE Ingress backend: the backend service's numeric id is chosen by the Ingress
# controller, not by the program, so the project number is what the program can pin
# (docs: Compute Engine and GKE audiences are /projects/PROJECT_NUMBER/global/backendServices/SERVICE_ID).
_BACKEND_AUDIENCE = re.compile(r"^/projects/(?P<number>\d+)/global/backendServices/(?P<service>\d+)$")
KEYS_REFRESH_SECONDS = 3600
# A token naming a key id the cache lacks triggers a refetch, at most this often (IAP rotates keys).
UNKNOWN_KEY_REFETCH_SECONDS = 60
# Google's key endpoint failing: the last good keys stay trusted this long (IAP rotates keys far less often).
STALE_KEYS_MAX_SECONDS = 24 * 3600
FETCH_BACKOFF_SECONDS = (5, 300)  # after a failed fetch: first wait, doubling up to the second
FETCH_TIMEOUT_SECONDS = 5  # requests wait on the lock meanwhile

KEYS_URL_ENV = "MLFLOW_IAP_KEYS_URL"
PROJECT_NUMBER_ENV = "MLFLOW_IAP_PROJECT_NUMBER"
BACKEND_SERVICE_ENV = "MLFLOW_IAP_BACKEND_SERVICE_ID"
BASIC_AUTH_USERS_ENV = "MLFLOW_IAP_BASIC_AUTH_USERS"
# `DOMAIN=ROLE,...`: the team roles (made by the access Job) a new user of DOMAIN joins at first sign-in.
DOMAIN_ROLES_ENV = "MLFLOW_IAP_DOMAIN_ROLES"
# CIDRs, comma-separated: the peers of requests that came through Google's load balancers (the Ingress).
LOAD_BALANCER_RANGES_ENV = "MLFLOW_IAP_LOAD_BALANCER_RANGES"
ROLE_WORKSPACE = "default"
_log = logging.getLogger(__name__)


class AssertionRefused(Exception):
    """The assertion is not one IAP made for this backend; the message says which check failed."""


@dataclass(frozen=True)
class Audience:
    """Which backend service an assertion must be for: this project's, and this service when its id is known."""

    project_number: str
    backend_service_id: Optional[str] = None

    def check(self, claim: object) -> None:
        match = _BACKEND_AUDIENCE.match(claim) if isinstance(claim, str) else None
        if match is None or match["number"] != self.project_number:
            raise AssertionRefused(f"audience {claim!r} is not a backend service of project {self.project_number}")
        if self.backend_service_id and match["service"] != self.backend_service_id:
            raise AssertionRefused(f"audience {claim!r} is not backend service {self.backend_service_id}")


def verify_assertion(token: str, keys: Mapping[str, str], audience: Audience) -> str:
    """The e-mail of a valid assertion (signature by one of `keys`, kid → PEM public key; issuer;
    iat/exp; audience), lower-cased; AssertionRefused otherwise."""
    try:
        header = jwt.decode_header(token)
    except (ValueError, google_exceptions.GoogleAuthError) as err:
        raise AssertionRefused(f"malformed assertion: {err}") from None
    if header.get("alg") != ALGORITHM:
        raise AssertionRefused(f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
    if header.get("kid") not in keys:
        raise AssertionRefused(f"key id {header.get('kid')!r} is not one of the trusted keys")
    try:
        claims = jwt.decode(token, certs=keys, audience=None, clock_skew_in_seconds=CLOCK_SKEW_SECONDS)
    except (ValueError, google_exceptions.GoogleAuthError) as err:
        raise AssertionRefused(str(err)) from None
    if claims.get("iss") != ISSUER:
        raise AssertionRefused(f"issuer {claims.get('iss')!r} is not {ISSUER}")
    audience.check(claims.get("aud"))
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise AssertionRefused("the assertion names no e-mail")
    return email.lower()


class KeysUnavailable(Exception):
    """No trusted keys to check assertions with: answered 503, the request may be retried."""


class KeyCache:
    """IAP's public keys (JSON: kid → PEM), fetched at most every KEYS_REFRESH_SECONDS, or sooner when a
    token names a key id not yet seen (rotation), at most every UNKNOWN_KEY_REFETCH_SECONDS.

    A failed fetch keeps the last good keys for up to STALE_KEYS_MAX_SECONDS (a blip of Google's key
    endpoint refuses no one), and the next attempt waits FETCH_BACKOFF_SECONDS, doubling: one request at
    a time fetches, under the lock, the others use what is there. Without usable keys: KeysUnavailable."""

    def __init__(self, url: str, fetch: Optional[Callable[[str], Mapping[str, str]]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self._url, self._fetch, self._clock = url, fetch or _fetch_keys, clock
        self._keys: Mapping[str, str] = {}
        self._fetched_at: Optional[float] = None
        self._failures, self._retry_at, self._error = 0, float("-inf"), ""
        self._lock = threading.Lock()

    def keys_for(self, token: str) -> Mapping[str, str]:
        try:
            kid = jwt.decode_header(token).get("kid")
        except (ValueError, google_exceptions.GoogleAuthError):
            kid = None
        with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            wanted = age is None or age >= KEYS_REFRESH_SECONDS or (
                kid not in self._keys and age >= UNKNOWN_KEY_REFETCH_SECONDS)
            if wanted and now >= self._retry_at:
                self._refresh(now)
                age = None if self._fetched_at is None else now - self._fetched_at
            if age is None or age >= STALE_KEYS_MAX_SECONDS:
                raise KeysUnavailable(f"no usable IAP keys from {self._url}: {self._error}")
            return self._keys

    def _refresh(self, now: float) -> None:
        try:
            keys = _valid_keys(self._fetch(self._url))
        except (OSError, ValueError) as err:  # URLError and a bad body (JSONDecodeError) included
            self._failures += 1
            first, most = FETCH_BACKOFF_SECONDS
            self._retry_at = now + min(most, first * 2 ** (self._failures - 1))
            self._error = f"{type(err).__name__}: {err}"
            _log.warning("fetching IAP keys from %s failed (%s); %d keys kept, next try in %d s",
                         self._url, self._error, len(self._keys), self._retry_at - now)
            return
        self._keys, self._fetched_at, self._failures, self._retry_at = keys, now, 0, float("-inf")


def _valid_keys(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("the key endpoint did not answer a JSON object of key id to PEM")
    return dict(value)


def _fetch_keys(url: str) -> Mapping[str, str]:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 - a configured https/http URL
        return json.load(response)


@dataclass(frozen=True)
class Settings:
    keys_url: str
    audience: Audience
    basic_auth_users: frozenset[str]
    domain_roles: tuple[tuple[str, str], ...] = ()
    load_balancer_ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def through_load_balancer(self, peer: Optional[str]) -> bool:
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(address in network for network in self.load_balancer_ranges)

    def roles_for(self, email: str) -> list[str]:
        """The team roles a new user joins: those of the domain of their e-mail."""
        domain = email.rsplit("@", 1)[-1]
        return [role for role_domain, role in self.domain_roles if role_domain == domain]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        missing = [name for name in (KEYS_URL_ENV, PROJECT_NUMBER_ENV) if not env.get(name)]
        if missing:
            raise RuntimeError(f"mlflow_iap_auth needs {', '.join(missing)}")
        return cls(keys_url=env[KEYS_URL_ENV],
                   audience=Audience(env[PROJECT_NUMBER_ENV], env.get(BACKEND_SERVICE_ENV) or None),
                   basic_auth_users=frozenset(user for user in env.get(BASIC_AUTH_USERS_ENV, "").split(",") if user),
                   domain_roles=tuple(tuple(pair.split("=", 1)) for pair in env.get(DOMAIN_ROLES_ENV, "").split(",")
                                      if "=" in pair),
                   load_balancer_ranges=tuple(ipaddress.ip_network(cidr) for cidr
                                              in env.get(LOAD_BALANCER_RANGES_ENV, "").split(",") if cidr))


_state: dict = {}


def _settings_and_keys() -> tuple[Settings, KeyCache]:
    if "settings" not in _state:
        settings = Settings.from_env(os.environ)
        _state.update(settings=settings, keys=KeyCache(settings.keys_url))
    return _state["settings"], _state["keys"]


def _refused(text: str, status: int = 401):
    from flask import make_response

    response = make_response(f"Not signed in: {text}\n")
    response.status_code = status
    return response


def _ensure_user(username: str, roles: list[str]) -> None:
    """The MLflow user of a person or service account, created on first sign-in in the team roles of its
    domain (the access Job keeps them after). Its password is random and discarded: people never log in
    with one."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store

    known = _state.setdefault("users", set())
    if username in known:
        return
    if not store.has_user(username):
        try:
            user = store.create_user(username, secrets.token_urlsafe(32))
        except MlflowException as err:  # another request or replica created it first
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        else:
            for role in roles:
                try:
                    store.assign_role_to_user(user.id, store.get_role_by_name(ROLE_WORKSPACE, role).id)
                except MlflowException as err:  # the access Job has not made the role yet: it adds them
                    if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
    known.add(username)


def _basic_auth():
    """MLflow's own password check (scrypt, its cache), for the users allowed one."""
    from mlflow.server.auth import authenticate_request_basic_auth

    return authenticate_request_basic_auth()


def authenticate_request():
    """MLflow's hook: an `Authorization` naming the user, or a 401 response. Called many times per
    request, so the outcome is kept on `flask.g`."""
    from flask import g, request
    from werkzeug.datastructures import Authorization

    if "mlflow_iap_outcome" in g:
        return g.mlflow_iap_outcome
    settings, keys = _settings_and_keys()
    token = request.headers.get(ASSERTION_HEADER)
    if token is not None:
        try:
            username = verify_assertion(token, keys.keys_for(token), settings.audience)
        except AssertionRefused as err:
            outcome = _refused(str(err))
        except KeysUnavailable as err:
            outcome = _refused(f"{err}; try again shortly", status=503)
        else:
            _ensure_user(username, settings.roles_for(username))
            outcome = Authorization("basic", {"username": username, "password": ""})
    elif request.authorization is not None and request.authorization.username in settings.basic_auth_users:
        if settings.through_load_balancer(request.remote_addr):
            outcome = _refused("no password is accepted through the load balancer without IAP; "
                               "break-glass is `kubectl port-forward`")
        else:
            outcome = _basic_auth()
    else:
        outcome = _refused("sign in through Identity-Aware Proxy")
    g.mlflow_iap_outcome = outcome
    return outcome
