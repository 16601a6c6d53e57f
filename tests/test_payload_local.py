"""The payload log end to end on `make local`: the rendered dev serving pod, with columns redacted and half
the requests sampled, answers concurrent requests of every input format; the local sink's stand-in
(WORKDIR/payloads.jsonl) then holds one entry per sampled request, with that request's own outputs, the
dropped and hashed columns' raw values nowhere in it, and hashes keyed with the stand-in Secret Manager's key."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tools.local.testing import scratch_platform
from tools.offline.plan import write_plan
from tools.offline.render import render
from tools.offline.stack import run_stack

sys.path.insert(0, "mlflow_image")
from mlflow_serving.payload_log import HASH_HEX_CHARS, HASH_PREFIX, read_entries  # noqa: E402

pytestmark = pytest.mark.slow

RATE = 0.5
REQUESTS = 160
# With RATE and REQUESTS, the count logged is binomial (mean 80, sd ~6.3): outside these bounds ~1 in 10^8.
LOGGED_BOUNDS = (45, 115)
REDACTION = {"serving.payloadLog.sampleRate": str(RATE),
             "serving.payloadLog.redact.drop": '["email"]',
             "serving.payloadLog.redact.hash": '["customer"]'}
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
COLUMNS = [*FEATURES, "email", "customer"]
SETTLE_SECONDS = 3.0


def rows(i: int) -> list[list]:
    """Request i's rows: 1-3, each with features unique to it (10 * i + row in the first) and personal data."""
    return [[10.0 * i + row, 3.0, 1.4 + (i % 5), 0.2 * (i % 4), f"person{i}.{row}@example.com", f"customer-{i:04d}"]
            for row in range(i % 3 + 1)]


def body(i: int) -> tuple[bytes, str]:
    """Every format the serving app accepts, in turn."""
    data = rows(i)
    kind = i % 4
    if kind == 0:
        return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": data}}).encode(), "application/json"
    if kind == 1:
        return json.dumps({"dataframe_records": [dict(zip(COLUMNS, row)) for row in data]}).encode(), "application/json"
    if kind == 2:
        return json.dumps({"inputs": {c: [row[n] for row in data] for n, c in enumerate(COLUMNS)}}).encode(), \
            "application/json"
    out = io.StringIO()
    csv.writer(out).writerows([COLUMNS, *data])
    return out.getvalue().encode(), "text/csv"


@pytest.fixture(scope="module")
def redacting_plan(tmp_path_factory):
    plan = tmp_path_factory.mktemp("payload-plan")
    write_plan(render(run_stack("dev", overrides=REDACTION)), plan / "dev")
    return plan


@pytest.fixture(scope="module")
def served(request, redacting_plan):
    """(platform, answers by request index, raw payloads.jsonl text)."""
    with scratch_platform(request, "mlflow-payloads-", plan_dir=redacting_plan) as platform:
        platform.start()

        def ask(i: int):
            data, content_type = body(i)
            request = urllib.request.Request(f"{platform.serving_url}/invocations", data=data, method="POST",
                                             headers={"Content-Type": content_type})
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())

        with ThreadPoolExecutor(8) as pool:  # concurrent: the pod merges them into batches
            answers = list(pool.map(ask, range(REQUESTS)))
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < SETTLE_SECONDS:  # the pod's writer thread, then the recorder
            count = len(platform.payloads.target.read_text().splitlines()) + platform.payloads.record()
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            time.sleep(0.3)
        yield platform, answers, platform.payloads.target.read_text()


def test_every_request_was_answered(served):
    _, answers, _ = served
    assert [status for status, _ in answers] == [200] * REQUESTS, answers[:3]


def test_dropped_and_hashed_values_appear_nowhere_in_the_log(served):
    _, _, raw = served
    assert raw, "no entry was recorded"
    for i in range(REQUESTS):
        for row in rows(i):
            assert row[4] not in raw and row[5] not in raw, f"request {i}'s personal data is in the payload log"


def test_about_the_sampled_share_is_logged_each_request_once_with_its_own_outputs(served):
    platform, answers, raw = served
    entries = read_entries(raw.splitlines())
    assert LOGGED_BOUNDS[0] <= len(entries) <= LOGGED_BOUNDS[1], len(entries)
    assert len({e.request_id for e in entries}) == len(entries)
    by_request = {int(e.data[0][0] // 10): e for e in entries}  # the first feature names the request
    assert len(by_request) == len(entries), "a request was logged twice"
    key = platform.secret_value("payload-hash-key").encode()  # from the Secret Manager stand-in
    for i, entry in by_request.items():
        assert entry.columns == [*FEATURES, "customer"]
        assert [row[:4] for row in entry.data] == [row[:4] for row in rows(i)]
        expected = HASH_PREFIX + hmac.new(key, json.dumps(f"customer-{i:04d}").encode(),
                                          hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]
        assert {row[4] for row in entry.data} == {expected}
        assert entry.outputs == answers[i][1]["predictions"]
        assert (entry.model, entry.version, entry.alias, entry.status) == ("iris-classifier", "1", "champion", 200)
