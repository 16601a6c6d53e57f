"""The recording sink `make local` uses in place of Cloud Monitoring's channels (tools/local/notifications.py),
and what `make promote` reports (tools/ops/notify.py): each kind lands with its kind, nothing else does."""

from __future__ import annotations

import json

import pytest

from tools.local.notifications import DRIFT, RecordingSink, notification
from tools.ops.notify import promotion_notice

pytestmark = pytest.mark.unit


def score(psi: float, threshold: float = 0.2) -> str:
    return json.dumps({"message": "mlflow.drift.score", "column": "x", "psi": psi, "threshold": threshold})


def test_only_notify_lines_and_drift_over_its_threshold_notify():
    assert notification(json.dumps({"message": "mlflow.notify", "kind": "alias_moved"}))["kind"] == "alias_moved"
    assert notification(score(0.5))["kind"] == DRIFT
    assert notification(score(0.2)) is None and notification(score(0.05)) is None
    assert notification(json.dumps({"message": "mlflow.serving.payload"})) is None
    assert notification("GET /health 200") is None


def test_promote_reports_a_refusal_and_a_rollback_as_their_kinds(tmp_path):
    sink = RecordingSink(tmp_path)
    sink.record(promotion_notice("fraud", "champion", "4", rolled_back=False, reason="gate failed"))
    sink.record(promotion_notice("fraud", "champion", "3", rolled_back=True, reason="serving answered 500"))
    assert sink.scan(["noise", score(1.0)]) == 1
    assert [entry["kind"] for entry in sink.received()] == ["promotion_refused", "rolled_back", DRIFT]
    assert "version 4 not promoted" in sink.received()[0]["text"]
