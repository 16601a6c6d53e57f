"""The serving pod's payload log (mlflow_image/mlflow_serving/payload_log.py) without a server: what an
entry holds for each input format MLflow's /invocations takes, that a redacted value appears nowhere in
the written line, that each request of a merged batch is logged with its own outputs, and sampling."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from types import SimpleNamespace

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_serving.app import PayloadSettings, payload_settings, with_payload_log  # noqa: E402
from mlflow_serving.batching import (  # noqa: E402
    Answer, Batcher, BatchingApp, BatchSettings, Request, merged_document, rows_of,
)
from mlflow_serving.metrics import ServingMetrics  # noqa: E402
from tests.test_serving_batching import on_loop  # noqa: E402
from mlflow_serving.app import ModelGate  # noqa: E402
from mlflow_serving.payload_log import (  # noqa: E402
    MAX_LINE_BYTES, HASH_PREFIX, PAYLOAD_LOG_MESSAGE, Exchange, LineWriter, PayloadLog, PayloadLogApp, Redaction, RedactionError,
    Served, entry_line, read_entries,
)

KEY = b"k" * 64
SERVED = Served(model="iris", version="3", alias="champion", track="champion")
REDACTION = Redaction(drop=frozenset({"email"}), hash=frozenset({"customer"}), key=KEY)
EMAIL, CUSTOMER = "ada@example.com", "cust-7f3a9"
ANSWER = json.dumps({"predictions": [0, 1]}).encode()
JSON_TYPE = "application/json"

FORMATS = {
    "dataframe_split": {"dataframe_split": {"columns": ["email", "customer", "x"],
                                            "data": [[EMAIL, CUSTOMER, 1.5], [EMAIL, CUSTOMER, 2.5]]}},
    "dataframe_records": {"dataframe_records": [{"email": EMAIL, "customer": CUSTOMER, "x": 1.5},
                                                {"email": EMAIL, "customer": CUSTOMER, "x": 2.5}]},
    "instances-records": {"instances": [{"email": EMAIL, "customer": CUSTOMER, "x": 1.5},
                                        {"email": EMAIL, "customer": CUSTOMER, "x": 2.5}]},
    "inputs-columns": {"inputs": {"email": [EMAIL, EMAIL], "customer": [CUSTOMER, CUSTOMER], "x": [1.5, 2.5]}},
}


def collecting(lines: list[str]):
    """A payload log's write: it writes many lines at once."""
    return lambda text: lines.extend(text.splitlines(keepends=True))


def line_for(body: bytes, content_type: str = JSON_TYPE, status: int = 200, response: bytes = ANSWER,
             redaction: Redaction = REDACTION) -> str:
    return entry_line(Exchange("req-1", body, content_type, status, response, 1.25), SERVED, redaction)


@pytest.mark.parametrize("name", [*FORMATS, "csv"])
def test_every_input_format_is_logged_with_dropped_columns_absent_and_hashed_ones_keyed(name):
    if name == "csv":
        body, content_type = f"email,customer,x\n{EMAIL},{CUSTOMER},1.5\n{EMAIL},{CUSTOMER},2.5\n".encode(), "text/csv"
    else:
        body, content_type = json.dumps(FORMATS[name]).encode(), JSON_TYPE
    line = line_for(body, content_type)
    assert EMAIL not in line and CUSTOMER not in line  # the raw line, not only the parsed entry
    [entry] = read_entries([line])
    assert entry.columns == ["customer", "x"]
    hashed = {row[0] for row in entry.data}
    assert len(hashed) == 1 and hashed.pop().startswith(HASH_PREFIX)
    assert [row[1] for row in entry.data] == [1.5, 2.5]
    assert entry.outputs == [0, 1] and entry.status == 200 and entry.version == "3" and entry.track == "champion"


def test_a_hash_is_stable_per_key_and_differs_between_keys():
    body = json.dumps(FORMATS["dataframe_split"]).encode()
    [first] = read_entries([line_for(body)])
    [again] = read_entries([line_for(body)])
    [other] = read_entries([line_for(body, redaction=Redaction(hash=frozenset({"customer"}), key=b"other"))])
    assert first.data[0][0] == again.data[0][0] != other.data[0][1]


def test_unnamed_tensors_are_withheld_when_redaction_is_on_and_positional_when_off():
    body = json.dumps({"instances": [[EMAIL, 1.5], [EMAIL, 2.5]]}).encode()
    line = line_for(body)
    assert EMAIL not in line
    [entry] = read_entries([line])
    assert entry.data is None and "column names" in entry.withheld
    [plain] = read_entries([line_for(body, redaction=Redaction())])
    assert plain.columns == ["0", "1"] and plain.data == [[EMAIL, 1.5], [EMAIL, 2.5]] and plain.withheld is None


def test_an_error_is_logged_by_code_never_by_its_message_which_may_quote_an_input():
    error = json.dumps({"error_code": "BAD_REQUEST", "message": f"could not convert '{CUSTOMER}' to float"}).encode()
    line = line_for(json.dumps(FORMATS["dataframe_split"]).encode(), status=400, response=error)
    assert CUSTOMER not in line
    [entry] = read_entries([line])
    assert (entry.status, entry.error, entry.outputs) == (400, "BAD_REQUEST", None)
    [plain] = read_entries([line_for(json.dumps(FORMATS["dataframe_split"]).encode(), status=400, response=error,
                                     redaction=Redaction())])
    assert plain.columns == ["email", "customer", "x"] and plain.error == "BAD_REQUEST"
    assert json.loads(line)["severity"] == "INFO"
    assert json.loads(line_for(b"{}", status=500, response=b"Internal Server Error"))["severity"] == "ERROR"


def test_outputs_that_quote_a_redacted_value_are_withheld():
    echoed = json.dumps({"predictions": [f"hello {CUSTOMER}", "x"]}).encode()
    line = line_for(json.dumps(FORMATS["dataframe_split"]).encode(), response=echoed)
    assert CUSTOMER not in line
    assert read_entries([line])[0].withheld == "outputs quote a redacted value"


def test_an_entry_is_what_gke_turns_into_a_structured_entry():
    document = json.loads(line_for(json.dumps(FORMATS["dataframe_split"]).encode()))
    assert document["message"] == PAYLOAD_LOG_MESSAGE
    assert document["logging.googleapis.com/labels"] == {"mlflow_model": "iris", "mlflow_version": "3",
                                                         "mlflow_track": "champion"}
    assert read_entries(['{"message": "GET /ping"}', "not json", json.dumps(document)])[0].request_id == "req-1"


def test_hashing_without_a_key_and_a_column_both_dropped_and_hashed_are_refused():
    with pytest.raises(RedactionError, match="needs the payload key"):
        Redaction(hash=frozenset({"customer"}))
    with pytest.raises(RedactionError, match="both dropped and hashed"):
        Redaction(drop=frozenset({"a"}), hash=frozenset({"a"}), key=KEY)
    with pytest.raises(RedactionError, match="needs the payload key"):
        payload_settings({"MLFLOW_SERVING_PAYLOAD_SAMPLE_RATE": "1", "MLFLOW_SERVING_PAYLOAD_HASH": '["customer"]'})


# --- through the batching app ---------------------------------------------------------------------------
class MergingScorer:
    """Scores like the real Scorer: one predict over the merged rows, split back per request. The
    prediction of a row is its `x` times 10, so every request's answer names its input."""

    mergeable = True

    def __init__(self):
        self.merged: list[int] = []

    @staticmethod
    def _predict(document: dict) -> list:
        columns = document["dataframe_split"]["columns"]
        return [row[columns.index("x")] * 10 for row in rows_of(document)]

    def alone(self, request: Request) -> Answer:
        predictions = self._predict(json.loads(request.body))
        return Answer(200, json.dumps({"predictions": predictions}).encode(), JSON_TYPE.encode())

    def together(self, requests: list[Request]):
        self.merged.append(len(requests))
        predictions = self._predict(merged_document([request.document for request in requests]))
        pieces, start = [], 0
        for request in requests:  # split back as split_output does (no numpy in the test venv)
            pieces.append(predictions[start:start + request.rows])
            start += request.rows
        return [Answer(200, json.dumps({"predictions": piece}).encode(), JSON_TYPE.encode()) for piece in pieces]


async def post(app, body: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "path": "/invocations", "method": "POST",
             "headers": [(b"content-type", JSON_TYPE.encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_each_request_of_a_merged_batch_is_logged_once_with_its_own_inputs_and_outputs():
    lines: list[str] = []
    scorer = MergingScorer()
    batcher = Batcher(scorer, BatchSettings(max_rows=1024, max_delay_ms=5))
    batcher.call_cost = 0.0
    log = PayloadLog(SERVED, REDACTION, collecting(lines))
    app = PayloadLogApp(BatchingApp(None, batcher, timeout=5), log, rate=1.0)
    count = 40

    def body(i: int) -> bytes:  # request i: i + 1 rows, each with x = 1000 * i + row
        data = [[EMAIL, f"{CUSTOMER}-{i}", 1000 * i + row] for row in range(i % 3 + 1)]
        return json.dumps({"dataframe_split": {"columns": ["email", "customer", "x"], "data": data}}).encode()

    async def scenario():
        return await asyncio.gather(*(post(app, body(i)) for i in range(count)))
    answers = on_loop(scenario)
    log.queue.join()
    assert max(scorer.merged) > 1, "no batch was merged: the test proves nothing"
    entries = read_entries(lines)
    assert len(entries) == count and len({e.request_id for e in entries}) == count
    by_x = {tuple(row[1] for row in e.data): e for e in entries}
    for i, (status, answer) in enumerate(answers):
        xs = tuple(1000 * i + row for row in range(i % 3 + 1))
        entry = by_x[xs]  # each request's own rows, logged once
        assert entry.outputs == json.loads(answer)["predictions"] == [x * 10 for x in xs]
        assert len({row[0] for row in entry.data}) == 1  # one customer per request, hashed
    assert EMAIL not in "".join(lines) and CUSTOMER not in "".join(lines)


def test_sampling_logs_the_share_asked_and_a_rate_of_zero_adds_nothing_to_the_path(tmp_path):
    draws = iter([0.05, 0.5, 0.09, 0.95] * 25)
    lines: list[str] = []

    async def echo(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": ANSWER})
    log = PayloadLog(SERVED, REDACTION, collecting(lines))
    app = PayloadLogApp(echo, log, rate=0.1, sample=lambda: next(draws))
    body = json.dumps(FORMATS["dataframe_split"]).encode()

    async def scenario():
        for _ in range(100):
            await post(app, body)
    on_loop(scenario)
    log.queue.join()
    assert len(lines) == 50  # the draws below 0.1: two of every four
    off = PayloadSettings(rate=0.0, redaction=REDACTION)
    assert with_payload_log(echo, off, "models:/iris@champion", "3", tmp_path, ServingMetrics()) is echo


def test_a_full_queue_by_bytes_drops_the_entry_and_counts_it_without_waiting():
    dropped: list[int] = []
    log = PayloadLog(SERVED, REDACTION, lambda line: None, dropped=lambda: dropped.append(1), capacity=2500)
    with log._flushing:  # the writer is busy: nothing leaves the queue
        for _ in range(5):
            log.submit(Exchange("x", b"b" * 1000, None, 200, b"", 0.0))
        assert len(dropped) == 3 and log.queued_bytes == 2000
    log.flush()
    assert log.queued_bytes == 0


def test_a_body_past_the_line_limit_is_not_kept_and_the_entry_says_so():
    lines: list[str] = []
    log = PayloadLog(SERVED, REDACTION, collecting(lines))
    submitted: list[Exchange] = []
    log.submit = submitted.append
    rows = [[EMAIL, CUSTOMER, float(i)] for i in range(MAX_LINE_BYTES // 20)]
    body = json.dumps({"dataframe_split": {"columns": ["email", "customer", "x"], "data": rows}}).encode()
    on_loop(lambda: post(PayloadLogApp(echo_app(), log, rate=1.0), body))
    [exchange] = submitted
    assert exchange.oversized and exchange.size == 0
    line = entry_line(exchange, SERVED, REDACTION)
    assert len(line.encode()) < MAX_LINE_BYTES
    assert read_entries([line])[0].withheld == f"body over {MAX_LINE_BYTES} bytes"


def echo_app():
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": ANSWER})
    return app


def test_the_writer_thread_survives_a_failed_write():
    lines: list[str] = []
    failures = [OSError("EPIPE")]

    def write(text: str) -> None:
        if failures:
            raise failures.pop()
        lines.append(text)
    log = PayloadLog(SERVED, REDACTION, write)
    body = json.dumps(FORMATS["dataframe_split"]).encode()
    log.submit(Exchange("lost", body, JSON_TYPE, 200, ANSWER, 1.0))
    log.queue.join()
    log.submit(Exchange("kept", body, JSON_TYPE, 200, ANSWER, 1.0))
    deadline = time.monotonic() + 5  # a dead writer thread never writes it
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.request_id for e in read_entries("".join(lines).splitlines())] == ["kept"]


def test_entries_queued_at_shutdown_are_written_by_the_lifespan_shutdown():
    lines: list[str] = []
    log = PayloadLog(SERVED, REDACTION, collecting(lines))
    loader = SimpleNamespace(app=PayloadLogApp(echo_app(), log, rate=1.0), start=lambda: None)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    async def scenario():
        with log._flushing:  # the writer's clock has not come round yet
            log.submit(Exchange("last", b"{}", JSON_TYPE, 200, ANSWER, 1.0))
        await ModelGate(loader)(({"type": "lifespan"}), receive, send)
    on_loop(scenario)
    assert sent[-1]["type"] == "lifespan.shutdown.complete"
    assert [e.request_id for e in read_entries(lines)] == ["last"]


SCALARS = (str, int, float, bool, type(None))


@pytest.mark.parametrize("outputs", [[0, 1], [[0.1, 0.9]], {"a": [1, "x"]}, "text", [{"label": "x", "p": 0.3}]])
def test_every_field_of_an_entry_is_a_scalar_or_text_so_one_bigquery_schema_fits_every_entry(outputs):
    """Logging's BigQuery sink fixes the table's schema from the first entry and refuses later ones that
    differ: no list (of lists, of mixed types) and no model-dependent type may be a field."""
    body = json.dumps({"dataframe_split": {"columns": ["customer", "x", "colour"],
                                           "data": [[CUSTOMER, 5.1, "red"], [CUSTOMER, 4, None]]}}).encode()
    document = json.loads(line_for(body, response=json.dumps({"predictions": outputs}).encode()))
    payload = document.pop("payload")
    labels = document.pop("logging.googleapis.com/labels")
    for value in [*document.values(), *payload.values(), *labels.values()]:
        assert isinstance(value, SCALARS), value
    assert read_entries([json.dumps({**document, "payload": payload})])[0].outputs == outputs


def test_bigquery_rows_with_lowercased_field_names_are_read():
    """What `SELECT TO_JSON_STRING(jsonPayload)` returns: BigQuery lowercases payload field names."""
    document = json.loads(line_for(json.dumps(FORMATS["dataframe_split"]).encode()))
    row = {**document, "payload": {key.lower(): value for key, value in document["payload"].items()}}
    [entry] = read_entries([json.dumps(row)])
    assert (entry.request_id, entry.latency_ms, entry.columns) == ("req-1", 1.25, ["customer", "x"])


@pytest.mark.parametrize("name", ["\ufeffemail", "Email", " EMAIL ", "\ufeff Customer"])
def test_column_names_are_redacted_whatever_their_bom_case_or_spaces(name):
    body = f"{name},x\n{EMAIL},1\n".encode()
    line = line_for(body, "text/csv")
    assert EMAIL not in line


def test_the_line_writer_writes_whole_lines_to_its_descriptor(tmp_path):
    target = tmp_path / "out"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        writer = LineWriter(fd, tmp_path / "lock")
        long_line = json.dumps({"message": PAYLOAD_LOG_MESSAGE, "pad": "x" * 100_000}) + "\n"
        writer(long_line)
        writer("second\n")
    finally:
        os.close(fd)
    assert target.read_text() == long_line + "second\n"


def test_a_client_gone_before_its_request_arrived_is_not_logged_and_an_app_error_is_logged_as_500():
    lines: list[str] = []
    log = PayloadLog(SERVED, REDACTION, collecting(lines))

    async def left(scope, receive, send):
        assert (await receive())["type"] == "http.disconnect"  # BatchingApp then answers nothing

    async def broken(scope, receive, send):
        await receive()
        raise RuntimeError("a bug")

    async def scenario():
        async def gone():
            return {"type": "http.disconnect"}
        scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": []}
        await PayloadLogApp(left, log, rate=1.0)(scope, gone, None)
        with pytest.raises(RuntimeError):
            await post(PayloadLogApp(broken, log, rate=1.0), json.dumps(FORMATS["dataframe_split"]).encode())
    on_loop(scenario)
    log.queue.join()
    [entry] = read_entries(lines)
    assert (entry.status, entry.error, entry.columns) == (500, "HTTP 500", None)
    assert "withheld" in entry.withheld
