"""The recording sink: `make local`'s stand-in for Cloud Monitoring's notification channels.

On GCP a notification is a log line a log-based alert policy matches (infra/monitoring.py): every
`mlflow.notify` line (registry events from the webhook receiver, refused promotions and rollbacks from
`make promote`), and a drift score above its threshold (the drift policy on the log-based metric). Here the
same lines, read from the pods' logs and from `make promote`, land in WORKDIR/notifications.jsonl, one JSON
object with its `kind` per notification.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterable, Optional

from infra.monitoring import DRIFT_SCORE_MESSAGE, NOTIFY_MESSAGE

NOTIFICATIONS_FILE = "notifications.jsonl"
DRIFT = "drift"


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
