"""Platform events as notifications: one structured log line each, which a log-based alert policy with
the stack's notification channels turns into an e-mail or chat message (infra/monitoring.py), and which
`make local`'s recording sink writes to WORKDIR/notifications.jsonl.

MLflow's model-registry webhooks deliver registry events to the receiver (`python -m mlflow_notify
serve`); it checks MLflow's HMAC signature before it believes one. `make promote` reports refused
promotions and rollbacks with `notice` too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from typing import Any, Mapping, Optional, TextIO

NOTIFY_MESSAGE = "mlflow.notify"
VERSION_REGISTERED = "version_registered"
ALIAS_MOVED = "alias_moved"
PROMOTION_REFUSED = "promotion_refused"
ROLLED_BACK = "rolled_back"
KINDS = (VERSION_REGISTERED, ALIAS_MOVED, PROMOTION_REFUSED, ROLLED_BACK)
# The registry events the webhook subscribes to, and the notification each becomes.
EVENTS = {"model_version.created": VERSION_REGISTERED, "model_version_alias.created": ALIAS_MOVED}
# MLflow's webhook headers and signature scheme (mlflow/webhooks/constants.py, delivery.py in 3.17):
# v1,base64(HMAC-SHA256(secret, "DELIVERY_ID.TIMESTAMP.BODY")).
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# A delivery older (or newer) than this is refused: a captured request cannot be replayed later.
TOLERANCE_SECONDS = 300


def notice(kind: str, text: str, **fields: Any) -> dict:
    """The log entry of one notification; Cloud Logging reads `severity` and `message`."""
    if kind not in KINDS:
        raise ValueError(f"notification kind {kind!r}; allowed: {', '.join(KINDS)}")
    return {"message": NOTIFY_MESSAGE, "severity": "NOTICE", "kind": kind, "text": text, **fields}


def emit(entry: Mapping[str, Any], stream: Optional[TextIO] = None) -> None:
    """One line on stdout (the pod's log) or `stream`."""
    stream = stream or sys.stdout
    stream.write(json.dumps(entry, sort_keys=True) + "\n")
    stream.flush()


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verified(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether a delivery carries MLflow's signature made with `secret`, within TOLERANCE_SECONDS of `now`."""
    delivery_id, timestamp = headers.get(DELIVERY_ID_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and timestamp.isdigit() and given):
        return False
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(given, signature(secret, delivery_id, timestamp, body))


def event_notice(delivery: Mapping[str, Any]) -> Optional[dict]:
    """The notification of one webhook delivery (`{"entity", "action", "data", ...}`), or None for an event
    that notifies nobody."""
    kind = EVENTS.get(f"{delivery.get('entity')}.{delivery.get('action')}")
    data = delivery.get("data") or {}
    if kind is None:
        return None
    name, version = data.get("name"), data.get("version")
    if kind == VERSION_REGISTERED:
        text = f"{name} version {version} was registered"
        return notice(kind, text, model=name, version=str(version), run_id=data.get("run_id"))
    text = f"{name}@{data.get('alias')} now points to version {version}"
    return notice(kind, text, model=name, version=str(version), alias=data.get("alias"))
