"""The wire corpus: requests whose answers from the project's serving process must equal
`mlflow models serve`'s, for the two models of tests/wire/make_models.py.

Each entry: (name, model, content type or None for no header, body bytes).
"""

from __future__ import annotations

import json

IRIS_COLUMNS = ["sl", "sw", "pl", "pw"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.0, 3.4, 1.5, 0.2]]
JSON = "application/json"


def _j(document) -> bytes:
    return json.dumps(document).encode()


def _split(rows, columns=IRIS_COLUMNS, **extra) -> bytes:
    return _j({"dataframe_split": {"columns": columns, "data": rows}, **extra})


def _records(rows, columns=IRIS_COLUMNS) -> list[dict]:
    return [dict(zip(columns, row)) for row in rows]


def _many(count: int) -> list[list[float]]:
    return [ROWS[i % len(ROWS)] for i in range(count)]


def _csv(rows, columns=IRIS_COLUMNS) -> bytes:
    return ("\n".join([",".join(columns)] + [",".join(map(str, row)) for row in rows]) + "\n").encode()


IRIS = [
    ("split one row", JSON, _split(ROWS[:1])),
    ("split four rows", JSON, _split(ROWS)),
    ("split 100 rows", JSON, _split(_many(100))),
    ("records one row", JSON, _j({"dataframe_records": _records(ROWS[:1])})),
    ("records four rows", JSON, _j({"dataframe_records": _records(ROWS)})),
    ("instances as records", JSON, _j({"instances": _records(ROWS[:2])})),
    ("instances as lists", JSON, _j({"instances": ROWS[:2]})),
    ("inputs as records", JSON, _j({"inputs": _records(ROWS[:2])})),
    ("inputs as columns", JSON, _j({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(IRIS_COLUMNS)}})),
    ("csv", "text/csv", _csv(ROWS)),
    ("csv with charset", "text/csv; charset=utf-8", _csv(ROWS[:1])),
    ("csv malformed", "text/csv", b"sl,sw\n1,2,3,4,5\n\"unterminated"),
    ("json with charset", "application/json; charset=utf-8", _split(ROWS[:1])),
    ("json latin-1 charset", "application/json; charset=latin-1", _split(ROWS[:1])),
    ("json unknown parameter", "application/json; format=pandas-split", _split(ROWS[:1])),
    ("misordered columns", JSON, _split([[r[1], r[0], r[2], r[3]] for r in ROWS], ["sw", "sl", "pl", "pw"])),
    ("missing column", JSON, _split([r[:3] for r in ROWS], IRIS_COLUMNS[:3])),
    ("extra column", JSON, _split([r + [1.0] for r in ROWS], IRIS_COLUMNS + ["extra"])),
    ("records missing column", JSON, _j({"dataframe_records": _records([r[:3] for r in ROWS], IRIS_COLUMNS[:3])})),
    ("ints for doubles", JSON, _split([[5, 3, 1, 0]])),
    ("strings for doubles", JSON, _split([["a", "b", "c", "d"]])),
    ("numeric strings", JSON, _split([["5.1", "3.5", "1.4", "0.2"]])),
    ("null value", JSON, _split([[5.1, None, 1.4, 0.2]])),
    ("booleans", JSON, _split([[True, False, True, False]])),
    ("empty split data", JSON, _split([])),
    ("empty records", JSON, _j({"dataframe_records": []})),
    ("empty object", JSON, b"{}"),
    ("empty body", JSON, b""),
    ("malformed json", JSON, b'{"dataframe_split": {"columns": ['),
    ("json list", JSON, b"[1, 2, 3]"),
    ("json scalar", JSON, b"5"),
    ("not utf-8", JSON, b'{"dataframe_split": "\xff\xfe"}'),
    ("two formats", JSON, _j({"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS[:1]},
                              "dataframe_records": _records(ROWS[:1])})),
    ("unknown format key", JSON, _j({"data": ROWS[:1]})),
    ("split with index", JSON, _split(ROWS[:2], index=[10, 11])),
    ("split data not a list", JSON, _j({"dataframe_split": {"columns": IRIS_COLUMNS, "data": "rows"}})),
    ("params on a model without params", JSON, _split(ROWS[:1], params={"scale": 2.0})),
    ("wrong content type", "text/plain", _split(ROWS[:1])),
    ("missing content type", None, _split(ROWS[:1])),
    ("oversized body", JSON, _split(_many(20_000))),
]

SCALED_COLUMNS = ["x", "name"]
SCALED = [
    ("pyfunc split", JSON, _split([[1.5, "a"], [2.0, "b"]], SCALED_COLUMNS)),
    ("pyfunc params", JSON, _split([[1.5, "a"], [2.0, "b"]], SCALED_COLUMNS, params={"scale": 3.0})),
    ("pyfunc int param", JSON, _split([[1.5, "a"]], SCALED_COLUMNS, params={"scale": 2})),
    ("pyfunc string param", JSON, _split([[1.5, "a"]], SCALED_COLUMNS, params={"scale": "big"})),
    ("pyfunc unknown param", JSON, _split([[1.5, "a"]], SCALED_COLUMNS, params={"other": 1})),
    ("pyfunc records", JSON, _j({"dataframe_records": [{"x": 4.0, "name": "d"}], "params": {"scale": 0.5}})),
    ("pyfunc inputs with params", JSON, _j({"inputs": {"x": [1.0, 2.0], "name": ["p", "q"]}, "params": {"scale": 2.0}})),
    ("pyfunc missing column", JSON, _split([[1.5]], ["x"])),
    ("pyfunc number for string", JSON, _split([[1.5, 7]], SCALED_COLUMNS)),
    ("pyfunc csv", "text/csv", _csv([[1.5, "a"], [2.5, "b"]], SCALED_COLUMNS)),
    ("pyfunc params not an object", JSON, _split([[1.5, "a"]], SCALED_COLUMNS, params=[1, 2])),
]

CORPUS = [(name, "iris", content_type, body) for name, content_type, body in IRIS] + \
         [(name, "scaled", content_type, body) for name, content_type, body in SCALED]


def scaled_row(i: int) -> tuple[bytes, str]:
    """A 1-row request whose answer names `i` (x=i, label "Ri" upper-cased): a neighbour's answer
    would show."""
    return _split([[float(i), f"r{i}"]], SCALED_COLUMNS, params={"scale": 2.0}), f"R{i}"
