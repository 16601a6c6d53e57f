"""Locust: clients of the model server (`/invocations`), a mix of 1-row and 100-row requests in
the formats clients send (loadtest/payloads.py).

LOADTEST_RECORD_DIR (optional): every answer to a 1-row request is appended, with its time and
first prediction, to answers-<pid>.jsonl there, so a rehearsal can tell which model version
answered when.
"""

from __future__ import annotations

import json
import time

from locust import FastHttpUser, constant, events, task

from loadtest.payloads import csv_body, dataframe_records, dataframe_split, rows
from loadtest.records import Recorder

ONE, HUNDRED = rows(1), rows(100)
answers = Recorder("answers")
events.test_start.add_listener(answers.open)


class ServingClient(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when answered

    def _predict(self, name: str, body: tuple[str, str], record: bool = False) -> None:
        content_type, text = body
        sent = time.time()  # the answer's version is checked against when the request was sent
        with self.client.post("/invocations", data=text, headers={"Content-Type": content_type}, name=name,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            predictions = json.loads(response.text)["predictions"]
            if record:
                answers.write(sent, p=predictions[0])

    @task(6)
    def one_row_split(self):
        self._predict("1 row dataframe_split", dataframe_split(ONE), record=True)

    @task(2)
    def one_row_records(self):
        self._predict("1 row dataframe_records", dataframe_records(ONE), record=True)

    @task(1)
    def hundred_rows_split(self):
        self._predict("100 rows dataframe_split", dataframe_split(HUNDRED))

    @task(1)
    def hundred_rows_csv(self):
        self._predict("100 rows csv", csv_body(HUNDRED))
