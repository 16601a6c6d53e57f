"""Reading Locust's results (the `--csv-full-history` history and the final stats) and the
rehearsals' records, and turning them into the tables and Mermaid charts of docs/loadtest.md."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Second:
    """One row of the aggregated history: what Locust saw at second `t` of the run."""

    t: int
    users: int
    rps: float
    failures_per_s: float
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    total_requests: int
    total_failures: int


def _number(text: str) -> Optional[float]:
    return None if text in ("", "N/A") else float(text)


def history(csv_prefix: Path) -> list[Second]:
    """The aggregated per-second history of a run (empty until Locust has written one)."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    if not rows:
        return []
    start = int(rows[0]["Timestamp"])
    return [Second(int(row["Timestamp"]) - start, int(row["User Count"]), float(row["Requests/s"]),
                   float(row["Failures/s"]), _number(row["50%"]), _number(row["99%"]),
                   int(row["Total Request Count"]), int(row["Total Failure Count"])) for row in rows]


def started_at(csv_prefix: Path) -> Optional[int]:
    """Unix time of the first history row."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            return int(row["Timestamp"])
    return None


@dataclass(frozen=True)
class Endpoint:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p99_ms: float


def endpoints(json_path: Path) -> list[Endpoint]:
    """Per request name, from Locust's --json-file (a list of stats entries)."""
    entries = json.loads(Path(json_path).read_text())
    used = [entry for entry in entries if entry["num_requests"]]
    # rates over the whole run, so that they add up (a request made only at the start is rare, not fast)
    seconds = max(1.0, max((e["last_request_timestamp"] for e in used), default=1.0)
                  - min((e["start_time"] for e in used), default=0.0))
    result = []
    for entry in entries:
        requests = entry["num_requests"]
        result.append(Endpoint(entry["name"], requests, entry["num_failures"], requests / seconds,
                               _percentile(entry["response_times"], requests, 0.50),
                               _percentile(entry["response_times"], requests, 0.99)))
    return sorted(result, key=lambda e: e.name)


def _percentile(times: dict, total: int, q: float) -> float:
    """Locust keeps a histogram {rounded ms: count}."""
    if not total:
        return 0.0
    wanted, seen = q * total, 0
    for ms, count in sorted((float(k), v) for k, v in times.items()):
        seen += count
        if seen >= wanted:
            return ms
    return 0.0


def endpoint_table(rows: list[Endpoint]) -> str:
    lines = ["| request | requests | failures | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for e in rows:
        lines.append(f"| {e.name} | {e.requests:,} | {e.failures:,} | {e.rps:.1f} | {e.p50_ms:.0f} | {e.p99_ms:.0f} |")
    total = sum(e.requests for e in rows)
    lines.append(f"| **all** | **{total:,}** | **{sum(e.failures for e in rows):,}** | "
                 f"**{sum(e.rps for e in rows):.1f}** | | |")
    return "\n".join(lines)


def _series(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "]"


def charts(title: str, seconds: list[Second], events: list[tuple[int, str]] = ()) -> str:
    """Mermaid xychart-beta blocks (GitHub renders them): requests/s with failures/s, and p50/p99
    latency, per second; events (second, label) are bars on the first chart and listed below."""
    if not seconds:
        return f"_{title}: no history recorded._"
    xs = [s.t for s in seconds]
    rps = [s.rps for s in seconds]
    top = max(rps + [1.0])
    event_at = {t: label for t, label in events}
    markers = [top if s.t in event_at else 0.0 for s in seconds]
    blocks = [
        "```mermaid", "xychart-beta", f'    title "{title}: requests/s (line), failures/s (line), events (bars)"',
        f"    x-axis \"second\" [{', '.join(str(x) for x in xs)}]", '    y-axis "per second"',
        f"    bar {_series(markers)}", f"    line {_series(rps)}", f"    line {_series([s.failures_per_s for s in seconds])}",
        "```", "",
        "```mermaid", "xychart-beta", f'    title "{title}: p50 and p99 latency, ms"',
        f"    x-axis \"second\" [{', '.join(str(x) for x in xs)}]", '    y-axis "ms"',
        f"    line {_series([s.p50_ms or 0.0 for s in seconds])}", f"    line {_series([s.p99_ms or 0.0 for s in seconds])}",
        "```",
    ]
    if events:
        blocks += ["", "Events: " + "; ".join(f"second {t}: {label}" for t, label in events) + "."]
    return "\n".join(blocks)
