"""A stand-in for Identity-Aware Proxy in front of the local tracking server.

`make local` of a stack with `edge.iap` (prod) starts it: a person signs in on its page by typing an
e-mail (where IAP would send them to Google), and every request of theirs reaches tracking with an
assertion signed by the stand-in's own ES256 key, in IAP's header and with IAP's claims. As IAP does,
it drops any `x-goog-*` header the client sent. The stand-in publishes its key as Google publishes
IAP's (a JSON map of key id to PEM), and the local tracking server is pointed at that URL instead of
Google's (tools/local/localize.py, rule 9): the server's check is the one it runs in the cloud.

Who may pass (IAP's own access check, `edge.iapMembers`) is Google's, not stood in for: anyone who
signs in here passes, and MLflow's permissions decide what they see.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import jwt
from google.auth.crypt import es256

from tools.local.processes import free_port

ASSERTION_HEADER = "x-goog-iap-jwt-assertion"
ISSUER = "https://cloud.google.com/iap"
KEYS_PATH = "/_stand_in_iap/keys"
SIGN_IN_PATH = "/_stand_in_iap/sign_in"
USER_COOKIE = "stand_in_iap_user"
# Any numeric id: locally there is no backend service, and the tracking server's audience check is the
# project number's unless `edge.iapBackendServiceId` pins one (then the stand-in uses that).
LOCAL_BACKEND_SERVICE_ID = "1"
LIFETIME_SECONDS = 600  # IAP's assertions live 10 minutes
# Not forwarded: hop-by-hop headers (RFC 9110 7.6.1), the client's Host, and what IAP removes.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class SigningKey:
    """An ES256 key pair, as IAP signs with."""

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

    def sign(self, email: str, *, audience: str, issuer: str = ISSUER, lifetime: int = LIFETIME_SECONDS,
             issued_ago: int = 0) -> str:
        """An assertion with IAP's claims for `email`."""
        now = int(time.time()) - issued_ago
        claims = {"iss": issuer, "aud": audience, "email": email, "sub": f"accounts.google.com:{email}",
                  "iat": now, "exp": now + lifetime}
        return jwt.encode(es256.ES256Signer.from_string(self.private_pem, self.kid), claims).decode()


def backend_audience(project_number: str, backend_service_id: Optional[str]) -> str:
    """IAP's audience for a GKE Ingress backend."""
    return f"/projects/{project_number}/global/backendServices/{backend_service_id or LOCAL_BACKEND_SERVICE_ID}"


SIGN_IN_PAGE = """<!doctype html><title>Sign in (stand-in for IAP)</title>
<form method="get" action="{path}"><label>Google account e-mail <input name="email" type="email" required autofocus></label>
<button type="submit">Sign in</button></form>"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A browser that drops a connection it no longer needs is no error; anything else is reported."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class StandInIap:
    """The proxy on its own port, in front of `upstream` (tracking's load balancer), in this process."""

    def __init__(self, upstream_port: int, audience: str, port: Optional[int] = None):
        self.key = SigningKey.new("stand-in-iap-1")
        self.audience = audience
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def keys_url(self) -> str:
        return self.url + KEYS_PATH

    def sign_in_url(self, email: str) -> str:
        return f"{self.url}{SIGN_IN_PATH}?email={quote(email)}"

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), _handler(self))
        threading.Thread(target=self._server.serve_forever, name="stand-in-iap", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(iap: StandInIap) -> type[BaseHTTPRequestHandler]:
    keys_body = json.dumps({iap.key.kid: iap.key.public_pem}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _signed_in(self) -> Optional[str]:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            return unquote(cookie[USER_COOKIE].value) if USER_COOKIE in cookie else None

        def _sign_in(self) -> None:
            email = (parse_qs(urlsplit(self.path).query).get("email") or [""])[0].strip().lower()
            if "@" not in email:
                self._send(200, SIGN_IN_PAGE.format(path=SIGN_IN_PATH).encode(), {"Content-Type": "text/html"})
                return
            self._send(302, b"", {"Location": "/", "Set-Cookie": f"{USER_COOKIE}={quote(email)}; Path=/; HttpOnly"})

        def _proxy(self) -> None:
            path = urlsplit(self.path).path
            if path == KEYS_PATH:
                self._send(200, keys_body, {"Content-Type": "application/json"})
                return
            if path == SIGN_IN_PATH:
                self._sign_in()
                return
            email = self._signed_in()
            if email is None:  # IAP sends a browser to Google's sign-in
                self._send(302, b"", {"Location": SIGN_IN_PATH})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in _HOP_BY_HOP and not name.lower().startswith("x-goog-")}
            headers[ASSERTION_HEADER] = iap.key.sign(email, audience=iap.audience)
            headers["x-goog-authenticated-user-email"] = f"accounts.google.com:{email}"
            upstream = http.client.HTTPConnection("127.0.0.1", iap.upstream_port, timeout=300)
            try:
                upstream.request(self.command, self.path, body=body,
                                 headers={**headers, "Host": f"127.0.0.1:{iap.upstream_port}"})
                answer = upstream.getresponse()
                data = answer.read()
                self._send(answer.status, data, {name: value for name, value in answer.getheaders()
                                                 if name.lower() not in _HOP_BY_HOP})
            finally:
                upstream.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _proxy

        def log_message(self, *args) -> None:
            pass

    return Handler
