"""The receiver of MLflow's registry webhooks, and the Job that registers the webhook.

    python -m mlflow_notify serve --port 8080          # MLFLOW_NOTIFY_SECRET: the webhook's signing secret
    python -m mlflow_notify register --url URL         # as an admin (MLFLOW_TRACKING_URI/USERNAME/PASSWORD)

`serve` answers POST /webhook: 401 to a delivery without a valid signature (logged as a warning, no
notification), 200 otherwise, after printing the event's notification line (mlflow_notify.event_notice);
GET /live is its probe. `register` creates the webhook WEBHOOK_NAME, or updates it to the URL, events and
secret given, so it is declared by the Job rather than made by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping, Optional, Sequence

from mlflow_notify import EVENTS, emit, event_notice, verified
from mlflow_notify.chat import IDLE_SECONDS, ChatRelay

SECRET_ENV = "MLFLOW_NOTIFY_SECRET"
# The chat relay's subscription and URL secret version (k8s/notify.py sets both with `monitoring.notify.chat`).
SUBSCRIPTION_ENV = "MLFLOW_NOTIFY_SUBSCRIPTION"
CHAT_SECRET_ENV = "MLFLOW_NOTIFY_CHAT_URL_VERSION"
WEBHOOK_NAME = "mlflow-platform-notify"
WEBHOOK_PATH = "/webhook"
MAX_BODY = 1 << 20


def handler(secret: str) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(200 if self.path == "/live" else 404)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != WEBHOOK_PATH or length > MAX_BODY:
                self._answer(404 if self.path != WEBHOOK_PATH else 413)
                return
            body = self.rfile.read(length)
            if not verified(secret, self.headers, body, time.time()):
                emit({"message": "mlflow.notify.refused", "severity": "WARNING",
                      "reason": "missing, stale or wrong webhook signature"})
                self._answer(401)
                return
            entry = event_notice(json.loads(body))
            if entry is not None:
                emit(entry)
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args) -> None:  # noqa: A002: access lines would carry no more
            pass

    return Receiver


def register(url: str, secret: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    existing = [hook for hook in client.list_webhooks() if hook.name == WEBHOOK_NAME]
    events = list(EVENTS)
    if existing:
        client.update_webhook(existing[0].webhook_id, url=url, events=events, secret=secret, status="ACTIVE")
        return f"updated webhook {WEBHOOK_NAME} ({existing[0].webhook_id}) -> {url}"
    hook = client.create_webhook(name=WEBHOOK_NAME, url=url, events=events, secret=secret,
                                 description="registry events to the platform's notifications")
    return f"created webhook {WEBHOOK_NAME} ({hook.webhook_id}) -> {url}"


def start_chat_relay(environ: Mapping[str, str]) -> Optional[threading.Thread]:
    """With a subscription and a URL secret named (`monitoring.notify.chat`), the relay runs beside the server."""
    subscription, url_secret = environ.get(SUBSCRIPTION_ENV), environ.get(CHAT_SECRET_ENV)
    if not (subscription and url_secret):
        return None
    thread = threading.Thread(target=relay_forever, args=(subscription, url_secret), name="chat-relay", daemon=True)
    thread.start()
    return thread


def relay_forever(subscription: str, url_secret: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """The relay, once Google's credentials are found: without them (no Workload Identity, as on `make local`)
    it logs and waits instead of failing, so the registry webhooks keep being received."""
    import requests

    from mlflow_drift.sources import authorized_session

    while True:
        try:
            google = authorized_session()
            break
        except Exception as err:  # noqa: BLE001: google.auth's DefaultCredentialsError and transport errors
            emit({"message": "mlflow.notify.chat", "severity": "ERROR",
                  "reason": f"no Google credentials for Pub/Sub and Secret Manager: {type(err).__name__}"})
            sleep(IDLE_SECONDS)
    ChatRelay(subscription, url_secret, google, requests.post).run(sleep)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_notify")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="receive MLflow's webhooks")
    serve.add_argument("--port", type=int, default=8080)
    commands.add_parser("register", help="declare the webhook").add_argument("--url", required=True)
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        print(f"{SECRET_ENV} is not set: the webhook's signing secret", file=sys.stderr)
        return 2
    if args.command == "register":
        print(register(args.url, secret))
        return 0
    start_chat_relay(os.environ)
    ThreadingHTTPServer(("0.0.0.0", args.port), handler(secret)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
