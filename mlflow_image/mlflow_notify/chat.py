"""The chat relay: Cloud Monitoring's incidents, from the alerts' Pub/Sub subscription, to a chat webhook.

Every alert policy notifies a `pubsub` channel (infra/chat.py); registry events, refused promotions and
rollbacks are alerts too (the log-match policy), so each notification arrives here exactly once. The relay
pulls the subscription, posts each incident to the chat webhook as `{"text": ...}` (what Google Chat and
Slack incoming webhooks accept) and acknowledges a message only after the webhook answered 2xx; anything
else leaves it for Pub/Sub to deliver again (it keeps unacknowledged messages 7 days).

The URL is read from Secret Manager when there is something to post, never logged, never in an error: it
names the chat space and is its only credential. Google calls carry the pod's Workload Identity token; the
post to the webhook carries none.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from mlflow_notify import emit

PUBSUB_API = "https://pubsub.googleapis.com/v1"
SECRET_MANAGER_API = "https://secretmanager.googleapis.com/v1"
# Cloud Monitoring's notification schema (the `version` field of each message); the fields read below are
# those Google documents for it (incident_id, policy_name, condition_name, state, summary, url, metric.labels).
SCHEMA_VERSION = "1.2"
MAX_MESSAGES = 10
POST_TIMEOUT = 10
# A pull waits this long for messages; the Google session's own timeout is longer.
PULL_TIMEOUT = 60
IDLE_SECONDS = 30
# Between pulls that found nothing: alerts are minutes apart at best, a few seconds more cost nobody.
POLL_SECONDS = 5


class RelayError(RuntimeError):
    """A Google call failed; the message names the call and status, never a value."""


def incident_text(data: bytes) -> str:
    """The chat text of one Pub/Sub message holding a Monitoring notification (schema 1.2)."""
    document = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("incident"), dict):
        raise ValueError("not a Cloud Monitoring notification: no `incident` object")
    if document.get("version") != SCHEMA_VERSION:
        raise ValueError(f"notification schema {document.get('version')!r}; this relay reads {SCHEMA_VERSION}")
    incident = document["incident"]
    # A log-match policy's extracted labels (the platform event's own sentence) are the incident's metric labels.
    labels = (incident.get("metric") or {}).get("labels") or {}
    state = str(incident.get("state") or "").lower()
    what = labels.get("text") or incident.get("summary") or incident.get("condition_name") or ""
    heading = f"{'Resolved' if state == 'closed' else 'Firing'}: {incident.get('policy_name', 'alert')}"
    return "\n".join(part for part in (heading, what, incident.get("url")) if part)


@dataclass(frozen=True)
class Outcome:
    posted: int = 0
    """Messages posted and acknowledged."""
    dropped: int = 0
    """Messages that are no notification (acknowledged, logged: redelivery cannot fix them)."""
    kept: int = 0
    """Messages left for redelivery (no URL yet, or the webhook did not answer 2xx)."""


class ChatRelay:
    """One pull, post and acknowledge at a time. `google`: an authorised session (google-auth's
    AuthorizedSession on GKE); `post`: an unauthenticated `requests.post`-like callable for the webhook."""

    def __init__(self, subscription: str, url_secret: str, google: Any, post: Callable[..., Any],
                 pubsub_api: str = PUBSUB_API, secret_api: str = SECRET_MANAGER_API):
        self.subscription, self.url_secret = subscription, url_secret
        self.google, self.post = google, post
        self.pubsub_api, self.secret_api = pubsub_api.rstrip("/"), secret_api.rstrip("/")

    def _google(self, method: str, url: str, what: str, **kwargs: Any) -> Mapping[str, Any]:
        response = getattr(self.google, method)(url, **kwargs)
        if response.status_code // 100 != 2:
            raise RelayError(f"{what} answered {response.status_code}")
        return response.json() if response.content else {}

    def chat_url(self) -> Optional[str]:
        """The URL's newest version, or None while the secret has none (404) or it is disabled (400)."""
        response = self.google.get(f"{self.secret_api}/{self.url_secret}:access")
        if response.status_code in (400, 404):
            return None
        if response.status_code != 200:
            raise RelayError(f"Secret Manager access of {self.url_secret} answered {response.status_code}")
        return base64.b64decode(response.json()["payload"]["data"]).decode().strip()

    def once(self) -> Outcome:
        pulled = self._google("post", f"{self.pubsub_api}/{self.subscription}:pull", "Pub/Sub pull",
                              json={"maxMessages": MAX_MESSAGES}, timeout=PULL_TIMEOUT + 30)
        messages = pulled.get("receivedMessages") or []
        if not messages:
            return Outcome()
        url = self.chat_url()
        if url is None:
            emit({"message": "mlflow.notify.chat", "severity": "WARNING", "kept": len(messages),
                  "reason": "the chat webhook's URL is not set: run `make chat-webhook`"})
            return Outcome(kept=len(messages))
        done, posted, dropped = [], 0, 0
        for received in messages:
            status = self._relay(received.get("message") or {}, url)
            if status == "posted":
                posted += 1
            elif status == "dropped":
                dropped += 1
            if status != "kept":
                done.append(received["ackId"])
        if done:
            self._google("post", f"{self.pubsub_api}/{self.subscription}:acknowledge", "Pub/Sub acknowledge",
                         json={"ackIds": done}, timeout=PULL_TIMEOUT)
        return Outcome(posted=posted, dropped=dropped, kept=len(messages) - len(done))

    def _relay(self, message: Mapping[str, Any], url: str) -> str:
        message_id = message.get("messageId")
        try:
            text = incident_text(base64.b64decode(message.get("data") or ""))
        except ValueError as err:
            emit({"message": "mlflow.notify.chat", "severity": "WARNING", "message_id": message_id,
                  "reason": f"dropped: {err}"})
            return "dropped"
        try:
            response = self.post(url, json={"text": text}, timeout=POST_TIMEOUT)
            status = response.status_code
        except Exception as err:  # noqa: BLE001: a network error's text holds the URL; its type is enough
            status = type(err).__name__
        if isinstance(status, int) and status // 100 == 2:
            return "posted"
        emit({"message": "mlflow.notify.chat", "severity": "WARNING", "message_id": message_id,
              "reason": f"the chat webhook answered {status}: kept for redelivery"})
        return "kept"

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Forever: a failed Google call is logged and retried after a pause, never fatal to the receiver."""
        while True:
            try:
                outcome = self.once()
            except Exception as err:  # noqa: BLE001: Google's URLs and statuses only, never the chat URL
                emit({"message": "mlflow.notify.chat", "severity": "ERROR", "reason": f"{type(err).__name__}: {err}"})
                sleep(IDLE_SECONDS)
                continue
            if outcome.kept:
                sleep(IDLE_SECONDS)
            elif not outcome.posted and not outcome.dropped:
                sleep(POLL_SECONDS)
