"""IAP-shaped assertions signed with keys made here: what tests (and nothing else) use to be IAP."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt
from google.auth.crypt import es256

PROJECT_NUMBER = "123456789012"
AUDIENCE = f"/projects/{PROJECT_NUMBER}/global/backendServices/4242"
ISSUER = "https://cloud.google.com/iap"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    public_pem: str

    @classmethod
    def new(cls, kid: str) -> "SigningKey":
        key = ec.generate_private_key(ec.SECP256R1())
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return cls(kid, private, public)

    def sign(self, email: str, *, audience: str = AUDIENCE, issuer: str = ISSUER, lifetime: int = 600,
             issued_ago: int = 0) -> str:
        now = int(time.time()) - issued_ago
        claims = {"iss": issuer, "aud": audience, "email": email, "sub": f"accounts.google.com:{email}",
                  "iat": now, "exp": now + lifetime}
        return jwt.encode(es256.ES256Signer.from_string(self.private_pem, self.kid), claims).decode()
