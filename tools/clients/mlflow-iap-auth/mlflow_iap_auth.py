"""MLflow client plugin: pass Identity-Aware Proxy in front of a basic-auth tracking server.

IAP reads its token from `Proxy-Authorization` when the backend uses `Authorization` (MLflow's
basic auth), so both credentials travel together:

    pip install ./tools/clients/mlflow-iap-auth
    export MLFLOW_TRACKING_AUTH=iap MLFLOW_IAP_CLIENT_ID=<IAP programmatic client id (edge.iapOauthClientId)>
    export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...   # only if the server checks passwords

The platform's tracking server behind IAP takes the caller from IAP's signed assertion (the service
account's e-mail is the MLflow user), so there it needs no MLflow password.

The ID token is for a service account listed in `edge.iapMembers`: the one of Application Default
Credentials where that is a service account (CI, workloads), or, for a person logged in with
`gcloud auth application-default login`, the one named by MLFLOW_IAP_SERVICE_ACCOUNT, which the
person impersonates (roles/iam.serviceAccountTokenCreator on it). Google issues ID tokens for
other audiences only to service accounts.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase

CLIENT_ID_ENV = "MLFLOW_IAP_CLIENT_ID"
SERVICE_ACCOUNT_ENV = "MLFLOW_IAP_SERVICE_ACCOUNT"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Google ID tokens live an hour; refresh well before that.
TOKEN_LIFETIME_SECONDS = 50 * 60


def _fetch_id_token(audience: str) -> str:
    import google.auth
    import google.auth.transport.requests
    import google.oauth2.id_token
    from google.auth import impersonated_credentials

    request = google.auth.transport.requests.Request()
    service_account = os.environ.get(SERVICE_ACCOUNT_ENV)
    if not service_account:
        return google.oauth2.id_token.fetch_id_token(request, audience)
    source, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    target = impersonated_credentials.Credentials(source_credentials=source, target_principal=service_account,
                                                  target_scopes=[CLOUD_PLATFORM_SCOPE])
    credentials = impersonated_credentials.IDTokenCredentials(target, target_audience=audience, include_email=True)
    credentials.refresh(request)
    return credentials.token


class IapProxyAuth(AuthBase):
    """Adds `Proxy-Authorization: Bearer <ID token for the IAP client>`, leaving `Authorization` to basic auth."""

    def __init__(self, audience: str, fetch: Optional[Callable[[str], str]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.audience = audience
        self._fetch = fetch
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires:
                self._token = (self._fetch or _fetch_id_token)(self.audience)
                self._expires = self._clock() + TOKEN_LIFETIME_SECONDS
            return self._token

    def __call__(self, request):
        request.headers["Proxy-Authorization"] = f"Bearer {self.token()}"
        return request


# MLflow asks the provider for an auth object on every request: one per audience keeps the token.
_AUTH_BY_AUDIENCE: dict[str, IapProxyAuth] = {}


class IapRequestAuthProvider(RequestAuthProvider):
    """Selected by MLFLOW_TRACKING_AUTH=iap."""

    def get_name(self) -> str:
        return "iap"

    def get_auth(self) -> IapProxyAuth:
        audience = os.environ.get(CLIENT_ID_ENV)
        if not audience:
            raise RuntimeError(f"MLFLOW_TRACKING_AUTH=iap needs {CLIENT_ID_ENV}: the OAuth client id IAP protects "
                               "the tracking server with (`pulumi config get --path edge.iapOauthClientId`)")
        return _AUTH_BY_AUDIENCE.setdefault(audience, IapProxyAuth(audience))
