"""Request bodies for /invocations in the formats clients send (pure; no Locust import, so tests
and the rehearsals use them too).

- `dataframe_split`: what `pandas.DataFrame.to_dict(orient="split")` gives and MLflow's own
  clients (`mlflow.deployments`, `mlflow models predict`) send; the README's example.
- `dataframe_records`: a list of row objects, what hand-written JSON clients tend to send.
- CSV (`text/csv`): a header and rows, what batch jobs exporting a file send.
"""

from __future__ import annotations

import csv
import io
import json
import random

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
# The probe row: its prediction tells the model versions apart in the rehearsals.
PROBE_ROW = [5.1, 3.5, 1.4, 0.2]


def rows(count: int, seed: int = 0) -> list[list[float]]:
    """`count` plausible iris rows (the probe row first), the same for a given seed."""
    rng = random.Random(seed)
    return [PROBE_ROW] + [[round(rng.uniform(4.3, 7.9), 1), round(rng.uniform(2.0, 4.4), 1),
                           round(rng.uniform(1.0, 6.9), 1), round(rng.uniform(0.1, 2.5), 1)]
                          for _ in range(count - 1)]


def dataframe_split(data: list[list[float]]) -> tuple[str, str]:
    return "application/json", json.dumps({"dataframe_split": {"columns": COLUMNS, "data": data}})


def dataframe_records(data: list[list[float]]) -> tuple[str, str]:
    return "application/json", json.dumps({"dataframe_records": [dict(zip(COLUMNS, row)) for row in data]})


def csv_body(data: list[list[float]]) -> tuple[str, str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(data)
    return "text/csv", out.getvalue()
