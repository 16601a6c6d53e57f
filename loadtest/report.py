"""docs/loadtest.md: generated sections between markers, the rest written by hand.

- `<!-- loadtest:TARGET:begin -->`: `make loadtest TARGET=…` (per Service: request table, charts);
- `<!-- rehearsals:begin -->`: the rehearsals of tests/test_under_load.py (when run with
  REHEARSAL_REPORT=1): per rehearsal the numbers its assertions use, and its charts.
"""

from __future__ import annotations

import re
from pathlib import Path

from loadtest.results import charts, endpoint_table, endpoints, history

SERVICES = ("serving", "tracking")


def replace_section(text: str, key: str, body: str) -> str:
    begin, end = f"<!-- {key}:begin (generated) -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def loadtest_section(target: str, out_dir: Path) -> str:
    parts = []
    for name in SERVICES:
        json_path = out_dir / f"{name}.json"
        if not json_path.exists():
            continue
        seconds = history(out_dir / name)
        users = max((s.users for s in seconds), default=0)
        parts += [f"#### {name} ({users} users, {len(seconds)} s)", "", endpoint_table(endpoints(json_path)), "",
                  charts(f"{target} {name}", seconds), ""]
    return "\n".join(parts) or "_no results_"


def update_report(report: Path, target: str, out_dir: Path) -> None:
    text = report.read_text() if report.exists() else "# Load testing\n"
    report.write_text(replace_section(text, f"loadtest:{target}", loadtest_section(target, out_dir)))


def rehearsal_section(results: list[dict]) -> str:
    """results: [{"name", "facts": {label: value}, "csv_prefix", "events": [[second, label]]}]."""
    parts = []
    for result in results:
        parts += [f"#### {result['name']}", "", "| measured | value |", "|---|---:|"]
        parts += [f"| {label} | {value} |" for label, value in result["facts"].items()]
        parts += ["", charts(result["name"], history(Path(result["csv_prefix"])),
                             [tuple(event) for event in result.get("events", [])]), ""]
    return "\n".join(parts)


def update_rehearsals(report: Path, results: list[dict]) -> None:
    text = report.read_text() if report.exists() else "# Load testing\n"
    report.write_text(replace_section(text, "rehearsals", rehearsal_section(results)))
