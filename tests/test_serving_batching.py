"""The serving image's batcher without MLflow: which requests may share a predict, how a batch is
taken from the queue, and what happens when a batch fails (a fake scorer; the answers themselves
are compared with MLflow's in tests/test_serving_wire.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_serving.batching import (  # noqa: E402
    INTERNAL_ERROR, TIMED_OUT, Answer, Batcher, BatchingApp, BatchSettings, Request, batch_key, merged_document,
)

COLUMNS = ["sl", "sw", "pl", "pw"]


def split(*rows, params=None, columns=COLUMNS) -> dict:
    document = {"dataframe_split": {"columns": columns, "data": [list(row) for row in rows]}}
    return document if params is None else {**document, "params": params}


def test_same_columns_types_and_params_share_a_key():
    assert batch_key(split([1.0, 2.0, 3.0, 4.0])) == batch_key(split([5.0, 6.0, 7.0, 8.0], [1.5, 2.5, 3.5, 4.5]))
    assert batch_key({"dataframe_records": [{"a": 1}]}) == batch_key({"dataframe_records": [{"a": 2}, {"a": 3}]})


@pytest.mark.parametrize("other", [
    split([1, 2.0, 3.0, 4.0]),  # an int where the other has a float: pandas may type the column differently
    split([1.0, 2.0, 3.0, 4.0], params={"scale": 2}),
    split([1.0, 2.0, 3.0, 4.0], columns=["sw", "sl", "pl", "pw"]),
], ids=["column types", "params", "column order"])
def test_a_different_column_type_params_or_order_is_another_key(other):
    assert batch_key(other) != batch_key(split([1.0, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize("document", [
    [1, 2], {}, {"instances": [[1, 2, 3, 4]]}, {"inputs": {"sl": [1.0]}},
    {"dataframe_split": {"columns": COLUMNS, "data": []}},
    {"dataframe_split": {"columns": COLUMNS, "data": [[1.0]]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]], "index": [7]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]]}, "dataframe_records": []},
    {"dataframe_records": [{"a": 1}, {"b": 2}]},
    {"dataframe_records": [{"a": 2 ** 60}]},
    {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]]}, "extra": 1},
], ids=["list", "empty", "instances", "inputs", "no rows", "short row", "index", "two formats",
        "records differ", "huge int", "unknown key"])
def test_anything_else_is_predicted_alone(document):
    assert batch_key(document) is None


def test_merged_input_keeps_every_row_in_order():
    merged = merged_document([split([1.0, 2.0, 3.0, 4.0]), split([5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0])])
    assert merged == split([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0])


class FakeScorer:
    """Answers each request with its first value; a batch holding `poison` fails as a whole."""

    mergeable = True

    def __init__(self, poison: float = -1.0):
        self.poison = poison
        self.calls: list[tuple[str, int]] = []

    def alone(self, request: Request) -> Answer:
        self.calls.append(("alone", 1))
        value = json.loads(request.body)["dataframe_split"]["data"][0][0]
        return Answer(400 if value == self.poison else 200, str(value).encode(), b"application/json")

    def together(self, requests: list[Request]):
        self.calls.append(("together", len(requests)))
        values = [request.document["dataframe_split"]["data"][0][0] for request in requests]
        if self.poison in values:
            return None
        return [Answer(200, str(value).encode(), b"application/json") for value in values]


def queued(batcher: Batcher, *values: float, content_type: str = "application/json") -> list[dict]:
    """Queue one 1-row request per value; returns where each answer lands."""
    results = []
    for value in values:
        result: dict = {}
        batcher.submit(Request(json.dumps(split([value, 0.0, 0.0, 0.0])).encode(), content_type,
                               lambda answer, result=result: result.update(answer=answer)))
        results.append(result)
    return results


def test_queued_requests_share_one_predict_and_each_gets_its_own_answer():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    results = queued(batcher, 1.0, 2.0, 3.0)
    batcher._run_once()
    assert batcher.scorer.calls == [("together", 3)]
    assert [r["answer"].body for r in results] == [b"1.0", b"2.0", b"3.0"]


def test_a_failed_batch_is_answered_request_by_request():
    batcher = Batcher(FakeScorer(poison=2.0), BatchSettings(max_rows=32, max_delay_ms=0))
    results = queued(batcher, 1.0, 2.0, 3.0)
    batcher._run_once()
    assert batcher.scorer.calls == [("together", 3), ("alone", 1), ("alone", 1), ("alone", 1)]
    assert [r["answer"].status for r in results] == [200, 400, 200]


class BuggyScorer(FakeScorer):
    def together(self, requests: list[Request]):
        raise RuntimeError("a bug, not a bad request")


def test_an_unexpected_failure_answers_500_and_the_batcher_goes_on():
    batcher = Batcher(BuggyScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    results = queued(batcher, 1.0, 2.0)
    batcher._run_once()
    assert [r["answer"] for r in results] == [INTERNAL_ERROR, INTERNAL_ERROR]
    later = queued(batcher, 3.0)
    batcher._run_once()
    assert later[0]["answer"].body == b"3.0"


def test_a_batch_stops_at_max_rows_and_the_rest_waits_for_the_next():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=2, max_delay_ms=0))
    results = queued(batcher, 1.0, 2.0, 3.0)
    batcher._run_once()
    assert "answer" not in results[2]
    batcher._run_once()
    assert batcher.scorer.calls == [("together", 2), ("alone", 1)]
    assert results[2]["answer"].body == b"3.0"


def test_other_content_types_are_never_merged():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    queued(batcher, 1.0, 2.0, content_type="application/json; charset=utf-8")
    batcher._run_once()
    assert batcher.scorer.calls == [("alone", 1), ("alone", 1)]


def test_a_lone_request_does_not_wait_for_the_delay():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=5_000))
    queued(batcher, 1.0)
    timer = threading.Timer(10, lambda: batcher.submit(Request(b"{}", None, lambda answer: None)))
    timer.start()  # unblocks the queue should the batcher wait anyway; it would then take 2 requests
    try:
        assert len(batcher._take()) == 1
    finally:
        timer.cancel()


def test_the_batch_waits_for_a_request_still_being_received():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=5_000))
    queued(batcher, 1.0)
    batcher.receiving += 1  # its body is still arriving
    late = threading.Timer(0.2, lambda: (queued(batcher, 2.0), setattr(batcher, "receiving", 0)))
    late.start()
    assert len(batcher._take()) == 2


def call(app, path: str, method: str = "POST") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    loop = asyncio.new_event_loop()  # a private loop: the Pulumi tests rely on the global one
    try:
        loop.run_until_complete(app({"type": "http", "path": path, "method": method,
                                     "headers": [(b"content-type", b"application/json")]}, receive, send))
    finally:
        loop.close()
    return sent


class NeverAnswers:
    def submit(self, request: Request) -> None:
        pass

    receiving = 0


def test_a_request_not_answered_within_mlflows_timeout_gets_mlflows_504():
    sent = call(BatchingApp(None, NeverAnswers(), timeout=0.05), "/invocations")
    assert (sent[0]["status"], sent[1]["body"]) == (504, TIMED_OUT.body)


def test_every_other_request_goes_to_mlflows_app():
    async def mlflow_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    app = BatchingApp(mlflow_app, NeverAnswers(), timeout=1)
    assert call(app, "/ping", "GET")[1]["body"] == b"/ping"
    assert call(app, "/invocations", "GET")[1]["body"] == b"/invocations"
