"""The chat relay (mlflow_image/mlflow_notify/chat.py): Cloud Monitoring's Pub/Sub notifications decoded as
Google documents them, posted to a real HTTP chat endpoint, acknowledged only after a 2xx, and the URL never
in a log line nor sent Google's token."""

from __future__ import annotations

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_notify.chat import ChatRelay, incident_text  # noqa: E402

pytestmark = pytest.mark.unit
SUBSCRIPTION = "projects/p/subscriptions/mlflow-alerts-chat"
URL_SECRET = "projects/p/secrets/mlflow-chat-webhook-url/versions/latest"
GOOGLE = "https://google.test/v1"

# A threshold incident as Google's schema 1.2 shapes it (Cloud Monitoring, "Pub/Sub" notification channels).
THRESHOLD_INCIDENT = {
    "incident": {
        "incident_id": "0.mtdi83m6w8ao",
        "scoping_project_id": "my-mlflow-prod",
        "scoping_project_number": 123456789012,
        "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.mtdi83m6w8ao?project=my-mlflow-prod",
        "started_at": 1675315787,
        "ended_at": None,
        "state": "open",
        "resource_id": "",
        "resource_name": "my-mlflow-prod Cloud SQL Database",
        "resource": {"type": "cloudsql_database", "labels": {"project_id": "my-mlflow-prod"}},
        "resource_type_display_name": "Cloud SQL Database",
        "metric": {"type": "cloudsql.googleapis.com/database/disk/utilization",
                   "displayName": "Storage utilization", "labels": {}},
        "metadata": {"system_labels": {}, "user_labels": {}},
        "policy_name": "MLflow prod: Cloud SQL storage above 85%",
        "policy_user_labels": {"app": "mlflow", "env": "prod", "managed-by": "pulumi"},
        "documentation": {"content": "Storage grows automatically...", "mime_type": "text/markdown"},
        "condition": {"name": "projects/my-mlflow-prod/alertPolicies/1/conditions/2",
                      "displayName": "Cloud SQL disk utilisation"},
        "condition_name": "Cloud SQL disk utilisation",
        "threshold_value": "0.85",
        "observed_value": "0.912",
        "summary": "Storage utilization for my-mlflow-prod Cloud SQL Database is above the threshold of 0.850 "
                   "with a value of 0.912.",
    },
    "version": "1.2",
}


def log_match_incident(text: str, state: str = "open") -> dict:
    """The notifications policy's incident: its label extractors' values are the incident's metric labels."""
    incident = json.loads(json.dumps(THRESHOLD_INCIDENT))
    incident["incident"].update(policy_name="MLflow prod: platform event", condition_name="a notification line",
                                state=state, summary="Log match condition fired",
                                metric={"type": "logging.googleapis.com/log_entry_count", "displayName": "",
                                        "labels": {"kind": "version_registered", "text": text, "model": "iris"}})
    return incident


def test_a_threshold_incident_reads_as_its_policy_summary_and_link():
    text = incident_text(json.dumps(THRESHOLD_INCIDENT).encode())
    assert text.splitlines() == ["Firing: MLflow prod: Cloud SQL storage above 85%",
                                 THRESHOLD_INCIDENT["incident"]["summary"], THRESHOLD_INCIDENT["incident"]["url"]]


def test_a_platform_event_reads_as_its_own_sentence_and_a_closed_incident_as_resolved():
    opened = incident_text(json.dumps(log_match_incident("iris version 3 was registered")).encode())
    assert opened.splitlines()[:2] == ["Firing: MLflow prod: platform event", "iris version 3 was registered"]
    closed = incident_text(json.dumps(log_match_incident("iris version 3 was registered", "closed")).encode())
    assert closed.startswith("Resolved: MLflow prod: platform event")


@pytest.mark.parametrize("document", [{"version": "1.2"}, {**THRESHOLD_INCIDENT, "version": "1.1"}, ["x"]])
def test_what_is_no_schema_1_2_notification_is_refused(document):
    with pytest.raises(ValueError):
        incident_text(json.dumps(document).encode())


class Response:
    def __init__(self, status: int, body: Optional[dict] = None):
        self.status_code, self._body = status, body
        self.content = b"" if body is None else json.dumps(body).encode()

    def json(self) -> Any:
        return self._body


class FakeGoogle:
    """Pub/Sub (one subscription: pull, acknowledge) and Secret Manager (access), as their REST APIs answer."""

    def __init__(self, messages: list[bytes], url: Optional[str]):
        self.pending = {f"ack-{i}": data for i, data in enumerate(messages)}
        self.acked: list[str] = []
        self.url = url

    def post(self, url: str, json: dict, timeout: float) -> Response:
        if url == f"{GOOGLE}/{SUBSCRIPTION}:pull":
            received = [{"ackId": ack, "message": {"messageId": ack, "data": base64.b64encode(data).decode()}}
                        for ack, data in list(self.pending.items())[:json["maxMessages"]]]
            return Response(200, {"receivedMessages": received} if received else {})
        if url == f"{GOOGLE}/{SUBSCRIPTION}:acknowledge":
            for ack in json["ackIds"]:
                self.pending.pop(ack)
                self.acked.append(ack)
            return Response(200, {})
        return Response(404, {"error": {"code": 404}})

    def get(self, url: str) -> Response:
        if url != f"{GOOGLE}/{URL_SECRET}:access":
            return Response(404, {"error": {"code": 404}})
        if self.url is None:  # a secret without versions
            return Response(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
        return Response(200, {"name": URL_SECRET, "payload": {"data": base64.b64encode(self.url.encode()).decode()}})


@pytest.fixture
def chat_endpoint():
    """A chat webhook recording what it is posted; `status` is what it answers."""
    posts: list[dict] = []

    class Chat(BaseHTTPRequestHandler):
        status = 200

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            self.send_response(Chat.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the URL's path is the chat space's credential, as in Google Chat's and Slack's webhooks
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/spaces/AAA/messages?key=k3y&token=t0ken-s3cret"
    yield url, posts, Chat
    server.shutdown()


def relay(google: FakeGoogle) -> ChatRelay:
    import requests

    return ChatRelay(SUBSCRIPTION, URL_SECRET, google, requests.post, pubsub_api=GOOGLE, secret_api=GOOGLE)


def messages() -> list[bytes]:
    return [json.dumps(THRESHOLD_INCIDENT).encode(), json.dumps(log_match_incident("iris@champion now points to "
                                                                                   "version 3")).encode()]


def test_each_incident_is_posted_as_text_then_acknowledged_without_googles_token(chat_endpoint, capsys):
    url, posts, _ = chat_endpoint
    google = FakeGoogle(messages(), url)
    outcome = relay(google).once()
    assert (outcome.posted, outcome.kept) == (2, 0) and sorted(google.acked) == ["ack-0", "ack-1"]
    assert [post["body"]["text"].splitlines()[1] for post in posts] == [
        THRESHOLD_INCIDENT["incident"]["summary"], "iris@champion now points to version 3"]
    assert all(set(post["body"]) == {"text"} for post in posts)
    assert not any("Authorization" in post["headers"] for post in posts)
    assert "t0ken-s3cret" not in capsys.readouterr().out


def test_without_a_url_nothing_is_posted_or_acknowledged(chat_endpoint, capsys):
    _, posts, _ = chat_endpoint
    google = FakeGoogle(messages(), None)
    assert relay(google).once().kept == 2
    assert posts == [] and google.acked == [] and len(google.pending) == 2
    assert "make chat-webhook" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [500, 404])
def test_a_refused_post_is_kept_for_redelivery_and_logged_without_the_url(chat_endpoint, capsys, answer):
    url, posts, chat = chat_endpoint
    chat.status = answer
    google = FakeGoogle(messages()[:1], url)
    assert relay(google).once().kept == 1 and google.acked == [] and len(posts) == 1
    logged = capsys.readouterr().out
    assert f"answered {answer}" in logged and "t0ken-s3cret" not in logged and "/spaces/" not in logged


def test_an_unreachable_webhook_is_logged_without_the_url_its_error_names(chat_endpoint, capsys):
    url, _, _ = chat_endpoint
    closed = url.replace(url.split("/")[2], "127.0.0.1:9")  # the discard port: nothing listens
    google = FakeGoogle(messages()[:1], closed)
    assert relay(google).once().kept == 1 and google.acked == []
    logged = capsys.readouterr().out
    assert "ConnectionError" in logged and "t0ken-s3cret" not in logged and "127.0.0.1:9" not in logged


def test_a_message_that_is_no_notification_is_dropped_once_not_redelivered_forever(chat_endpoint, capsys):
    url, posts, _ = chat_endpoint
    google = FakeGoogle([b"not json", json.dumps({"version": "1.2"}).encode()], url)
    outcome = relay(google).once()
    assert (outcome.dropped, outcome.posted) == (2, 0) and sorted(google.acked) == ["ack-0", "ack-1"] and posts == []
    assert capsys.readouterr().out.count("dropped") == 2


def test_the_subscription_outlasts_a_whole_pull_being_posted():
    # A deadline shorter than one pull's posts has Pub/Sub deliver them again while they are posted: duplicates.
    from infra.chat import ACK_DEADLINE_SECONDS
    from mlflow_notify.chat import MAX_MESSAGES, POST_TIMEOUT

    assert ACK_DEADLINE_SECONDS > MAX_MESSAGES * POST_TIMEOUT
