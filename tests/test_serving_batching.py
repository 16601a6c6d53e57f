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
    BACKLOG_BATCHES, INLINE_SECONDS, INTERNAL_ERROR, OVERLOADED, TIMED_OUT, Answer, Batcher, BatchingApp, BatchSettings, Request, batch_key, merged_document,
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
    """Submit one 1-row request per value (on the running loop); returns where each answer lands."""
    results = []
    for value in values:
        result: dict = {}
        batcher.submit(Request(json.dumps(split([value, 0.0, 0.0, 0.0])).encode(), content_type,
                               lambda answer, result=result: result.update(answer=answer)))
        results.append(result)
    return results


def on_loop(scenario):
    """Run `scenario()` (a coroutine function) on a private loop: the Pulumi tests rely on the global one."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


async def settled(batcher: Batcher) -> None:
    """Until the batcher has answered everything submitted."""
    while batcher.pending or batcher._draining:
        await asyncio.sleep(0.001)


def answered(scorer, *values: float, max_rows: int = 32, cost: float | None = 0.0, **submit) -> tuple[Batcher, list]:
    """A batcher (`cost` as measured so far: 0 scores on the loop, None on its thread) given `values`
    in one loop turn, run until all are answered."""
    batcher = Batcher(scorer, BatchSettings(max_rows=max_rows, max_delay_ms=0))
    batcher.call_cost = cost

    async def scenario():
        results = queued(batcher, *values, **submit)
        await settled(batcher)
        return results
    return batcher, on_loop(scenario)


@pytest.mark.parametrize("cost", [0.0, None, 1.0], ids=["on-the-loop", "first-batch", "slow-model"])
def test_requests_of_one_loop_turn_share_one_predict_and_each_gets_its_own_answer(cost):
    batcher, results = answered(FakeScorer(), 1.0, 2.0, 3.0, cost=cost)
    assert batcher.scorer.calls == [("together", 3)]
    assert [r["answer"].body for r in results] == [b"1.0", b"2.0", b"3.0"]


def test_a_failed_batch_is_answered_request_by_request():
    batcher, results = answered(FakeScorer(poison=2.0), 1.0, 2.0, 3.0)
    assert batcher.scorer.calls == [("together", 3), ("alone", 1), ("alone", 1), ("alone", 1)]
    assert [r["answer"].status for r in results] == [200, 400, 200]


class BuggyScorer(FakeScorer):
    def together(self, requests: list[Request]):
        raise RuntimeError("a bug, not a bad request")


def test_an_unexpected_failure_answers_500_and_the_batcher_goes_on():
    batcher = Batcher(BuggyScorer(), BatchSettings(max_rows=32, max_delay_ms=0))

    async def scenario():
        first = queued(batcher, 1.0, 2.0)
        await settled(batcher)
        later = queued(batcher, 3.0)
        await settled(batcher)
        return first, later
    first, later = on_loop(scenario)
    assert [r["answer"] for r in first] == [INTERNAL_ERROR, INTERNAL_ERROR]
    assert later[0]["answer"].body == b"3.0"


def test_a_batch_stops_at_max_rows_and_the_rest_forms_the_next():
    batcher, results = answered(FakeScorer(), 1.0, 2.0, 3.0, max_rows=2)
    assert batcher.scorer.calls == [("together", 2), ("alone", 1)]
    assert results[2]["answer"].body == b"3.0"


def test_other_content_types_are_never_merged():
    batcher, _ = answered(FakeScorer(), 1.0, 2.0, content_type="application/json; charset=utf-8")
    assert batcher.scorer.calls == [("alone", 1), ("alone", 1)]


def test_a_lone_request_is_scored_at_once_whatever_the_delay():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=5_000))
    batcher.call_cost = 0.0

    async def scenario():
        results = queued(batcher, 1.0)
        await asyncio.sleep(0.05)  # far less than the delay
        return results
    assert "answer" in on_loop(scenario)[0]


def test_requests_arriving_while_a_batch_is_scored_form_the_next_batch():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    batcher.call_cost = 0.0

    async def scenario():
        queued(batcher, 1.0)
        await asyncio.sleep(0)  # the first is being scored: these two arrive meanwhile
        queued(batcher, 2.0, 3.0)
        await settled(batcher)
    on_loop(scenario)
    assert batcher.scorer.calls == [("alone", 1), ("together", 2)]


def test_a_backlog_of_batches_lets_the_loop_answer_between_them():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=1, max_delay_ms=0))
    batcher.call_cost = 0.0
    seen = []

    async def scenario():
        queued(batcher, 1.0, 2.0, 3.0, 4.0)
        asyncio.get_running_loop().call_soon(lambda: seen.append(len(batcher.scorer.calls)))
        await settled(batcher)
    on_loop(scenario)
    assert len(batcher.scorer.calls) == 4 and seen[0] < 4


def test_requests_arriving_one_per_loop_turn_join_one_batch():
    """uvloop accepts one new connection per loop turn: a flood of new connections arrives like this."""
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=50))
    batcher.call_cost = 0.0

    async def scenario():
        for value in (1.0, 2.0, 3.0, 4.0):
            queued(batcher, value)
            await asyncio.sleep(0)
        await settled(batcher)
    on_loop(scenario)
    assert batcher.scorer.calls == [("together", 4)]


def test_a_request_answered_by_its_timeout_is_never_scored():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    batcher.call_cost = 0.0

    async def scenario():
        results = queued(batcher, 1.0, 2.0)
        batcher.pending[0].abandoned = True  # what BatchingApp does when its timer answers first
        await settled(batcher)
        return results
    results = on_loop(scenario)
    assert batcher.scorer.calls == [("alone", 1)] and "answer" not in results[0]


def test_a_full_backlog_refuses_at_once_with_503():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=2, max_delay_ms=0))
    batcher._draining = object()  # scoring is busy: nothing leaves the queue

    async def scenario():
        return [batcher.submit(Request(json.dumps(split([1.0, 0.0, 0.0, 0.0])).encode(), "application/json",
                                       lambda answer: None)) for _ in range(BACKLOG_BATCHES * 2 + 1)]
    assert on_loop(scenario)[-1] is False and batcher.pending_rows == BACKLOG_BATCHES * 2

    class Full:
        receiving = 0

        def submit(self, request):
            return False
    sent = call(BatchingApp(None, Full(), timeout=1), "/invocations")
    assert (sent[0]["status"], sent[1]["body"]) == (503, OVERLOADED.body)


class WaitsForTheFirstAnswer(FakeScorer):
    """Scores its last request only once the loop has the first answer (or gives up after 2 s)."""

    def __init__(self):
        super().__init__()
        self.first_answer_seen = threading.Event()
        self.waited = None

    def alone(self, request: Request) -> Answer:
        if json.loads(request.body)["dataframe_split"]["data"][0][0] == 99:
            self.waited = self.first_answer_seen.wait(2)
        return super().alone(request)


def test_many_requests_answered_alone_are_scored_off_the_loop_each_answered_when_done():
    """Each is cheap, but 100 of them would hold the loop: the estimate counts scoring calls."""
    scorer = WaitsForTheFirstAnswer()
    batcher = Batcher(scorer, BatchSettings(max_rows=1024, max_delay_ms=0))
    batcher.call_cost = INLINE_SECONDS / 10
    delivered = []

    def done(answer):
        delivered.append(threading.get_ident())
        scorer.first_answer_seen.set()

    async def scenario():
        queued(batcher, *range(100), content_type="text/csv")  # never merged
        for request in batcher.pending:
            request.done = done
        await settled(batcher)
        await asyncio.sleep(0.05)  # the last answer's call_soon_threadsafe
        return threading.get_ident()
    loop_thread = on_loop(scenario)
    assert batcher._thread is not None and scorer.waited is True
    assert len(delivered) == 100 and set(delivered) == {loop_thread}


def test_the_batch_waits_for_a_request_still_being_received():
    batcher = Batcher(FakeScorer(), BatchSettings(max_rows=32, max_delay_ms=5_000))
    batcher.call_cost = 0.0

    async def scenario():
        batcher.receiving += 1  # a second body is still arriving
        queued(batcher, 1.0)
        await asyncio.sleep(0.2)
        batcher.receiving -= 1
        queued(batcher, 2.0)
        await settled(batcher)
    on_loop(scenario)
    assert batcher.scorer.calls == [("together", 2)]


class SlowScorer(FakeScorer):
    def together(self, requests: list[Request]):
        import time
        time.sleep(0.2)
        return super().together(requests)


def test_a_model_slower_than_the_inline_budget_is_scored_off_the_loop():
    """/live and /ping answer while a slow model predicts: the loop is free during its batches."""
    batcher = Batcher(SlowScorer(), BatchSettings(max_rows=32, max_delay_ms=0))
    ticks = []

    async def ticker():
        while True:
            ticks.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.005)

    async def scenario():
        beat = asyncio.ensure_future(ticker())
        for _ in range(4):
            queued(batcher, 1.0, 2.0)
            await settled(batcher)
        ticks.append(asyncio.get_running_loop().time())  # a stall by the last batch counts too
        beat.cancel()
    on_loop(scenario)
    assert batcher.call_cost >= INLINE_SECONDS
    # A loop blocked by its batches stalls 200 ms once per batch; one such stall is allowed to the
    # scheduler of a loaded machine.
    assert sum(b - a >= 0.19 for a, b in zip(ticks, ticks[1:])) <= 1


def call(app, path: str, method: str = "POST") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    on_loop(lambda: app({"type": "http", "path": path, "method": method,
                         "headers": [(b"content-type", b"application/json")]}, receive, send))
    return sent


class NeverAnswers:
    def submit(self, request: Request) -> bool:
        return True

    receiving = 0


def test_a_request_not_answered_within_mlflows_timeout_gets_mlflows_504():
    sent = call(BatchingApp(None, NeverAnswers(), timeout=0.05), "/invocations")
    assert (sent[0]["status"], sent[1]["body"]) == (504, TIMED_OUT.body)


class KeepsRequests(NeverAnswers):
    def __init__(self):
        self.requests = []

    def submit(self, request: Request) -> bool:
        self.requests.append(request)
        return True


def test_a_request_answered_by_its_timeout_is_marked_so_that_it_is_never_scored():
    batcher = KeepsRequests()
    sent = call(BatchingApp(None, batcher, timeout=0.05), "/invocations")
    assert sent[0]["status"] == 504 and batcher.requests[0].abandoned


def test_a_client_gone_before_its_body_arrived_is_neither_queued_nor_answered():
    batcher = KeepsRequests()
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    on_loop(lambda: BatchingApp(None, batcher, timeout=1)(
        {"type": "http", "path": "/invocations", "method": "POST", "headers": []}, receive, send))
    assert sent == [] and batcher.requests == []


def test_every_other_request_goes_to_mlflows_app():
    async def mlflow_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    app = BatchingApp(mlflow_app, NeverAnswers(), timeout=1)
    assert call(app, "/ping", "GET")[1]["body"] == b"/ping"
    assert call(app, "/invocations", "GET")[1]["body"] == b"/invocations"
