"""Where the logged requests are read from: the payload sink's BigQuery dataset, or a file of log lines.

    bigquery://PROJECT.DATASET   the entries of the last WINDOW hours (the sink's table, partitioned by day)
    PATH                         every line of a file (`make local` writes WORKDIR/payloads.jsonl; one file
                                 is one window)

Either way the result is pages of JSON lines of payload entries (which mlflow_serving.payload_log reads),
yielded one at a time so the job never holds the window.
BigQuery is called through its REST API with the pod's Workload Identity (google-auth, in the image),
so the image needs no BigQuery client library.
"""

from __future__ import annotations

from pathlib import Path
from itertools import islice
from typing import Any, Callable, Iterator

from mlflow_serving.payload_log import PAYLOAD_LOG_MESSAGE

BIGQUERY = "bigquery://"
API = "https://bigquery.googleapis.com/bigquery/v2/projects"
# A sink with partitioned tables names each table after the log: the pods write entries on stderr, which GKE
# logs as `stderr` (infra/payload_store.py PAYLOAD_TABLE; a test keeps the two equal).
TABLE = "stderr"
PAGE_ROWS = 10_000
WAIT_MS = 60_000


def window_query(dataset: str, window_hours: int) -> dict:
    """A BigQuery jobs.query request for the entries of the window (the timestamp filter prunes partitions)."""
    sql = (f"SELECT TO_JSON_STRING(jsonPayload) AS line FROM `{dataset}.{TABLE}` "
           "WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @hours HOUR) "
           "AND jsonPayload.message = @message")
    return {"query": sql, "useLegacySql": False, "timeoutMs": WAIT_MS, "maxResults": PAGE_ROWS,
            "parameterMode": "NAMED", "queryParameters": [
                {"name": "hours", "parameterType": {"type": "INT64"}, "parameterValue": {"value": str(window_hours)}},
                {"name": "message", "parameterType": {"type": "STRING"},
                 "parameterValue": {"value": PAYLOAD_LOG_MESSAGE}}]}


def bigquery_lines(dataset: str, window_hours: int, session: Any) -> Iterator[list[str]]:
    """The rows of the window's query, a page at a time (`session`: google-auth's AuthorizedSession)."""
    project = dataset.split(".", 1)[0]
    answer = _ok(session.post(f"{API}/{project}/queries", json=window_query(dataset, window_hours)))
    job = answer["jobReference"]
    while True:
        if answer.get("jobComplete"):
            yield [row["f"][0]["v"] for row in answer.get("rows", [])]
            if not answer.get("pageToken"):
                return
        params = {"location": job["location"], "timeoutMs": WAIT_MS, "maxResults": PAGE_ROWS}
        if answer.get("jobComplete"):
            params["pageToken"] = answer["pageToken"]
        answer = _ok(session.get(f"{API}/{project}/queries/{job['jobId']}", params=params))


def _ok(response: Any) -> dict:
    if response.status_code != 200:
        raise RuntimeError(f"BigQuery answered {response.status_code}: {response.text[:500]}")
    return response.json()


def read_pages(source: str, window_hours: int, session_factory: Callable[[], Any]) -> Iterator[list[str]]:
    if source.startswith(BIGQUERY):
        yield from bigquery_lines(source[len(BIGQUERY):], window_hours, session_factory())
        return
    with Path(source).open(encoding="utf-8") as lines:
        while page := [line.rstrip("\n") for line in islice(lines, PAGE_ROWS)]:
            yield page


def authorized_session() -> Any:
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials)
