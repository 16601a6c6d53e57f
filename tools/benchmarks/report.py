"""Plots (matplotlib, Agg) and the tables of docs/benchmarks.md from tools/benchmarks/results/*.json.

    .venv-runtime/bin/python -m tools.benchmarks.report [--results-dir DIR] [--docs PATH]

Runs in the runtime virtualenv (matplotlib); reads only the JSON files, so the report can be
regenerated without rerunning anything. Only the blocks between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` are rewritten: the conclusions around them are written by hand, and
tests/test_benchmark_prose.py checks the numbers they quote against the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "tools" / "benchmarks" / "results"
CONFIG_ORDER = ("project-w1", "project-w2", "project-unbatched", "models-serve-w1", "models-serve-w2",
                "mlserver-inproc-batching", "mlserver-inproc", "mlserver-pool-batching", "mlserver-pool",
                "mlserver-pool2-batching")
COLORS = {"project-w1": "tab:blue", "project-w2": "navy", "project-unbatched": "tab:cyan", "models-serve-w1": "tab:orange",
          "models-serve-w2": "tab:red", "mlserver-inproc-batching": "tab:green", "mlserver-inproc": "tab:olive",
          "mlserver-pool-batching": "tab:purple", "mlserver-pool": "tab:pink", "mlserver-pool2-batching": "tab:brown",
          "tracking": "tab:blue", "tracking-ttl0": "tab:red", "tracking-w2": "tab:purple",
          "tracking-w1-std": "tab:green", "tracking-w2-std": "tab:olive"}


def load(results_dir: Path, name: str) -> Optional[dict]:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return text + unit


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ordered_configs(serving: dict) -> list[str]:
    names = list(serving["configs"])
    return [n for n in CONFIG_ORDER if n in names] + [n for n in names if n not in CONFIG_ORDER]


def pick(serving: dict, config: str, rows: int, concurrency: int, cores: int = 1) -> Optional[dict]:
    return next((r for r in serving["results"] if r["config"] == config and r["payload_rows"] == rows
                 and r["concurrency"] == concurrency and r["cores"] == cores), None)


def panels(serving: dict) -> list[tuple[int, int, list[str]]]:
    """(cores, payload rows, configs measured there), one-core payloads first."""
    found = sorted({(r["cores"], r["payload_rows"]) for r in serving["results"]})
    return [(cores, rows, [name for name in ordered_configs(serving) if pick(serving, name, rows, 1, cores)])
            for cores, rows in found]


def panel_title(cores: int, rows: int) -> str:
    return f"{rows}-row payload, {cores} core{'s' if cores > 1 else ''}"


# --- plots ------------------------------------------------------------------------------------
def plot_serving(serving: dict, out_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrency = sorted({r["concurrency"] for r in serving["results"]})
    layout = panels(serving)
    written = []

    fig, axes = plt.subplots(1, len(layout), figsize=(6 * len(layout), 4.5), squeeze=False)
    for ax, (cores, rows, configs) in zip(axes[0], layout):
        for config in configs:
            values = [pick(serving, config, rows, c, cores)["rps"] for c in concurrency]
            ax.plot(concurrency, values, marker="o", label=config, color=COLORS.get(config))
        ceiling = serving["ceiling"][str(rows)]
        ax.axhline(ceiling["predict"]["rps"], color="black", linestyle="--", linewidth=1,
                   label="(c) predict ceiling, 1 core")
        ax.axhline(ceiling["invocations"]["rps"], color="grey", linestyle=":", linewidth=1,
                   label="parse+predict+serialize, 1 core")
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("concurrent keep-alive connections")
        ax.set_ylabel("requests / s")
        ax.set_title(f"Throughput, {panel_title(cores, rows)}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "serving_throughput.png", dpi=110)
    plt.close(fig)
    written.append("serving_throughput.png")

    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(2, len(layout), figsize=(6 * len(layout), 8), squeeze=False)
    for row_index, (key, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"))):
        for ax, (cores, rows, configs) in zip(axes[row_index], layout):
            for config in configs:
                points = [pick(serving, config, rows, c, cores) for c in concurrency]
                ax.plot(concurrency, [p[key] for p in points], marker="o", color=COLORS.get(config), label=config)
            ax.axhline(25, color="black", linewidth=0.8, linestyle=":", label="25 ms")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.set_xticks(concurrency, [str(c) for c in concurrency])
            ax.set_xlabel("concurrent keep-alive connections")
            ax.set_ylabel(f"{label} latency, ms (log)")
            ax.set_title(f"{label} latency, {panel_title(cores, rows)}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "serving_latency.png", dpi=110)
    plt.close(fig)
    written.append("serving_latency.png")
    return written


def plot_tracking(tracking: dict, out_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    auth = [row for row in tracking["auth"] if row["auth"]]
    ax = axes[0]
    names = [row["server"] for row in auth]
    ax.bar(names, [row["p50_ms"] for row in auth], color=[COLORS.get(n, "grey") for n in names])
    ax.set_yscale("log")
    ax.axhline(15, color="black", linestyle=":", linewidth=1, label="goal 15 ms")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title("Authenticated GET, p50")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=8)

    ax = axes[1]
    ingest = tracking["ingest"]
    threads = sorted({row["threads"] for row in ingest})
    servers = list(dict.fromkeys(row["server"] for row in ingest))
    width = 0.8 / max(1, len(servers))
    for index, server in enumerate(servers):
        values = [next((r["runs_per_s"] for r in ingest if r["server"] == server and r["threads"] == t), 0)
                  for t in threads]
        ax.bar([t_index + index * width for t_index in range(len(threads))], values, width,
               label=server, color=COLORS.get(server))
    ax.set_xticks([t_index + width * (len(servers) - 1) / 2 for t_index in range(len(threads))],
                  [f"{t} client thread{'s' if t > 1 else ''}" for t in threads])
    ax.axhline(50, color="black", linestyle=":", linewidth=1, label="goal 50 runs/s")
    ax.set_ylabel("runs / s (create_run + log_batch)")
    ax.set_title("Ingest")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)

    ax = axes[2]
    memory = tracking["memory"]
    labels = list(memory)
    ax.barh(labels, [memory[k]["rss_mib"] for k in labels], color="tab:blue", label="RSS sum")
    ax.barh(labels, [memory[k]["pss_mib"] for k in labels], color="tab:cyan", label="PSS sum")
    ax.axvline(1024, color="black", linestyle=":", linewidth=1, label="1 GiB")
    ax.set_xlabel("MiB over the process tree")
    ax.set_title("Tracking server memory")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "tracking.png", dpi=110)
    plt.close(fig)
    return ["tracking.png"]


# --- markdown ---------------------------------------------------------------------------------
def serving_section(s: dict, image_prefix: str) -> str:
    configs = ordered_configs(s)
    rows_list = sorted({r["payload_rows"] for r in s["results"] if r["cores"] == 1})
    concurrency = sorted({r["concurrency"] for r in s["results"]})
    out = []
    out.append(table(["config", "role", "cores", "command (cluster form)", "memory RSS / PSS MiB"], [
        [f"`{name}`", s["configs"][name]["role"] or "", ", ".join(map(str, s["configs"][name]["cores"])),
         f"`{s['configs'][name]['command']}`" + (f"<br>{s['configs'][name]['notes']}" if s["configs"][name]["notes"] else ""),
         f"{s['configs'][name]['memory_after']['rss_mib']:.0f} / {s['configs'][name]['memory_after']['pss_mib']:.0f}"]
        for name in configs]))
    if s.get("skipped"):
        out.append("\nSkipped: " + "; ".join(s["skipped"]))
    out.append(f"\n![throughput]({image_prefix}serving_throughput.png)\n\n![latency]({image_prefix}serving_latency.png)\n")
    for cores, rows, names in panels(s):
        two = cores > 1
        header = ["config"] + [f"c={c} rps" for c in concurrency] + [f"c={c} p50/p99 ms" for c in concurrency] + \
                 [f"c={c} rps/core" for c in concurrency] + ([f"c={c} load generator cores" for c in concurrency] if two else [])
        body = []
        for name in names:
            points = [pick(s, name, rows, c, cores) for c in concurrency]
            body.append([f"`{name}`"] + [fmt(p["rps"], 0) for p in points] +
                        [f"{fmt(p['p50_ms'])} / {fmt(p['p99_ms'])}" for p in points] +
                        [fmt(p["rps_per_core"], 0) for p in points] +
                        ([fmt(p["loadgen_cpu_per_s"], 2) for p in points] if two else []))
        out.append(f"**{panel_title(cores, rows)}**\n\n" + table(header, body) + "\n")
    errors = sum(r["errors"] for r in s["results"])
    out.append(f"Non-200 answers over all points: {errors}.\n")

    ceiling = s["ceiling"]
    out.append("**In-process ceiling (c)**, one pinned core, one BLAS thread:\n")
    out.append(table(["payload rows", "predict rps", "predict p50 ms", "parse+predict+serialize rps",
                      "its p50 ms"],
                     [[rows, fmt(ceiling[str(rows)]["predict"]["rps"], 0), fmt(ceiling[str(rows)]["predict"]["p50_ms"], 2),
                       fmt(ceiling[str(rows)]["invocations"]["rps"], 0),
                       fmt(ceiling[str(rows)]["invocations"]["p50_ms"], 2)] for rows in rows_list]) + "\n")
    summary = s["by_payload_and_concurrency"]
    out.append("**Ratios on one core** (a = `project-w1`, b = `models-serve-w1`, best MLServer = the fastest MLServer "
               "configuration at that point; per core = answers per CPU-second of the server's process tree):\n")
    body = []
    for rows in rows_list:
        for c in concurrency:
            r = summary[str(rows)][str(c)]
            body.append([rows, c, fmt(r["a_over_b_rps"], 2), fmt(r["a_over_b_rps_per_core"], 2),
                         f"`{r['best_mlserver']}`" if r.get("best_mlserver") else "–",
                         fmt(r.get("a_over_best_mlserver_rps"), 2), fmt(r.get("a_over_best_mlserver_rps_per_core"), 2),
                         fmt(r["a_over_unbatched_rps"], 2), fmt(r["a_over_ceiling_per_core"], 2)])
    out.append(table(["rows", "c", "(a)/(b) rps", "(a)/(b) per core", "best MLServer", "(a)/best MLServer rps",
                      "(a)/best MLServer per core", "(a)/batching off rps", "(a)/(c) per core"], body))
    if s.get("two_cores"):
        out.append("\n**Two cores against one** (a2 = `project-w2` on two cores, a = `project-w1` on one; best MLServer "
                   "on two cores; cores = CPU-seconds per second):\n")
        body = []
        for rows, per_c in s["two_cores"].items():
            for c, r in per_c.items():
                body.append([rows, c, fmt(r["a2_over_a_rps"], 2), fmt(r["a2_over_a_rps_per_core"], 2),
                             f"`{r['best_mlserver']}`" if r.get("best_mlserver") else "–",
                             fmt(r.get("a2_over_best_mlserver_rps"), 2), fmt(r.get("a2_over_b2_rps"), 2),
                             fmt(r["a2_server_cores"], 2), fmt(r["loadgen_cores"], 2)])
        out.append(table(["rows", "c", "(a2)/(a) rps", "(a2)/(a) per core", "best MLServer, 2 cores",
                          "(a2)/best MLServer rps", "(a2)/`models-serve-w2` rps", "(a2) server cores",
                          "load generator cores"], body))
    out.append("\n**Batches formed by (a)** (requests / rows per predict, from its /metrics, warm-up included):\n")
    out.append(table(["rows"] + [f"c={c}" for c in concurrency], [
        [rows] + [f"{fmt(pick(s, 'project-w1', rows, c).get('requests_per_predict'), 2)} / "
                  f"{fmt(pick(s, 'project-w1', rows, c).get('rows_per_predict'), 1)}" for c in concurrency]
        for rows in rows_list]))
    return "\n".join(out)


def tracking_section(t: dict, image_prefix: str) -> str:
    out = []
    out.append(table(["server", "command (cluster form)", "settings"], [
        [f"`{name}`", f"`{c['command']}`" + (f"<br>{c['notes']}" if c["notes"] else ""),
         ", ".join(f"{k}={v}" for k, v in c["settings"].items())] for name, c in t["configs"].items()]))
    if t.get("skipped"):
        out.append("\nSkipped: " + "; ".join(t["skipped"]))
    out.append(f"\n![tracking]({image_prefix}tracking.png)\n")
    out.append("**Auth latency** (sequential requests on one keep-alive session):\n")
    out.append(table(["server", "request", "n", "first request ms", "p50 ms", "p99 ms"], [
        [f"`{row['server']}`", row["what"], row["n"], fmt(row["first_ms"]), fmt(row["p50_ms"]), fmt(row["p99_ms"])]
        for row in t["auth"]]) + "\n")
    out.append("**Ingest**: each run = `create_run` + `log_batch(10 params, 10 metrics)` with the MLflow client:\n")
    out.append(table(["server", "client threads", "runs", "runs/s", "runs per server CPU-second", "per run p50 ms",
                      "p99 ms", "errors"], [
        [f"`{row['server']}`", row["threads"], row["runs"], fmt(row["runs_per_s"]), fmt(row.get("runs_per_core")),
         fmt(row["run_p50_ms"]), fmt(row["run_p99_ms"]), row["errors"]] for row in t["ingest"]]) + "\n")
    bulk = t["bulk_load"]
    out.append(f"**search_runs** at {t['search'][0]['runs_in_experiment']:,} runs in one experiment "
               f"({bulk['runs']:,} loaded in {bulk['seconds']} s), `max_results=100`, sequential:\n")
    out.append(table(["query", "runs in experiment", "client", "filter", "returned", "n", "p50 ms", "p99 ms"], [
        [row["what"], f"{row['runs_in_experiment']:,}", row.get("client", ""),
         f"`{row['filter'] or '(none)'}`" + (f" order by `{', '.join(row['order_by'])}`" if row["order_by"] else ""),
         row["returned"], row["n"], fmt(row["p50_ms"]), fmt(row["p99_ms"])] for row in t["search"]]) + "\n")
    a = t["artifacts"]
    out.append(f"**Artifacts** through the proxy (client → tracking → GCS emulator), {a['size_mb']} MB file, "
               f"median of {a['repeats']}: upload **{a['upload_mb_s']} MB/s**, download **{a['download_mb_s']} MB/s** "
               f"(upload s {a['upload_s']}, download s {a['download_s']}).\n")
    out.append("**Memory**, summed over each server's process tree:\n")
    out.append(table(["server, moment", "RSS MiB", "PSS MiB", "processes"], [
        [key, fmt(value["rss_mib"], 0), fmt(value["pss_mib"], 0), value["processes"]]
        for key, value in t["memory"].items()]))
    return "\n".join(out)


def goals_table(s: Optional[dict], t: Optional[dict]) -> str:
    rows = []
    if s:
        g = s["goals"]
        for key in sorted((k for k in g if k.startswith("a_over_best_mlserver_at_c")), key=lambda k: int(k.rsplit("c", 1)[1])):
            c = key.rsplit("c", 1)[1]
            rows.append([f"serving: (a) ≥ {g[key]['need']}× the fastest MLServer configuration, c={c}, 1-row, one core",
                         fmt(g[key]["value"], 2, "×") + f" (`{g[key]['peer']}`)", fmt(g[key]["met"])])
        for key, what, unit in (
                ("a_at_least_3x_b_at_c16", "(a) ≥ 3× (b) `mlflow models serve --workers 1`, c=16, 1-row", "×"),
                ("a_p99_at_most_15ms_at_c4", "(a) p99 ≤ 15 ms at c=4, 1-row", " ms"),
                ("a_p99_at_most_25ms_at_c16", "(a) p99 ≤ 25 ms at c=16, 1-row", " ms"),
                ("a_p50_at_most_3ms_at_c1", "(a) p50 ≤ 3 ms at c=1, 1-row", " ms"),
                ("a_per_cpu_second_at_least_2x_b_at_c16", "(a) ≥ 2× (b) answers per CPU-second, c=16, 1-row", "×"),
                ("a_memory_at_most_110pct_of_unbatched", "(a) memory ≤ 110 % of batching off (RSS)", "×")):
            if key in g:
                extra = (f" (batching off: {fmt(g[key]['unbatched_p50_ms'], 2, ' ms')})" if "unbatched_p50_ms" in g[key]
                         else f" ({', '.join(f'{k} {fmt(v, 0)} MiB' for k, v in g[key]['rss_mib'].items())})"
                         if "rss_mib" in g[key] else "")
                rows.append([f"serving: {what}", fmt(g[key]["value"], 2, unit) + extra, fmt(g[key]["met"])])
        m = g["middleware_loss_at_most_5pct"]
        rows.append(["serving: metrics middleware costs ≤ 5 % throughput (its CPU per request, in-process A/B, "
                     "against a whole request's CPU)", fmt(m["value"], 2, " %"), fmt(m["met"])])
    if t:
        g = t["goals"]
        rows.append(["tracking: auth p50 ≤ 15 ms (TTL as rendered)", fmt(g["auth_p50_at_most_15ms"]["value"], 1, " ms")
                     + f" (TTL 0: {fmt(g['auth_p50_at_most_15ms']['ttl0_p50_ms'], 0, ' ms')})",
                     fmt(g["auth_p50_at_most_15ms"]["met"])])
        key = next(k for k in g if k.startswith("at_least_50_runs"))
        rows.append([f"tracking: ≥ 50 runs/s with {key.split('_with_')[1].replace('_', ' ')}",
                     f"{fmt(g[key]['value'], 1, ' runs/s')} as rendered; best {fmt(g[key]['best_runs_per_s'], 1)} "
                     f"(`{g[key]['best_server']}`); {fmt(g[key].get('runs_per_core'), 0)} runs per CPU-second",
                     fmt(g[key]["met"])])
        sg = g["search_at_most_100ms"]
        rows.append([f"tracking: search ≤ 100 ms at {sg['runs']:,} runs (p50, {sg['max_results']} results a page)",
                     f"{fmt(sg['value'], 1, ' ms')} (p99 {fmt(sg['p99_ms'], 1, ' ms')}); 10 results: "
                     f"{fmt(sg['p50_ms_with_10_results'], 1, ' ms')}", fmt(sg["met"])])
        mg = g["at_most_1GiB_per_pod"]
        rows.append(["tracking: ≤ 1 GiB per pod (RSS sum, jobs off)",
                     f"{fmt(mg['value_rss_mib'], 0, ' MiB')} (job runner on: {fmt(mg['with_job_runner_rss_mib'], 0, ' MiB')})",
                     fmt(mg["met"])])
    return table(["goal", "measured", "met"], rows)


def machine_section(data: dict) -> str:
    m, v = data["machine"], data.get("versions", {})
    lines = [f"- machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB memory, kernel {m['kernel']}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "postgres"),
             f"- database: {v.get('postgres')}; GCS: gcp-storage-emulator (a Python process, disk-backed)",
             f"- generated {data['generated']}{' (quick run)' if data.get('quick') else ''}; platform start "
             f"{data.get('platform_start_s')} s"]
    return "\n".join(lines)


def program_time_section(p: dict) -> str:
    return table(["measurement", "median s", "min s", "× import floor"],
                 [[r["name"], r["median_s"], r["min_s"], r["ratio_to_floor"]] for r in p["results"]]) + \
        f"\n\nOffline suite without the local end-to-end test: {p['offline_suite_without_local_e2e_s']} s."


def coldstart_section(data: dict) -> str:
    """The cold-start method, table and commands."""
    cases = list(data["cases"])
    labels = list(dict.fromkeys(label for case in cases for label in data["cases"][case]))
    lines = ["| config | " + " | ".join(f"{case}: s (× {data['baseline']})" for case in cases) + " |",
             "|---|" + "---|" * len(cases)]
    for label in labels:
        cells = []
        for case in cases:
            entry = data["cases"][case].get(label, {})
            base = data["cases"][case].get(data["baseline"], {}).get("median_s")
            value = entry.get("median_s")
            cells.append("failed" if value is None else
                         f"{value:.2f} ({value / base:.2f}×)" if base else f"{value:.2f}")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    commands = sorted({entry["command"] for case in cases for entry in data["cases"][case].values()})
    return "\n".join([
        f"`python -m tools.benchmarks.coldstart --rounds {data['rounds']}`: process start until `/ping` answers 200 "
        f"(median over rounds: {data['rounds']}), then one request must be answered 200. *cold*: empty environment "
        "cache (the pod's volume; the peers' MLFLOW_ENV_ROOT, uv and pip caches); *warm*: the same cache again. "
        "The one extra package is " + f"`{data['lightgbm_requirement']}`, from pypi.org.", "",
        *lines, "", "Commands: " + "; ".join(f"`{command}`" for command in commands)])


def serving_method(s: dict) -> str:
    m = s["method"]
    return (f"Method: {m['client']}; {m['payload']}; {m['cores']}; {m['rounds']} rounds of\n"
            f"{m['seconds_per_point_per_round']} s per "
            f"point after {m['warmup_s']} s warm-up,\n{m['order']}; {m['rps']}. rps/core = {m['rps_per_core']}.\n"
            f"(c) = {m['ceiling']}.")


def tracking_method(t: dict) -> str:
    m = t["method"]
    return (f"Method: {m['client']}. Auth: `{m['auth_path']}`. Search filter\n`{m['search_filter']}`; the runs are "
            f"{m['bulk_load']}.\nMemory: {m['memory']}.")


# name -> (heading of its section in a new document, results it needs, its text)
SECTIONS = {
    "goals": ("## Goals", ("serving", "tracking"), lambda r, prefix: goals_table(r["serving"], r["tracking"])),
    "machine": ("## Machine", ("serving", "tracking"),
                lambda r, prefix: machine_section(r["serving"] or r["tracking"])),
    "serving": ("## Serving", ("serving",),
                lambda r, prefix: serving_method(r["serving"]) + "\n\n" + serving_section(r["serving"], prefix)),
    "tracking": ("## Tracking", ("tracking",),
                 lambda r, prefix: tracking_method(r["tracking"]) + "\n\n" + tracking_section(r["tracking"], prefix)),
    "program-time": ("## Offline program time", ("program_time",), lambda r, prefix: program_time_section(r["program_time"])),
    "coldstart": ("## Cold start: model environments", ("coldstart",), lambda r, prefix: coldstart_section(r["coldstart"])),
}


def block(name: str, text: str) -> str:
    return f"<!-- generated:{name} (tools/benchmarks/report.py) -->\n{text.strip()}\n<!-- /generated:{name} -->"


BLOCK = re.compile(r"<!-- generated:(?P<name>[a-z-]+) \(tools/benchmarks/report\.py\) -->\n.*?<!-- /generated:(?P=name) -->",
                   re.DOTALL)


def render(results_dir: Path, docs: Path) -> str:
    """`docs` with every generated block refilled from the results it has; a document of just the
    blocks when `docs` does not exist yet (a run into a scratch directory)."""
    results = {name: load(results_dir, name) for name in ("serving", "tracking", "program_time", "coldstart")}
    prefix = os.path.relpath(results_dir, docs.parent) + "/"
    texts = {name: text(results, prefix) for name, (_, needs, text) in SECTIONS.items()
             if any(results[need] for need in needs)}
    if not docs.exists():
        return "# Benchmarks\n" + "".join(f"\n{SECTIONS[name][0]}\n\n{block(name, body)}\n"
                                          for name, body in texts.items())
    document = docs.read_text()
    missing = set(texts) - {m["name"] for m in BLOCK.finditer(document)}
    if missing:
        raise SystemExit(f"{docs} has no generated block for {', '.join(sorted(missing))}: add "
                         f"<!-- generated:NAME (tools/benchmarks/report.py) --> ... <!-- /generated:NAME --> where it belongs")
    return BLOCK.sub(lambda m: block(m["name"], texts[m["name"]]) if m["name"] in texts else m[0], document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmarks.report", description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    results_dir = args.results_dir.resolve()
    serving, tracking = load(results_dir, "serving"), load(results_dir, "tracking")
    written = []
    with tempfile.TemporaryDirectory(prefix="mpl-") as mpl_dir:
        os.environ.setdefault("MPLCONFIGDIR", mpl_dir)  # matplotlib's font cache, thrown away
        if serving:
            written += plot_serving(serving, results_dir)
        if tracking:
            written += plot_tracking(tracking, results_dir)
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(render(results_dir, args.docs.resolve()))
        written.append(str(args.docs))
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
