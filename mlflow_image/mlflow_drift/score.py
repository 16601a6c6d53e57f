"""One run of the drift job: the window's requests per model version, scored against the version's profile.

For each version with at least `min_rows` rows in the window: the PSI of each served column its profile
knows (columns redacted in the pod are never scored: dropped ones are absent, hashed ones are left out by
name), recorded as an MLflow run in the monitoring experiment (a metric per column, so the runs chart the
trend), and printed as one log line per column (SCORE_MESSAGE), which a log-based metric exports to Cloud
Monitoring, where an alert policy compares it with the threshold.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, TextIO

from mlflow_drift import reference
from mlflow_drift.profile import columns_of, drift_scores
from mlflow_serving.payload_log import read_entries

SCORE_MESSAGE = "mlflow.drift.score"
EXPERIMENT = "platform-monitoring"


@dataclass(frozen=True)
class JobSettings:
    window_hours: int
    threshold: float
    min_rows: int
    redacted: frozenset[str]
    experiment: str = EXPERIMENT


@dataclass(frozen=True)
class VersionScores:
    model: str
    version: str
    rows: int
    scores: dict[str, float]
    """PSI by column; empty when the version was not scored (`skipped` says why)."""
    skipped: Optional[str] = None

    def over(self, threshold: float) -> list[str]:
        return sorted(column for column, score in self.scores.items() if score > threshold)


def served_columns(lines: Sequence[str], redacted: frozenset[str]) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """(model, version) -> the columns its requests carried, without the redacted ones."""
    grouped: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for entry in read_entries(lines):
        if entry.columns is None or entry.data is None or entry.status >= 400:
            continue  # inputs withheld, or a request the model refused: not what it was asked to score
        columns = columns_of(entry.data, entry.columns)
        target = grouped.setdefault((entry.model, str(entry.version)), {})
        for name, values in columns.items():
            if name not in redacted:
                target.setdefault(name, []).extend(values)
    return grouped


def metric_key(column: str) -> str:
    """An MLflow metric name for a column's score (MLflow allows letters, digits, _ - . space / :)."""
    return "psi." + re.sub(r"[^A-Za-z0-9_\-. /:]", "_", column)


def score_version(client: Any, model: str, version: str, columns: Mapping[str, list], settings: JobSettings
                  ) -> VersionScores:
    rows = max((len(values) for values in columns.values()), default=0)
    if rows < settings.min_rows:
        return VersionScores(model, version, rows, {}, f"{rows} rows in the window, fewer than {settings.min_rows}")
    profiles = reference.ensure(client, model, version)
    if profiles is None:
        return VersionScores(model, version, rows, {}, "no reference profile: its run logged no loadable dataset; "
                             f"make drift-reference MODEL={model} VERSION={version} DATA=FILE")
    return VersionScores(model, version, rows, drift_scores(profiles, columns))


def record(client: Any, result: VersionScores, settings: JobSettings) -> str:
    """The MLflow run of one version's scores; returns its id."""
    experiment = client.get_experiment_by_name(settings.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
    run = client.create_run(experiment_id, run_name=f"drift {result.model} v{result.version}",
                            tags={"drift.model": result.model, "drift.version": result.version})
    run_id = run.info.run_id
    for key, value in (("model", result.model), ("version", result.version), ("window_hours", settings.window_hours),
                       ("rows", result.rows), ("psi_threshold", settings.threshold),
                       ("redacted_columns", ",".join(sorted(settings.redacted)) or "-")):
        client.log_param(run_id, key, value)
    for column, score in sorted(result.scores.items()):
        client.log_metric(run_id, metric_key(column), score)
    if result.scores:
        client.log_metric(run_id, "psi.max", max(result.scores.values()))
    client.set_tag(run_id, "drift.over_threshold", ",".join(result.over(settings.threshold)) or "-")
    client.set_terminated(run_id)
    return run_id


def score_lines(result: VersionScores, threshold: float) -> list[dict]:
    return [{"message": SCORE_MESSAGE, "severity": "WARNING" if score > threshold else "INFO",
             "model": result.model, "version": result.version, "column": column, "psi": round(score, 6),
             "threshold": threshold, "rows": result.rows}
            for column, score in sorted(result.scores.items())]


def run_job(client: Any, lines: Sequence[str], settings: JobSettings, out: TextIO = sys.stdout) -> list[VersionScores]:
    results = []
    for (model, version), columns in sorted(served_columns(lines, settings.redacted).items()):
        result = score_version(client, model, version, columns, settings)
        results.append(result)
        if result.skipped:
            out.write(json.dumps({"message": "mlflow.drift.skipped", "severity": "WARNING", "model": model,
                                  "version": version, "reason": result.skipped}) + "\n")
            continue
        run_id = record(client, result, settings)
        for line in score_lines(result, settings.threshold):
            out.write(json.dumps({**line, "run_id": run_id}) + "\n")
    out.flush()
    return results
