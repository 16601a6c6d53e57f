"""Locust: a data scientist's mix against the tracking server, with basic auth: create a run, log
a batch of metrics and params, finish it, search runs, upload an artifact and download it again
through the server's artifact proxy.

LOADTEST_USERNAME and LOADTEST_PASSWORD_FILE name the credentials. LOADTEST_RECORD_DIR
(optional): every acknowledged write (the server answered 200) is appended to acks-<pid>.jsonl
there (run id, metric keys and steps), so a rehearsal can check that nothing acknowledged is lost.
"""

from __future__ import annotations

import os
import time
import uuid

from locust import HttpUser, between, events, task

from loadtest.ensure_user import EXPERIMENT
from loadtest.records import Recorder

METRICS_PER_BATCH = 10
acks = Recorder("acks")
events.test_start.add_listener(acks.open)


class DataScientist(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self):
        with open(os.environ["LOADTEST_PASSWORD_FILE"]) as handle:
            self.client.auth = (os.environ["LOADTEST_USERNAME"], handle.read().strip())
        self.experiment_id = self._experiment()
        self.runs: list[str] = []

    def _api(self, method: str, path: str, name: str, **kwargs):
        """One call; a non-200 answer is a failure with its body; the parsed JSON or None."""
        with self.client.request(method, f"/api/2.0/mlflow/{path}", name=name, catch_response=True,
                                 **kwargs) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return None
            return response.json()

    def _experiment(self) -> str:
        """The shared experiment: found, or created (404 and a concurrent create are expected answers)."""
        for _ in range(3):
            with self.client.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT},
                                 name="experiments/get-by-name", catch_response=True) as found:
                if found.status_code == 200:
                    return found.json()["experiment"]["experiment_id"]
                if found.status_code == 404:
                    found.success()
            with self.client.post("/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT},
                                  name="experiments/create", catch_response=True) as created:
                if created.status_code == 200:
                    return created.json()["experiment_id"]
                if "RESOURCE_ALREADY_EXISTS" in created.text:
                    created.success()  # another user created it in between
        raise RuntimeError(f"experiment {EXPERIMENT!r} neither found nor created")

    @task(4)
    def log_a_run(self):
        created = self._api("POST", "runs/create", "runs/create",
                            json={"experiment_id": self.experiment_id, "start_time": int(time.time() * 1000),
                                  "run_name": f"load-{uuid.uuid4().hex[:8]}"})
        if created is None:
            return
        run_id = created["run"]["info"]["run_id"]
        acks.write(kind="run", run_id=run_id)
        now = int(time.time() * 1000)
        metrics = [{"key": f"m{i}", "value": i * 0.5, "timestamp": now, "step": 0} for i in range(METRICS_PER_BATCH)]
        params = [{"key": "batch", "value": "10"}]
        if self._api("POST", "runs/log-batch", "runs/log-batch",
                     json={"run_id": run_id, "metrics": metrics, "params": params}) is not None:
            acks.write(kind="metrics", run_id=run_id, keys=[m["key"] for m in metrics])
        if self._api("POST", "runs/update", "runs/update",
                     json={"run_id": run_id, "status": "FINISHED", "end_time": now}) is not None:
            self.runs.append(run_id)

    @task(2)
    def search_runs(self):
        self._api("POST", "runs/search", "runs/search",
                  json={"experiment_ids": [self.experiment_id], "max_results": 20,
                        "filter": "metrics.m1 >= 0", "order_by": ["attributes.start_time DESC"]})

    @task(1)
    def artifact_round_trip(self):
        if not self.runs:
            return
        run_id = self.runs[-1]
        path = f"/api/2.0/mlflow-artifacts/artifacts/{self.experiment_id}/{run_id}/artifacts/notes.txt"
        body = f"run {run_id}\n".encode() * 64
        with self.client.put(path, data=body, name="artifact upload", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
        acks.write(kind="artifact", run_id=run_id, path="notes.txt", size=len(body))
        with self.client.get(path, name="artifact download", catch_response=True) as response:
            if response.status_code != 200 or response.content != body:
                response.failure(f"HTTP {response.status_code}, {len(response.content)} bytes of {len(body)}")
