"""Payload log: for a sample of POST /invocations, one JSON line on stderr per request, which GKE's
logging agent turns into a structured Cloud Logging entry (jsonPayload) and a sink routes to BigQuery.

    {"message": "mlflow.serving.payload", "severity": "INFO",
     "logging.googleapis.com/labels": {"mlflow_model": NAME, "mlflow_version": "3", "mlflow_track": "champion"},
     "payload": {"model", "version", "alias", "track", "requestId", "status", "latencyMs",
                 "inputs": JSON text of {"columns": [...], "data": [[...], ...]} | null, "withheld": why inputs are null,
                 "outputs": JSON text of the predictions | null, "error": MLflow's error code (never its message)}}

Redaction happens here, in the pod: dropped columns are absent, hashed ones are "h:" + HMAC-SHA256 of the
value's canonical JSON with the per-stack key (hex, truncated). Inputs without column names (tensors)
cannot be redacted by name: with redaction on, they are withheld. An error's message is never logged (it
may quote an input); nor are outputs that quote a redacted text value.

The middleware samples and captures on the event loop; parsing, redaction, encoding and the write happen
on one writer thread behind a bounded queue (full: the entry is dropped and counted, the request is not
slowed), every FLUSH_SECONDS, and once more at shutdown. The entries go to stderr, which the pod's Python
logging (stdout, k8s/logs.py) does not use: an unlocked write there cannot cut into an entry. Worker
processes of a pod share stderr: lines are written whole under a file lock.
The drift job and the tests read entries back with `read_entries`.
"""

from __future__ import annotations

import atexit
import csv
import fcntl
import hashlib
import hmac
import io
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

logger = logging.getLogger("mlflow_serving")

PAYLOAD_LOG_MESSAGE = "mlflow.serving.payload"
LABELS_KEY = "logging.googleapis.com/labels"
# The HMAC key of hashed columns, set from the mounted Secret Manager file (mlflow_fileenv).
PAYLOAD_KEY_ENV = "MLFLOW_SERVING_PAYLOAD_KEY"
HASH_PREFIX = "h:"
HASH_HEX_CHARS = 32  # 128 bits of the HMAC: no collisions at any realistic cardinality
# The container runtime splits a line over 16 KiB into partial records (CRI log format) and an entry cut
# there would not parse as JSON: beyond this the rows are withheld, the rest still logged. Bodies are not
# kept past it either.
MAX_LINE_BYTES = 16_000
# The queue holds at most this many bytes of captured bodies; beyond, entries are dropped and counted.
QUEUE_BYTES = 16 * 1024 * 1024
FLUSH_SECONDS = 0.1
# A redacted text this short (a digit, "no") is not searched for in the outputs: it would match anything.
MIN_SEARCHED_CHARS = 4
_REQUEST_ID_HEADER = b"x-request-id"
_SPLIT, _RECORDS, _INSTANCES, _INPUTS = "dataframe_split", "dataframe_records", "instances", "inputs"


class RedactionError(ValueError):
    """The payload log is configured to hash columns but has no key."""


@dataclass(frozen=True)
class Redaction:
    drop: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    key: bytes = b""
    """HMAC key (the per-stack Secret Manager secret); needed when `hash` names columns."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop", frozenset(map(column_key, self.drop)))
        object.__setattr__(self, "hash", frozenset(map(column_key, self.hash)))
        both = self.drop & self.hash
        if both:
            raise RedactionError(f"columns both dropped and hashed: {sorted(both)}")
        if self.hash and not self.key:
            raise RedactionError(f"hashing columns {sorted(self.hash)} needs the payload key; none was given")

    @property
    def active(self) -> bool:
        return bool(self.drop or self.hash)

    def digest(self, value: Any) -> str:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return HASH_PREFIX + hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]


@dataclass(frozen=True)
class Table:
    columns: list[str]
    data: list[list]


@dataclass(frozen=True)
class Served:
    """What the entry says about the model behind the answers."""

    model: str
    version: str
    alias: str
    track: str


@dataclass(frozen=True)
class Exchange:
    """One sampled request as the middleware captured it, before parsing (done on the writer thread)."""

    request_id: str
    body: bytes
    content_type: Optional[str]
    status: int
    response: bytes
    latency_ms: float
    oversized: bool = False
    """A body passed MAX_LINE_BYTES and was not kept."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.response)


# --- parsing the request into a table -----------------------------------------------------------------
def _number(text: str) -> Any:
    """A CSV cell as pandas' reader would type it: int, float, or the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _records(records: list) -> Table:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    names = list(columns)
    return Table(names, [[record.get(name) for name in names] for record in records])


def _tensor(value: Any) -> Optional[Table]:
    """`instances` / `inputs`: records, or named columns; None when unnamed (a plain tensor)."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return _records(value)
    if isinstance(value, dict) and value:
        columns = list(value)
        values = list(value.values())
        if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
            return Table(columns, [list(row) for row in zip(*values)])
        return Table(columns, [values])
    return None


def parse_table(body: bytes, content_type: Optional[str]) -> tuple[Optional[Table], str]:
    """(the request's rows by column, "") or (None, why not): the formats MLflow's /invocations takes."""
    media = (content_type or "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not UTF-8"
    if media == "text/csv":
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return None, "empty CSV"
        return Table(rows[0], [[_number(cell) for cell in row] for row in rows[1:]]), ""
    if media != "application/json":
        return None, f"unsupported content type {media or 'none'}"
    try:
        document = json.loads(text)
    except ValueError:
        return None, "body is not JSON"
    if not isinstance(document, dict):
        return None, "JSON body is not an object"
    if _SPLIT in document and isinstance(document[_SPLIT], dict):
        split = document[_SPLIT]
        data = split.get("data")
        if isinstance(split.get("columns"), list) and isinstance(data, list):
            return Table([str(c) for c in split["columns"]], [row if isinstance(row, list) else [row] for row in data]), ""
        return None, "dataframe_split without columns"
    if _RECORDS in document and isinstance(document[_RECORDS], list) and all(
            isinstance(r, dict) for r in document[_RECORDS]):
        return _records(document[_RECORDS]), ""
    for key in (_INSTANCES, _INPUTS):
        if key in document:
            table = _tensor(document[key])
            return (table, "") if table is not None else (None, f"{key} without column names")
    return None, "no dataframe_split, dataframe_records, instances or inputs"


def _unnamed(body: bytes, content_type: Optional[str]) -> Optional[Table]:
    """An unnamed tensor as positional columns "0", "1", …: logged only when nothing is redacted."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    value = document.get(_INSTANCES, document.get(_INPUTS)) if isinstance(document, dict) else None
    if not isinstance(value, list) or not value:
        return None
    rows = [row if isinstance(row, list) else [row] for row in value]
    return Table([str(i) for i in range(max(len(row) for row in rows))], rows)


def column_key(name: Any) -> str:
    """A column name as redaction compares it: without a UTF-8 BOM or surrounding whitespace, casefolded, so
    "\ufeffSSN " is redacted like "ssn" (pandas strips the BOM; the model sees the column the log must hide)."""
    return str(name).replace("\ufeff", "").strip().casefold()


def redact(table: Table, redaction: Redaction) -> tuple[Table, list[str]]:
    """The table without dropped columns and with hashed ones replaced; the redacted text values (to
    check that nothing else in the entry quotes them)."""
    names = [column_key(name) for name in table.columns]
    keep = [i for i, name in enumerate(names) if name not in redaction.drop]
    hashed = {i for i in keep if names[i] in redaction.hash}
    secrets = [str(row[i]) for row in table.data for i, name in enumerate(names)
               if i < len(row) and (name in redaction.drop or name in redaction.hash)]
    data = [[redaction.digest(row[i]) if i in hashed else row[i] for i in keep if i < len(row)] for row in table.data]
    return Table([table.columns[i] for i in keep], data), secrets


def _outputs(status: int, response: bytes) -> tuple[Any, Optional[str]]:
    """(predictions, None) for an answer; (None, MLflow's error code) for an error."""
    try:
        document = json.loads(response)
    except ValueError:
        document = None
    if status >= 400:
        code = document.get("error_code") if isinstance(document, dict) else None
        return None, str(code) if code else f"HTTP {status}"
    if isinstance(document, dict) and "predictions" in document:
        return document["predictions"], None
    return document, None


def entry_line(exchange: Exchange, served: Served, redaction: Redaction) -> str:
    """The JSON line for one exchange, redacted."""
    if exchange.oversized:
        return _line(served, {**_about(exchange, served), "inputs": None, "outputs": None,
                              "withheld": f"body over {MAX_LINE_BYTES} bytes"})
    table, withheld = parse_table(exchange.body, exchange.content_type)
    secrets: list[str] = []
    if redaction.active and exchange.status >= 400:
        # A refused request may name a column the model does not know, e.g. a misspelled sensitive one that
        # redaction by name misses too: with redaction on, a failure's inputs stay in the pod.
        table, withheld = None, "inputs of a failed request withheld (redaction is on)"
    elif table is not None:
        table, secrets = redact(table, redaction)
    elif not redaction.active:
        table = _unnamed(exchange.body, exchange.content_type)
        withheld = "" if table is not None else withheld
    outputs, error = _outputs(exchange.status, exchange.response)
    quoted = [s for s in secrets if len(s) >= MIN_SEARCHED_CHARS]
    if quoted and outputs is not None:
        text = json.dumps(outputs, default=str)
        if any(json.dumps(s)[1:-1] in text for s in quoted):
            outputs, withheld = None, "outputs quote a redacted value"
    payload = {**_about(exchange, served),
               "inputs": None if table is None else _json({"columns": table.columns, "data": table.data}),
               "outputs": None if outputs is None else _json(outputs)}
    if withheld:
        payload["withheld"] = withheld
    if error:
        payload["error"] = error
    line = _line(served, payload)
    if len(line.encode()) > MAX_LINE_BYTES:
        payload.update(inputs=None, outputs=None, withheld=f"entry over {MAX_LINE_BYTES} bytes")
        line = _line(served, payload)
    return line


def _about(exchange: Exchange, served: Served) -> dict:
    return {"model": served.model, "version": served.version, "alias": served.alias, "track": served.track,
            "requestId": exchange.request_id, "status": exchange.status, "latencyMs": round(exchange.latency_ms, 3)}


def _json(value: Any) -> str:
    """Inputs and outputs as JSON text: the sink derives the BigQuery table's schema from the first entry and
    refuses later ones that differ (table_invalid_schema); a list of mixed-type lists, or outputs whose type
    follows the model, cannot be a column. As text, every entry has the same scalar fields."""
    return json.dumps(value, separators=(",", ":"), default=str)


def _line(served: Served, payload: dict) -> str:
    entry = {"message": PAYLOAD_LOG_MESSAGE, "severity": "ERROR" if payload["status"] >= 500 else "INFO",
             LABELS_KEY: {"mlflow_model": served.model, "mlflow_version": served.version,
                          "mlflow_track": served.track},
             "payload": payload}
    return json.dumps(entry, separators=(",", ":"), default=str) + "\n"


# --- reading entries back (the drift job, the tests) --------------------------------------------------
@dataclass(frozen=True)
class PayloadEntry:
    model: str
    version: str
    alias: str
    track: str
    request_id: str
    status: int
    latency_ms: float
    columns: Optional[list[str]]
    data: Optional[list[list]]
    outputs: Any
    error: Optional[str] = None
    withheld: Optional[str] = None


def read_entries(lines: Iterable[str]) -> list[PayloadEntry]:
    """The payload entries among `lines` (JSON lines: the pods' stderr, or BigQuery's
    TO_JSON_STRING(jsonPayload) rows); others skipped."""
    entries = []
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or document.get("message") != PAYLOAD_LOG_MESSAGE:
            continue
        # BigQuery lowercases the field names of a structured payload (requestId -> requestid) and keeps them
        # otherwise: https://cloud.google.com/logging/docs/export/bigquery#field_naming_conventions
        payload = {key.lower(): value for key, value in document["payload"].items()}
        inputs = json.loads(payload["inputs"]) if payload.get("inputs") else {}
        outputs = json.loads(payload["outputs"]) if payload.get("outputs") is not None else None
        entries.append(PayloadEntry(
            model=payload["model"], version=str(payload["version"]), alias=payload["alias"], track=payload["track"],
            request_id=payload["requestid"], status=int(payload["status"]), latency_ms=float(payload["latencyms"]),
            columns=inputs.get("columns"), data=inputs.get("data"), outputs=outputs,
            error=payload.get("error"), withheld=payload.get("withheld")))
    return entries


# --- writing ------------------------------------------------------------------------------------------
class LineWriter:
    """Whole lines to one file descriptor, under an advisory lock shared by the pod's worker processes:
    pipe writes above PIPE_BUF (4 KiB) may otherwise interleave with another worker's."""

    def __init__(self, fd: int, lock_path: Path):
        self.fd = fd
        self.lock_path = lock_path

    def __call__(self, line: str) -> None:
        data = memoryview(line.encode())
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            while data:
                data = data[os.write(self.fd, data):]


@dataclass
class PayloadLog:
    """Builds and writes the entries on a thread of its own, so the event loop only enqueues; the thread
    writes what queued every FLUSH_SECONDS."""

    served: Served
    redaction: Redaction
    write: Callable[[str], None]
    dropped: Callable[[], None] = lambda: None
    """Called for each entry lost to a full queue."""
    capacity: int = QUEUE_BYTES
    queue: "queue.Queue[Exchange]" = field(default_factory=queue.Queue)
    queued_bytes: int = 0
    _counting: threading.Lock = field(default_factory=threading.Lock)
    _flushing: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        threading.Thread(target=self._run, name="payload-log", daemon=True).start()
        # A daemon thread dies with the interpreter: what queued since its last write is written at exit.
        atexit.register(self.flush)

    def submit(self, exchange: Exchange) -> None:
        with self._counting:
            if self.queued_bytes + exchange.size > self.capacity:
                self.dropped()
                return
            self.queued_bytes += exchange.size
        self.queue.put_nowait(exchange)

    def _run(self) -> None:
        # Woken by a clock, not by each entry: a thread woken per entry contends for the GIL with the event
        # loop at every sampled request (measured, 1-row iris at c=16: a 0.1 sample cost 20 % of the
        # requests/s woken per entry, 1.4 % woken every FLUSH_SECONDS).
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # a failed write (EPIPE, the lock file) loses its batch, not the log
                logger.exception("payload log write failed")

    def flush(self) -> None:
        """Writes every entry queued so far, in one write; a flush in progress on another thread ends first
        (at shutdown, its batch is written before the process exits)."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        taken: list[Exchange] = []
        while True:
            try:
                taken.append(self.queue.get_nowait())
            except queue.Empty:
                break
        with self._counting:
            self.queued_bytes -= sum(exchange.size for exchange in taken)
        lines = []
        for exchange in taken:
            try:
                lines.append(entry_line(exchange, self.served, self.redaction))
            except Exception:  # one bad entry must not stop the log
                logger.exception("payload log entry %s not written", exchange.request_id)
        try:
            if lines:
                self.write("".join(lines))
        finally:
            for _ in taken:  # queue.join() returns once they are written
                self.queue.task_done()


def _request_id(scope: dict) -> str:
    for key, value in scope["headers"]:
        if key.lower() == _REQUEST_ID_HEADER:
            return value.decode("latin-1")[:64]
    return uuid.uuid4().hex


class PayloadLogApp:
    """ASGI: a sample (`rate`) of POST /invocations captured (body in, status and body out) and handed to
    `log`; everything else passes through untouched. The answer is the wrapped app's own, so with
    batching each request's entry holds its own slice of the merged predict."""

    def __init__(self, app, log: PayloadLog, rate: float, sample: Callable[[], float] = random.random):
        self.app = app
        self.log = log
        self.rate = rate
        self.sample = sample

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST"
                or self.sample() >= self.rate):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        chunks: list[bytes] = []
        answer: list[bytes] = []
        status: Optional[int] = None
        kept = 0
        oversized = False

        def keep(into: list[bytes], body: bytes) -> None:
            """A body past MAX_LINE_BYTES could not be logged: it is not kept (the entry says so)."""
            nonlocal kept, oversized
            kept += len(body)
            if kept > MAX_LINE_BYTES:
                oversized = True
                chunks.clear()
                answer.clear()
            elif not oversized:
                into.append(body)

        async def capture_receive():
            message = await receive()
            if message["type"] == "http.request":
                keep(chunks, message.get("body", b""))
            return message

        async def capture_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                keep(answer, message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, capture_receive, capture_send)
        except Exception:
            status = status or 500  # what the server answers for an app that raises
            raise
        finally:
            if status is not None:  # else the client left before its request arrived: nothing was answered
                content_type = next((v.decode("latin-1") for k, v in scope["headers"]
                                     if k.lower() == b"content-type"), None)
                self.log.submit(Exchange(_request_id(scope), b"".join(chunks), content_type, status,
                                         b"".join(answer), (time.perf_counter() - started) * 1000, oversized))
