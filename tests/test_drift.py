"""The drift job's arithmetic and bookkeeping (mlflow_image/mlflow_drift) without MLflow: profiles, PSI,
which columns are scored, what is recorded and printed (a fake registry client)."""

from __future__ import annotations

import io
import json
import random
import sys
from types import SimpleNamespace

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_drift import reference  # noqa: E402
from mlflow_drift.profile import OTHER, BinCounts, dumps, loads, profile_column, profile_columns, psi, quantile_edges  # noqa: E402
from mlflow_drift.score import JobSettings, fold, metric_key, run_job  # noqa: E402
from mlflow_drift.sources import bigquery_lines, window_query  # noqa: E402
from mlflow_serving.payload_log import Exchange, Redaction, Served, entry_line  # noqa: E402

from infra.payload_store import PAYLOAD_TABLE  # noqa: E402

pytestmark = pytest.mark.unit
RNG = random.Random(7)


def drift_scores(reference_profiles, columns):
    scores = {}
    for name, values in columns.items():
        counts = BinCounts(reference_profiles[name])
        for value in values:
            counts.add(value)
        scores[name] = counts.psi()
    return scores


def training(n=3000, shift=0.0, colors="rgb"):
    return {"x": [RNG.gauss(shift, 1) for _ in range(n)], "y": [RNG.uniform(0, 10) for _ in range(n)],
            "color": [RNG.choice(colors) for _ in range(n)]}


def test_numeric_bins_hold_a_tenth_of_the_training_data_each():
    profile = profile_column([float(i) for i in range(1000)])
    assert profile.kind == "numeric" and len(profile.edges) == 9
    assert all(share == pytest.approx(0.1, abs=0.002) for share in profile.shares)
    assert quantile_edges([3.0] * 50) == (3.0,)  # ties collapse: a constant column has two bins


def test_categorical_values_unseen_in_training_land_in_the_other_bucket():
    profile = profile_column(["a", "b", "a", True])
    assert profile.kind == "categorical" and profile.categories[0] == "a"
    assert profile.shares_of(["zzz"])[-1] == 1.0
    assert profile.bin_of(True) == profile.categories.index("true")
    assert OTHER not in profile.categories


def test_psi_is_zero_for_the_same_shares_and_finite_for_an_empty_bin():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert 0 < psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) < 10
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_only_the_shifted_column_scores_above_the_conventional_threshold():
    reference_profile = profile_columns(training())
    same = drift_scores(reference_profile, training(800))
    assert max(same.values()) < 0.1, same
    shifted = drift_scores(reference_profile, training(800, shift=1.0))
    assert [column for column, score in shifted.items() if score > 0.2] == ["x"], shifted
    recolored = drift_scores(reference_profile, training(800, colors="rgbk"))
    assert [column for column, score in recolored.items() if score > 0.2] == ["color"], recolored


def test_a_stored_profile_reads_back_and_another_format_is_refused():
    profiles = profile_columns(training(500))
    assert loads(dumps(profiles)).keys() == profiles.keys()
    with pytest.raises(ValueError, match="format"):
        loads(json.dumps({"format": 99, "columns": {}}))


SERVED = Served("fraud", "3", "champion", "champion")


def entry(rows, columns=("x", "y", "color", "ssn"), status=200, redaction=Redaction(drop=frozenset({"ssn"}))):
    """The line the serving pod writes for one request (mlflow_serving.payload_log's writer)."""
    body = json.dumps({"dataframe_split": {"columns": list(columns), "data": [list(row) for row in rows]}})
    answer = {"predictions": [0] * len(rows)} if status < 400 else {"error_code": "BAD_REQUEST"}
    exchange = Exchange("r", body.encode(), "application/json", status, json.dumps(answer).encode(), 1.0)
    return entry_line(exchange, SERVED, redaction)


def test_redacted_and_refused_requests_are_not_read():
    hashed = Redaction(drop=frozenset({"ssn"}), hash=frozenset({"color"}), key=b"k")
    lines = [entry([(1.0, 2.0, "r", "123-45")], redaction=hashed), entry([(9.0, 9.0, "g", "1")], status=400),
             "not json", json.dumps({"message": "other"})]
    client = FakeClient({reference.REFERENCE_TAG: dumps(profile_columns(training()))})
    [(key, window)] = fold(client, [lines], frozenset({"ssn", "color"})).items()
    assert key == ("fraud", "3") and window.rows == 1
    assert {name: counts.total for name, counts in window.counts.items()} == {"x": 1, "y": 1}


class FakeClient:
    """The registry and tracking calls the job makes, in memory."""

    def __init__(self, tags=None):
        self.tags = dict(tags or {})
        self.runs: dict[str, dict] = {}

    def get_model_version(self, model, version):
        return SimpleNamespace(tags=self.tags, run_id=None)

    def set_model_version_tag(self, model, version, key, value):
        self.tags[key] = value

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        return "1"

    def create_run(self, experiment_id, run_name, tags):
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {"params": {}, "metrics": {}, "tags": dict(tags), "name": run_name}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_param(self, run_id, key, value):
        self.runs[run_id]["params"][key] = value

    def log_metric(self, run_id, key, value):
        self.runs[run_id]["metrics"][key] = value

    def set_tag(self, run_id, key, value):
        self.runs[run_id]["tags"][key] = value

    def set_terminated(self, run_id):
        self.runs[run_id]["ended"] = True


def traffic(n, shift=0.0):
    data = training(n, shift=shift)
    return [entry([(data["x"][i], data["y"][i], data["color"][i], "secret")]) for i in range(n)]


SETTINGS = JobSettings(window_hours=24, threshold=0.2, min_rows=100, redacted=frozenset({"ssn"}))


def test_the_job_records_a_run_and_prints_a_score_line_per_column():
    client = FakeClient({reference.REFERENCE_TAG: dumps(profile_columns(training()))})
    out = io.StringIO()
    [result] = run_job(client, [traffic(600, shift=1.5)], SETTINGS, out)
    assert result.over(0.2) == ["x"]
    [run] = client.runs.values()
    assert run["params"]["version"] == "3" and run["params"]["window_hours"] == 24
    assert set(run["metrics"]) == {"psi.x", "psi.y", "psi.color", "psi.max"}
    assert run["tags"]["drift.over_threshold"] == "x"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["column"]: line["severity"] for line in lines} == {"x": "WARNING", "y": "INFO", "color": "INFO"}


def test_too_few_rows_or_no_reference_scores_nothing_and_says_why():
    out = io.StringIO()
    [few] = run_job(FakeClient({reference.REFERENCE_TAG: dumps(profile_columns(training()))}), [traffic(5)], SETTINGS, out)
    assert few.skipped and "fewer than 100" in few.skipped
    [unknown] = run_job(FakeClient(), [traffic(200)], SETTINGS, out)
    assert "make drift-reference MODEL=fraud VERSION=3" in unknown.skipped


def test_metric_names_are_ones_mlflow_accepts():
    assert metric_key("petal width (cm)") == "psi.petal width _cm_"


def test_the_bigquery_window_is_a_parameterised_query_on_the_sinks_table():
    # the table the program's sink fills (infra/payload_store.py) is the one the job reads
    request = window_query("proj.mlflow_payloads_dev", 24)
    assert f"`proj.mlflow_payloads_dev.{PAYLOAD_TABLE}`" in request["query"] and "@hours" in request["query"]
    assert request["useLegacySql"] is False
    assert {p["name"]: p["parameterValue"]["value"] for p in request["queryParameters"]} == {
        "hours": "24", "message": "mlflow.serving.payload"}


class Page(list):
    """A page of log lines whose lifetime a test can watch (weakref)."""


def test_the_window_is_folded_page_by_page_not_held():
    # a day of a busy model is hundreds of MB of JSON: the job must keep counts, not the pages it has read
    import gc
    import weakref

    client = FakeClient({reference.REFERENCE_TAG: dumps(profile_columns(training()))})
    read: list = []

    def pages():
        for _ in range(20):
            gc.collect()
            assert sum(ref() is not None for ref in read) <= 1, "earlier pages are still held"
            page = Page(traffic(50, shift=1.5))
            read.append(weakref.ref(page))
            yield page

    [result] = run_job(client, pages(), SETTINGS, io.StringIO())
    assert result.rows == 1000 and result.over(0.2) == ["x"]


def test_text_in_a_numeric_column_counts_in_its_own_bin_and_stops_no_scoring():
    profile = profile_column([float(i) for i in range(100)])
    counts = BinCounts(profile)
    for value in [1.0, "abc", 50.0, {"a": 1}, "nan"]:
        counts.add(value)
    assert counts.counts[-1] == 3 and counts.total == 5
    assert counts.psi() > 0.2  # training had no such values: it reads as drift
    client = FakeClient({reference.REFERENCE_TAG: dumps(profile_columns(training()))})
    lines = traffic(300) + [entry([("abc", 1.0, "r", "s")])]
    [result] = run_job(client, [lines], SETTINGS, io.StringIO())
    assert result.rows == 301 and set(result.scores) == {"x", "y", "color"} and result.over(0.2) == []


class FakeSession:
    """BigQuery's jobs.query and getQueryResults answers, in order; records the requests."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests: list = []

    def _answer(self, *request):
        self.requests.append(request)
        return SimpleNamespace(status_code=200, json=lambda answer=self.answers.pop(0): answer, text="")

    def post(self, url, json):
        return self._answer("POST", url, json)

    def get(self, url, params):
        return self._answer("GET", url, params)


def rows(*lines):
    return [{"f": [{"v": line}]} for line in lines]


def test_bigquery_pages_are_read_after_the_job_completes_and_through_every_page_token():
    job = {"jobId": "j1", "location": "europe-west1"}
    session = FakeSession([
        {"jobReference": job, "jobComplete": False},                                   # still running
        {"jobReference": job, "jobComplete": True, "rows": rows("a", "b"), "pageToken": "p2"},
        {"jobReference": job, "jobComplete": True, "rows": rows("c"), "pageToken": "p3"},
        {"jobReference": job, "jobComplete": True, "rows": rows("d")},
    ])
    pages = bigquery_lines("proj.mlflow_payloads_dev", 24, session)
    assert list(pages) == [["a", "b"], ["c"], ["d"]]
    post, *gets = session.requests
    assert post[:2] == ("POST", "https://bigquery.googleapis.com/bigquery/v2/projects/proj/queries")
    assert all(url.endswith("/projects/proj/queries/j1") and params["location"] == "europe-west1"
               for _, url, params in gets)
    assert [params.get("pageToken") for _, _, params in gets] == [None, "p2", "p3"]


def test_a_bigquery_error_names_its_status():
    session = FakeSession([])
    session.post = lambda url, json: SimpleNamespace(status_code=403, text="Access Denied: dataset")
    with pytest.raises(RuntimeError, match="403: Access Denied"):
        list(bigquery_lines("proj.ds", 24, session))


def refusing(response_text="Permission denied"):
    """A registry client that tracking refuses (403) as MLflow's REST layer reports it."""
    from mlflow.utils.rest_utils import verify_rest_response

    endpoint = "/api/2.0/mlflow/model-versions/set-tag"

    class Refused(FakeClient):
        def set_model_version_tag(self, model, version, key, value):
            verify_rest_response(SimpleNamespace(status_code=403, text=response_text), endpoint)

    return Refused, endpoint


def test_a_refused_call_ends_the_job_naming_the_user_and_the_call(tmp_path, monkeypatch, capsys):
    import mlflow

    from mlflow_drift.__main__ import REFUSED_MESSAGE, main

    refused_client, endpoint = refusing()
    monkeypatch.setattr(mlflow, "MlflowClient", lambda: refused_client())
    monkeypatch.setattr(reference, "logged_dataset_path", lambda client, model, version: "train.csv")
    monkeypatch.setattr(reference, "read_table", lambda path: training(300))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mlflow-drift")
    source = tmp_path / "payloads.jsonl"
    source.write_text("\n".join(traffic(200)) + "\n")
    code = main(["score", "--source", str(source), "--window-hours", "1", "--threshold", "0.2", "--min-rows", "10"])
    out, err = capsys.readouterr()
    assert code == 1
    [line] = [json.loads(text) for text in out.splitlines() if REFUSED_MESSAGE in text]
    assert line["user"] == "mlflow-drift" and endpoint in line["reason"] and "403" in line["reason"]
    assert "MLflow user 'mlflow-drift' was refused" in err and "Traceback" not in err
