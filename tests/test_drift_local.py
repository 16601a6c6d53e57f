"""Drift and notifications end to end on `make local`, from the rendered dev plan with redaction on: a
version trained on a logged dataset is served; traffic drawn from the training data scores no column over
the threshold, the same traffic with one column shifted scores that column and only it; the MLflow run of
the drift job has the scores and none for a redacted column; the recording sink received a notification of
each kind the platform sends here (version registered, alias moved, promotion refused, drift, and an alert:
tracking-down fires through Prometheus and Alertmanager while the tracking pod is stopped, and resolves once it
is back). The serving policies' queries select the pods' real series, with their track. Tracking gives users
nothing by default (NO_PERMISSIONS): the drift job, its own MLflow user, works with the grants the
serving-user Job gives it, sees nothing else, and is refused (and says so) without EDIT on the model."""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.secrets import DRIFT_PASSWORD
from k8s.drift import DRIFT_USERNAME, MONITORING_EXPERIMENT
from tools.local.localplatform import EMULATOR_HOST_ENV
from tools.local.processes import LocalPlatformError, http
from tools.local.testing import scratch_platform
from tools.offline.plan import write_plan
from tools.offline.render import render
from tools.offline.stack import run_stack
from tools.ops import promote
from tools.ops.local import admin_runner
from tools.ops.promote import RuntimeGranter

pytestmark = pytest.mark.slow

SETTINGS = {"serving.payloadLog.redact.drop": '["email"]', "serving.payloadLog.redact.hash": '["customer"]',
            "tracking.authDefaultPermission": "NO_PERMISSIONS", "monitoring.alertsEnabled": "true"}
ALERT_TIME_SCALE = 0.1  # scrapes every 3 s, rules every 6 s, tracking-down after 18 s
ALERT_TIMEOUT = 120.0
SHIFTED = "petal length (cm)"
SHIFT = 2.5
REQUESTS = 300
THRESHOLD = 0.2
SETTLE_SECONDS = 3.0
DATASET = "datasets/iris.csv"
# A new experiment for the version the test trains: no grant on it exists before `make promote`'s.
EXPERIMENT = "iris-drift"


@pytest.fixture(scope="module")
def redacting_plan(tmp_path_factory):
    plan = tmp_path_factory.mktemp("drift-plan")
    write_plan(render(run_stack("dev", overrides=SETTINGS)), plan / "dev")
    return plan


def settle(platform) -> None:
    """Until the pod's payload writer and the local sink's recorder have written everything."""
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < SETTLE_SECONDS:
        count = len(platform.payloads.target.read_text().splitlines()) + platform.payloads.record()
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        time.sleep(0.3)


def send(platform, training: list[dict], shift: float, seed: int) -> None:
    """REQUESTS rows drawn from the training rows (one column moved by `shift`), with personal data the pods
    redact: dropped `email`, hashed `customer`."""
    rng = random.Random(seed)
    columns = [*training[0], "email", "customer"]
    drawn = [{name: float(value) + (shift if name == SHIFTED else 0.0) for name, value in rng.choice(training).items()}
             for _ in range(REQUESTS)]

    def ask(i: int) -> int:
        body = {"dataframe_split": {"columns": columns,
                                    "data": [[*drawn[i].values(), f"p{i}@example.com", f"c-{i}"]]}}
        request = urllib.request.Request(f"{platform.serving_url}/invocations", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(ask, range(REQUESTS))) == {200}
    settle(platform)


def serving_selections(platform) -> dict[str, list[dict]]:
    """Each serving policy's query without its threshold, and each series selector in it without its regex
    matchers, as the local Prometheus answers them: a query that selects nothing would never fire on GCP either."""
    answers = {}
    for condition in platform.alerting.conditions:
        if "mlflow_serving" not in condition.query:
            continue
        answers[condition.policy] = platform.alerting.query(re.sub(r"\s*[<>]=?\s*[\d.]+\s*$", "", condition.query))
        for selector in re.findall(r"[a-zA-Z_:][\w:]*\{[^}]*\}", condition.query):
            regex_labels = re.findall(r'(\w+)=~"[^"]*"', selector)
            exact = re.sub(r',?\w+=~"[^"]*"', "", selector)
            answers[selector] = platform.alerting.query(f"count by (track, {', '.join(['job', *regex_labels])}) ({exact})")
    return answers


def alerts_after(platform, seen: int, status: str) -> list[dict]:
    deadline = time.monotonic() + ALERT_TIMEOUT
    while time.monotonic() < deadline:
        found = [e for e in platform.sink.received()[seen:] if e["kind"] == "alert" and e["status"] == status]
        if found:
            return found
        time.sleep(1)
    return []


def drift_scores(log_path) -> dict[str, float]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return {line["column"]: line["psi"] for line in lines if line.get("message") == "mlflow.drift.score"}


@pytest.fixture(scope="module")
def rehearsal(request, redacting_plan):
    with scratch_platform(request, "mlflow-drift-", plan_dir=redacting_plan,
                          alert_time_scale=ALERT_TIME_SCALE) as platform:
        platform.start()
        trained = platform.run_client(
            "train", "--model-name", platform.model_name, "--alias", platform.model_alias,
            "--dataset-source", f"gs://{platform.bucket}/{DATASET}", "--experiment", EXPERIMENT,
            extra_env={EMULATOR_HOST_ENV: platform.emulator_url}).json()
        # as `make promote` would: the machine users' grants on the new version's experiment, then the pods load it
        granted = RuntimeGranter(admin_runner(platform), platform.serving_username).grant(platform.model_name)
        platform.restart_serving()
        training = trained["training_rows"]  # the data itself, not the stored copy the reference is made from
        send(platform, training, 0.0, seed=1)
        time.sleep(2 * 30 * ALERT_TIME_SCALE + 1)  # two scrapes of the traffic: a rate needs both
        selections = serving_selections(platform)
        calm = drift_scores(platform.run_drift_job())
        platform.payloads.target.write_text("")  # the next window
        send(platform, training, SHIFT, seed=2)
        shifted = drift_scores(platform.run_drift_job())
        (platform.workdir / "endpoints.json").write_text(json.dumps(platform.endpoints()))
        refused = promote.main(["--model", platform.model_name, "--version", trained["version"], "--alias",
                                platform.model_alias, "--require", "train_accuracy>=2", "--target", "local",
                                "--workdir", str(platform.workdir)])
        time.sleep(2 * SETTLE_SECONDS)  # the receiver's lines reach the sink's follower
        platform.received_events.record()
        seen = len(platform.sink.received())  # a tracking-down while the platform started is not this one
        platform.stop_tracking()
        fired = alerts_after(platform, seen, "firing")
        platform.start_tracking()
        resolved = alerts_after(platform, seen, "resolved")
        yield {"platform": platform, "version": trained["version"], "granted": granted, "calm": calm,
               "shifted": shifted, "refused": refused, "received": platform.sink.received(),
               "selections": selections, "fired": fired, "resolved": resolved}


def test_traffic_like_the_training_data_drifts_nowhere(rehearsal):
    assert set(rehearsal["calm"]) == {"sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                      "petal width (cm)"}, rehearsal["calm"]
    assert max(rehearsal["calm"].values()) < THRESHOLD, rehearsal["calm"]


def test_the_shifted_column_and_only_it_is_found(rehearsal):
    over = sorted(column for column, score in rehearsal["shifted"].items() if score > THRESHOLD)
    assert over == [SHIFTED], rehearsal["shifted"]


def test_the_scores_are_an_mlflow_run_without_the_redacted_columns(rehearsal):
    platform = rehearsal["platform"]
    client = as_user(platform, platform.admin_username, platform.admin_password)
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    [latest, _] = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert latest.data.params["version"] == rehearsal["version"]
    assert latest.data.params["redacted_columns"] == "customer,email"
    assert latest.data.tags["drift.over_threshold"] == SHIFTED
    assert latest.data.metrics[f"psi.{SHIFTED}".replace("(", "_").replace(")", "_")] > THRESHOLD
    assert not [key for key in latest.data.metrics if "email" in key or "customer" in key]
    # the reference came from the logged dataset, stored on the version
    assert "drift.reference" in client.get_model_version(platform.model_name, rehearsal["version"]).tags


def as_user(platform, username: str, password: str):
    from mlflow import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password)
    return MlflowClient(platform.tracking_url)


def test_the_job_ran_as_its_own_user_who_sees_only_what_it_needs(rehearsal):
    from mlflow.exceptions import MlflowException

    platform = rehearsal["platform"]
    assert f"{DRIFT_USERNAME} EDIT on it" in rehearsal["granted"]
    admin = as_user(platform, platform.admin_username, platform.admin_password)
    experiment = admin.get_experiment_by_name(MONITORING_EXPERIMENT)
    training_experiment = admin.get_run(admin.get_model_version(platform.model_name, rehearsal["version"]).run_id
                                        ).info.experiment_id
    drift = as_user(platform, DRIFT_USERNAME, platform.secret_value(DRIFT_PASSWORD))
    assert [m.name for m in drift.search_registered_models()] == [platform.model_name]
    demo_experiment = admin.get_experiment_by_name("iris-demo").experiment_id  # the demo model's first version
    assert {e.experiment_id for e in drift.search_experiments()} == {experiment.experiment_id, training_experiment,
                                                                     demo_experiment}
    with pytest.raises(MlflowException, match="403"):
        drift.create_run(training_experiment)  # READ where the training runs are


def test_each_kind_of_notification_reached_the_sink(rehearsal):
    assert rehearsal["refused"] == promote.EXIT_GATE
    kinds = {entry["kind"] for entry in rehearsal["received"]}
    assert {"version_registered", "alias_moved", "promotion_refused", "drift", "alert"} <= kinds, rehearsal["received"]
    drifted = [entry for entry in rehearsal["received"] if entry["kind"] == "drift"]
    assert {entry["column"] for entry in drifted} == {SHIFTED}
    registered = [entry for entry in rehearsal["received"] if entry["kind"] == "version_registered"]
    assert rehearsal["version"] in {entry["version"] for entry in registered}


def test_a_stopped_tracking_pod_fires_tracking_down_and_its_return_resolves_it(rehearsal):
    assert [(e["alert"], e["labels"]["enabled"]) for e in rehearsal["fired"]] == [("tracking-down", "true")], \
        rehearsal["received"]
    assert [e["alert"] for e in rehearsal["resolved"]] == ["tracking-down"], rehearsal["received"]


def test_the_serving_queries_select_the_pods_series_with_their_track(rehearsal):
    selections = rehearsal["selections"]
    assert {"serving-errors", "serving-latency"} <= set(selections)
    assert [s["metric"]["track"] for s in selections["serving-latency"]] == ["champion"], selections
    for selector, series in selections.items():
        if "{" in selector:
            assert series and all(s["metric"].get("track") == "champion" and s["metric"]["job"] == "mlflow-serving"
                                  for s in series), (selector, series)
    statuses = {s["metric"]["status"] for key, found in selections.items() if "status" in key for s in found}
    assert statuses and all(re.fullmatch(r"\d{3}", status) for status in statuses), statuses  # "5.." can match


def test_without_edit_on_the_model_the_job_is_refused_and_names_who_and_what(rehearsal):
    """The grant is necessary: with READ on the model the reference profile cannot be stored (runs last: it
    takes the grant back and the reference away)."""
    platform = rehearsal["platform"]
    admin = as_user(platform, platform.admin_username, platform.admin_password)
    admin.delete_model_version_tag(platform.model_name, rehearsal["version"], "drift.reference")
    # MLflow's auth client needs the server's packages; its two REST calls (the auth app's routes) do not
    grant = {"username": DRIFT_USERNAME, "resource_type": "registered_model", "resource_id": platform.model_name}
    for action, body in (("revoke", grant), ("grant", {**grant, "permission": "READ"})):
        answer = http("POST", f"{platform.tracking_url}/api/3.0/mlflow/users/permissions/{action}", json_body=body,
                      auth=(platform.admin_username, platform.admin_password))
        assert answer.status == 200, (action, answer.status)
    with pytest.raises(LocalPlatformError, match="exited with code 1"):
        platform.run_drift_job()
    [refused] = [json.loads(line) for line in (platform.logs_dir / "drift-drift.log").read_text().splitlines()
                 if "mlflow.drift.refused" in line]
    assert refused["user"] == DRIFT_USERNAME and "model-versions/set-tag" in refused["reason"], refused
