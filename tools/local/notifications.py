"""The recording sink: `make local`'s stand-in for Cloud Monitoring's notification channels.

On GCP a notification is a log line a log-based alert policy matches (infra/monitoring.py): every
`mlflow.notify` line (registry events from the webhook receiver, refused promotions and rollbacks from
`make promote`), and a drift score above its threshold (the drift policy on the log-based metric). Here the
same lines, read from the pods' logs and from `make promote`, land in WORKDIR/notifications.jsonl, one JSON
object with its `kind` per notification.

A serving or tracking alert is a PromQL alert policy firing: locally Prometheus evaluates the plan's policies
and Alertmanager posts what fires or resolves to the sink's webhook (`AlertWebhook`, tools/local/alerts.py),
recorded as `{"kind": "alert", "alert": ..., "status": "firing"|"resolved", "labels": {...}}`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Optional

from tools.local.processes import free_port

from infra.monitoring import DRIFT_SCORE_MESSAGE, NOTIFY_MESSAGE

NOTIFICATIONS_FILE = "notifications.jsonl"
DRIFT = "drift"
ALERT = "alert"
WEBHOOK_PATH = "/alerts"


def notification(line: str) -> Optional[dict]:
    """What a channel would receive for one log line, or None for a line no policy matches."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    if entry.get("message") == NOTIFY_MESSAGE:
        return entry
    if entry.get("message") == DRIFT_SCORE_MESSAGE and entry.get("psi", 0) > entry.get("threshold", float("inf")):
        return {**entry, "kind": DRIFT}
    return None


def alert_notifications(payload: dict) -> list[dict]:
    """One notification per alert of an Alertmanager webhook payload (version 4)."""
    return [{"kind": ALERT, "alert": alert["labels"]["alertname"], "status": alert["status"],
             "labels": alert["labels"], "display_name": alert.get("annotations", {}).get("display_name"),
             "starts_at": alert.get("startsAt"), "ends_at": alert.get("endsAt")}
            for alert in payload.get("alerts", [])]


class RecordingSink:
    """Appends each notification to WORKDIR/notifications.jsonl (several writers: one lock)."""

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / NOTIFICATIONS_FILE
        self._lock = threading.Lock()

    def record(self, entry: dict) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")

    def scan(self, lines: Iterable[str]) -> int:
        """Records the notifications among `lines`; returns how many."""
        found = [entry for entry in map(notification, lines) if entry is not None]
        for entry in found:
            self.record(entry)
        return len(found)

    def received(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class AlertWebhook:
    """The sink's HTTP endpoint, in this process: Alertmanager's webhook receiver posts here."""

    def __init__(self, sink: RecordingSink):
        self.sink = sink
        self.port = free_port()
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start(self) -> None:
        sink = self.sink

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != WEBHOOK_PATH:
                    self.send_response(404)
                else:
                    for entry in alert_notifications(json.loads(body)):
                        sink.record(entry)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # the sink's file is the record
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="alert-webhook", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
