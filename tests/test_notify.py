"""Notifications (mlflow_image/mlflow_notify): MLflow's webhook signature checked as MLflow makes it,
registry events turned into notification lines, and the receiver refusing what it cannot trust."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_notify import (  # noqa: E402
    ALIAS_MOVED, DELIVERY_ID_HEADER, NOTIFY_MESSAGE, SIGNATURE_HEADER, TIMESTAMP_HEADER, VERSION_REGISTERED,
    event_notice, notice, signature, verified,
)
from mlflow_notify.__main__ import WEBHOOK_PATH, handler  # noqa: E402

pytestmark = pytest.mark.unit
SECRET = "s3cret"


def delivery(body: bytes, secret=SECRET, at=None, delivery_id="d-1") -> dict:
    timestamp = str(int(at if at is not None else time.time()))
    return {DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, delivery_id, timestamp, body), "Content-Type": "application/json"}


def test_the_signature_is_mlflows_own():
    """The same value MLflow 3.17's delivery computes (mlflow.webhooks.delivery._generate_hmac_signature)."""
    delivery_mod = pytest.importorskip("mlflow.webhooks.delivery")
    body = '{"entity": "model_version"}'
    assert signature(SECRET, "id", "1700000000", body.encode()) == \
        delivery_mod._generate_hmac_signature(SECRET, "id", "1700000000", body)


def test_a_wrong_secret_a_changed_body_or_a_stale_delivery_is_refused():
    body = b'{"a": 1}'
    now = time.time()
    assert verified(SECRET, delivery(body), body, now)
    assert not verified(SECRET, delivery(body, secret="other"), body, now)
    assert not verified(SECRET, delivery(body), b'{"a": 2}', now)
    assert not verified(SECRET, delivery(body, at=now - 3600), body, now)
    assert not verified(SECRET, {}, body, now)


def test_registry_events_become_notifications():
    registered = event_notice({"entity": "model_version", "action": "created",
                               "data": {"name": "fraud", "version": "4", "run_id": "r1"}})
    assert registered["kind"] == VERSION_REGISTERED and registered["message"] == NOTIFY_MESSAGE
    assert "fraud version 4" in registered["text"]
    moved = event_notice({"entity": "model_version_alias", "action": "created",
                          "data": {"name": "fraud", "alias": "champion", "version": "4"}})
    assert moved["kind"] == ALIAS_MOVED and moved["alias"] == "champion"
    assert event_notice({"entity": "model_version_tag", "action": "set", "data": {}}) is None
    with pytest.raises(ValueError, match="allowed"):
        notice("nonsense", "x")


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(SECRET))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def post(url: str, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(url + WEBHOOK_PATH, data=body, headers=headers, method="POST")
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as err:
        return err.code


def test_the_receiver_notifies_only_for_signed_deliveries(receiver, capsys):
    url = receiver
    body = json.dumps({"entity": "model_version", "action": "created",
                       "data": {"name": "fraud", "version": "5"}}).encode()
    assert post(url, body, delivery(body, secret="forged")) == 401
    assert post(url, body, delivery(body)) == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("kind") for line in lines] == [None, VERSION_REGISTERED]
    assert lines[0]["severity"] == "WARNING"
