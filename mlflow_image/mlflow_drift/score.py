"""One run of the drift job: the window's requests per model version, scored against the version's profile.

The window is read page by page and each page folded into per-column bin counts (VersionWindow), so the
job's memory does not grow with the traffic. For each version with at least `min_rows` rows in the window: the PSI of each served column its profile
knows (columns redacted in the pod are never scored: dropped ones are absent, hashed ones are left out by
name), recorded as an MLflow run in the monitoring experiment (a metric per column, so the runs chart the
trend), and printed as one log line per column (SCORE_MESSAGE), which a log-based metric exports to Cloud
Monitoring, where an alert policy compares it with the threshold.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, TextIO

from mlflow_drift import reference
from mlflow_drift.profile import BinCounts, ColumnProfile
from mlflow_serving.payload_log import PayloadEntry, read_entries

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


@dataclass
class VersionWindow:
    """One version's requests in the window, as bin counts of each column its profile knows."""
    profiles: Optional[dict[str, ColumnProfile]]
    """None: the version has no reference (its rows are still counted, to say so)."""
    redacted: frozenset[str]
    rows: int = 0
    counts: dict[str, BinCounts] = field(default_factory=dict)

    def add(self, entry: PayloadEntry) -> None:
        self.rows += len(entry.data)
        if self.profiles is None:
            return
        for index, name in enumerate(entry.columns):
            profile = self.profiles.get(name)
            if profile is None or name in self.redacted:
                continue
            counts = self.counts.setdefault(name, BinCounts(profile))
            for row in entry.data:
                counts.add(row[index] if index < len(row) else None)

    def scores(self) -> dict[str, float]:
        return {name: counts.psi() for name, counts in self.counts.items() if counts.total}


def fold(client: Any, pages: Iterable[Sequence[str]], redacted: frozenset[str]) -> dict[tuple[str, str], VersionWindow]:
    """(model, version) -> its window, each page of log lines folded in as it arrives."""
    windows: dict[tuple[str, str], VersionWindow] = {}
    for page in pages:
        for entry in read_entries(page):
            if entry.columns is None or entry.data is None or entry.status >= 400:
                continue  # inputs withheld, or a request the model refused: not what it was asked to score
            key = (entry.model, str(entry.version))
            if key not in windows:
                windows[key] = VersionWindow(reference.ensure(client, *key), redacted)
            windows[key].add(entry)
    return windows


def metric_key(column: str) -> str:
    """An MLflow metric name for a column's score (MLflow allows letters, digits, _ - . space / :)."""
    return "psi." + re.sub(r"[^A-Za-z0-9_\-. /:]", "_", column)


def score_version(model: str, version: str, window: VersionWindow, settings: JobSettings) -> VersionScores:
    if window.rows < settings.min_rows:
        return VersionScores(model, version, window.rows, {},
                             f"{window.rows} rows in the window, fewer than {settings.min_rows}")
    if window.profiles is None:
        return VersionScores(model, version, window.rows, {},
                             "no reference profile: its run logged no dataset this job can read; "
                             f"make drift-reference MODEL={model} VERSION={version} DATA=FILE")
    return VersionScores(model, version, window.rows, window.scores())


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


def run_job(client: Any, pages: Iterable[Sequence[str]], settings: JobSettings, out: TextIO = sys.stdout
            ) -> list[VersionScores]:
    results = []
    for (model, version), window in sorted(fold(client, pages, settings.redacted).items()):
        result = score_version(model, version, window, settings)
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
