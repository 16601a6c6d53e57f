"""Adaptive batching of /invocations: one predict for many concurrent requests, answers identical
to MLflow's scoring app.

MLflow's parse (~0.8 ms) and `model.predict` (~1 ms) cost about the same for 1 row or 100, so
both are done once per batch. A request joins a batch only when merging cannot change its answer:
`application/json`, `dataframe_split` or `dataframe_records` alone (plus `params`), the same
columns, the same Python types in each column and the same params as the others. Everything else,
and every request of a batch that fails, goes through MLflow's own `invocations` alone, so its
answer (and error) is MLflow's.

Batches form on the event loop: a request that finds nothing being scored is scored at once, and
the requests that arrive meanwhile form the next batch. A cheap model is scored on the loop's own
thread (no hand-off, no second thread contending for the GIL: what made low-load tails long); a
model whose batches cost more than INLINE_SECONDS is scored on one worker thread, so /live, /ping
and /metrics keep answering and MLflow's timeout still applies.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import StringIO
from typing import Any, Callable, Optional

logger = logging.getLogger("mlflow_serving")

JSON = "application/json"
SPLIT, RECORDS, PARAMS = "dataframe_split", "dataframe_records", "params"
# Beyond 2**53 pandas may pick uint64/object for one request and int64 for another.
_SAFE_INT = 2 ** 53
# A batch expected to cost less is scored on the event loop: it delays /ping by no more than this.
INLINE_SECONDS = 0.02
# Requests waiting beyond this many batches' rows are refused at once: the pod is overloaded, and a
# queue without a bound would only grow until the memory limit kills the pod.
BACKLOG_BATCHES = 8


@dataclass(frozen=True)
class BatchSettings:
    max_rows: int = 1024
    """Rows per predict at most; 1 turns batching off."""
    max_delay_ms: float = 2.0
    """How long the first request of a batch waits for others that are already being received."""


@dataclass(frozen=True)
class Answer:
    """What MLflow's app would send: status, body, Starlette's content-type."""

    status: int
    body: bytes
    content_type: bytes


def _media(mimetype: str) -> bytes:
    # Starlette appends the charset to text/* media types only
    return (mimetype + "; charset=utf-8" if mimetype.startswith("text/") else mimetype).encode()


INTERNAL_ERROR = Answer(500, b"Internal Server Error", _media("text/plain"))
TIMED_OUT = Answer(504, b"Request processing time exceeded limit", _media(JSON))
OVERLOADED = Answer(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the server is overloaded: retry"}',
                    _media(JSON))


def _column_types(rows: list) -> Optional[tuple]:
    """The set of Python types per column of `rows` (lists of equal length), None when an int is
    too large for merging to be safe."""
    types = []
    for column in zip(*rows):
        kinds = frozenset(map(type, column))
        if int in kinds and any(type(v) is int and not -_SAFE_INT < v < _SAFE_INT for v in column):
            return None
        types.append(kinds)
    return tuple(types)


def batch_key(document: Any) -> Optional[tuple]:
    """(format, columns, per-column types, params) when `document` (decoded JSON) can be merged with
    others of the same key; None when it must be predicted alone."""
    if not isinstance(document, dict) or not document.keys() <= {SPLIT, RECORDS, PARAMS}:
        return None
    params = document.get(PARAMS)
    try:
        params_key = None if params is None else json.dumps(params)
    except (TypeError, ValueError):
        return None
    if SPLIT in document and RECORDS not in document:
        split = document[SPLIT]
        if not isinstance(split, dict) or split.keys() != {"columns", "data"}:
            return None
        columns, data = split["columns"], split["data"]
        if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)
                and isinstance(data, list) and data
                and all(isinstance(row, list) and len(row) == len(columns) for row in data)):
            return None
        types = _column_types(data)
        return None if types is None else (SPLIT, tuple(columns), types, params_key)
    if RECORDS in document and SPLIT not in document:
        records = document[RECORDS]
        if not (isinstance(records, list) and records and all(isinstance(r, dict) for r in records)):
            return None
        columns = tuple(records[0])
        if not columns or any(tuple(r) != columns for r in records):
            return None
        types = _column_types([list(r.values()) for r in records])
        return None if types is None else (RECORDS, columns, types, params_key)
    return None


def rows_of(document: dict) -> list:
    return document[SPLIT]["data"] if SPLIT in document else document[RECORDS]


def merged_document(documents: list[dict]) -> dict:
    """One MLflow input holding every document's rows, in order."""
    rows = [row for document in documents for row in rows_of(document)]
    if SPLIT in documents[0]:
        return {SPLIT: {"columns": documents[0][SPLIT]["columns"], "data": rows}}
    return {RECORDS: rows}


def split_output(predictions: Any, sizes: list[int]) -> Optional[list]:
    """`predictions` cut into consecutive pieces of `sizes` rows; None when its length is not the
    input's (the model does not answer row by row)."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, (pd.DataFrame, pd.Series)):
        take = predictions.iloc.__getitem__
    elif isinstance(predictions, (np.ndarray, list)):
        take = predictions.__getitem__
    else:
        return None
    if len(predictions) != sum(sizes):
        return None
    pieces, start = [], 0
    for size in sizes:
        pieces.append(take(slice(start, start + size)))
        start += size
    return pieces


@dataclass
class Request:
    body: bytes
    content_type: Optional[str]
    done: Callable[[Answer], None]
    """Called on the event loop's thread with the answer."""
    document: Any = None
    key: Optional[tuple] = None
    rows: int = 1
    abandoned: bool = False
    """Answered already (by its timeout): not scored."""


class Scorer:
    """MLflow's scoring for one loaded pyfunc model: alone (MLflow's `invocations`, exact) or many
    requests of one key in a single predict."""

    def __init__(self, model: Any):
        from mlflow.pyfunc import scoring_server

        self.scoring = scoring_server
        self.model = model
        self.input_schema = model.metadata.get_input_schema()
        self.takes_params = "params" in inspect.signature(model.predict).parameters
        # A model typed by hints takes `inputs` unparsed: nothing to merge.
        from_hints = getattr(model.metadata, "_is_signature_from_type_hint", lambda: False)()
        self.mergeable = not from_hints
        """False once the model answered a merged input with a different number of rows."""

    def alone(self, request: Request) -> Answer:
        from mlflow.exceptions import MlflowException

        try:
            result = self.scoring.invocations(request.body, request.content_type, self.model, self.input_schema)
        except MlflowException as err:
            return Answer(err.get_http_status_code(), err.serialize_as_json().encode(), _media(JSON))
        except Exception:
            logger.exception("unexpected error scoring a request")  # Starlette logs and answers 500
            return INTERNAL_ERROR
        return Answer(result.status, result.response.encode(), _media(result.mimetype))

    def together(self, requests: list[Request]) -> Optional[list[Answer]]:
        """One predict for `requests` (one key); None when it fails or cannot be split back."""
        documents = [request.document for request in requests]
        params = documents[0].get(PARAMS)
        try:
            data = self.scoring.infer_and_parse_data(merged_document(documents), self.input_schema)
            predictions = (self.model.predict(data, params=params) if self.takes_params
                           else self.model.predict(data))
            pieces = split_output(predictions, [request.rows for request in requests])
            if pieces is None:
                logger.warning("the model's output does not have one row per input row: batching turned off")
                self.mergeable = False
                return None
            answers = []
            for piece in pieces:
                out = StringIO()
                self.scoring.predictions_to_json(piece, out)
                answers.append(Answer(200, out.getvalue().encode(), _media(JSON)))
        except Exception as err:  # each request then gets its own answer, or its own error
            logger.debug("batch of %d failed (%s): answering one by one", len(requests), err)
            return None
        return answers


class Batcher:
    """Pending requests and the event loop's drain: takes what has arrived (up to `max_rows` rows),
    waits at most `max_delay_ms` for requests whose bodies are being received, groups by key,
    answers each group. Every method runs on the event loop's thread, except the scoring of a batch
    expected to cost more than INLINE_SECONDS, which runs on one worker thread."""

    def __init__(self, scorer: Scorer, settings: BatchSettings,
                 observe: Callable[[int, int], None] = lambda requests, rows: None):
        self.scorer = scorer
        self.settings = settings
        self.observe = observe
        self.pending: deque[Request] = deque()
        self.pending_rows = 0
        self.receiving = 0
        """Requests whose body is still being read."""
        self.call_cost: Optional[float] = None
        """Seconds per scoring call (one merged group, or one request alone), a moving average; None
        (scored off the loop) until one was measured."""
        self._draining: Optional[asyncio.Task] = None
        """The running drain; held so that it is not garbage-collected mid-batch."""
        self._arrived: Optional[asyncio.Event] = None
        self._thread: Optional[ThreadPoolExecutor] = None

    def submit(self, request: Request) -> bool:
        """Queue `request`; False (not queued) when the backlog is full."""
        if self.pending_rows >= BACKLOG_BATCHES * self.settings.max_rows:
            return False
        self.pending.append(self._prepare(request))
        self.pending_rows += request.rows
        if self._arrived is not None:
            self._arrived.set()
        if self._draining is None:
            self._start_drain()
        return True

    def _start_drain(self) -> None:
        # A task runs after the requests already read in this loop turn: they join the batch.
        self._draining = asyncio.get_running_loop().create_task(self._drain())

    def _prepare(self, request: Request) -> Request:
        if self.scorer.mergeable and request.content_type == JSON:
            try:
                request.document = json.loads(request.body)
            except (ValueError, UnicodeDecodeError):
                return request  # MLflow's own error, alone
            request.key = batch_key(request.document)
            if request.key is not None:
                request.rows = len(rows_of(request.document))
        return request

    def _take(self) -> list[Request]:
        """The next batch from the pending requests, abandoned ones dropped; the rest stays pending."""
        taken, rows = [], 0
        while self.pending:
            request = self.pending[0]
            if taken and rows + request.rows > self.settings.max_rows:
                break
            self.pending.popleft()
            self.pending_rows -= request.rows
            if not request.abandoned:
                taken.append(request)
                rows += request.rows
        return taken

    def _room(self) -> bool:
        return self.pending_rows < self.settings.max_rows

    async def _gather(self) -> None:
        """Let in what is already arriving, for at most max_delay_ms: loop turns while each brings
        new requests (uvloop accepts one connection per turn, so a flood of new connections arrives
        one per turn), then a wait for bodies still being received. A lone request costs one turn."""
        deadline = time.perf_counter() + self.settings.max_delay_ms / 1000
        seen = 0
        while len(self.pending) > seen and self._room() and time.perf_counter() < deadline:
            seen = len(self.pending)
            await asyncio.sleep(0)
        while self.receiving > 0 and self._room():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived = asyncio.Event()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                return
            finally:
                self._arrived = None

    def _groups(self, batch: list[Request]) -> list[list[Request]]:
        """Requests of one key together (one predict), every other request on its own."""
        groups: dict[tuple, list[Request]] = {}
        for request in batch:
            groups.setdefault(request.key or ("alone", id(request)), []).append(request)
        return list(groups.values())

    def _merged(self, group: list[Request]) -> bool:
        """Whether `group` is tried as one predict (else each request is answered alone)."""
        return len(group) > 1 and self.scorer.mergeable

    def _calls(self, groups: list[list[Request]]) -> int:
        """Scoring calls the groups take: one per merged group, one per request answered alone."""
        return sum(1 if self._merged(group) else len(group) for group in groups)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                await self._gather()
                groups = self._groups(self._take())
                if not groups:
                    continue
                calls = self._calls(groups)
                if self.call_cost is not None and self.call_cost * calls < INLINE_SECONDS:
                    seconds = self._score(groups, lambda request, answer: request.done(answer))
                else:
                    if self._thread is None:
                        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batcher")
                    # Each group's answers leave as soon as it is scored.
                    deliver = lambda request, answer: loop.call_soon_threadsafe(request.done, answer)  # noqa: E731
                    seconds = await loop.run_in_executor(self._thread, self._score, groups, deliver)
                cost = seconds / calls
                self.call_cost = cost if self.call_cost is None else 0.8 * self.call_cost + 0.2 * cost
                # A backlog of several batches does not hold the loop: /ping and reads run between them.
                await asyncio.sleep(0)
        except Exception:  # the requests taken are answered by their timer
            logger.exception("the batcher failed")
        finally:
            self._draining = None
            if self.pending:  # those still waiting get a new drain, not a timeout
                self._start_drain()

    def _score(self, groups: list[list[Request]], deliver: Callable[[Request, Answer], None]) -> float:
        """Scores each group and delivers its answers; the seconds this took."""
        started = time.perf_counter()
        for group in groups:
            try:
                answers = self.scorer.together(group) if self._merged(group) else None
                if answers is None:
                    answers = [self.scorer.alone(request) for request in group]
                self.observe(len(group), sum(request.rows for request in group))
            except Exception:  # a bug here must not leave every later request waiting
                logger.exception("batch of %d requests failed", len(group))
                answers = [INTERNAL_ERROR] * len(group)
            for request, answer in zip(group, answers):
                deliver(request, answer)
        return time.perf_counter() - started


def _header(scope: dict, name: bytes) -> Optional[str]:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BatchingApp:
    """ASGI: POST /invocations through the batcher, everything else to MLflow's app. MLflow's
    request timeout applies as in its middleware."""

    def __init__(self, mlflow_app, batcher: Batcher, timeout: float):
        self.mlflow_app = mlflow_app
        self.batcher = batcher
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.mlflow_app(scope, receive, send)
            return
        answer = await self._answer(scope, receive)
        if answer is None:
            return
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-length", str(len(answer.body)).encode()),
                                (b"content-type", answer.content_type)]})
        await send({"type": "http.response.body", "body": answer.body})

    async def _answer(self, scope, receive) -> Optional[Answer]:
        """The answer, or None when the client left before its request arrived whole."""
        chunks = []
        self.batcher.receiving += 1
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        finally:
            self.batcher.receiving -= 1
        future: asyncio.Future = asyncio.get_running_loop().create_future()

        def settle(answer: Answer) -> None:
            if not future.done():  # timed out meanwhile
                future.set_result(answer)

        request = Request(b"".join(chunks), _header(scope, b"content-type"), settle)
        if not self.batcher.submit(request):
            return OVERLOADED
        timer = asyncio.get_running_loop().call_later(self.timeout, settle, TIMED_OUT)
        try:
            return await future
        finally:
            timer.cancel()
            request.abandoned = True  # answered, timed out or cancelled: never scored from here on
