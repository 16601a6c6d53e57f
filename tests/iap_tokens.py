"""IAP-shaped assertions for tests: the stand-in's signing key (tools/local/iap.py), by default for a
backend service of the mocks' project (the plans render project number 123456789012)."""

from __future__ import annotations

from tools.local.iap import SigningKey as StandInKey
from tools.local.iap import backend_audience

PROJECT_NUMBER = "123456789012"
AUDIENCE = backend_audience(PROJECT_NUMBER, "4242")


class SigningKey(StandInKey):
    def sign(self, email: str, *, audience: str = AUDIENCE, **claims) -> str:
        return super().sign(email, audience=audience, **claims)
