"""`python -m tools.benchmarks [--quick]` (= `make bench`): serving and tracking benchmarks on one
LocalPlatform (the rendered dev manifests run for real), results to tools/benchmarks/results/*.json,
plots and docs/benchmarks.md by tools.benchmarks.report (runtime virtualenv, matplotlib).

The full run takes about 8-10 minutes on 2 cores; --quick (< 2 minutes) runs every step with
fewer points, shorter windows, 1 000 runs and no optional variants, to prove the harness works.
Every load is bounded in count and time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.benchmarks import serving, tracking
from tools.benchmarks.common import machine
from tools.local.localplatform import LocalPlatform
from tools.local.manifests import ROOT
from tools.local.postgres import find_bin_dir
from tools.venvs import runtime

RESULTS_DIR = ROOT / "tools" / "benchmarks" / "results"
QUICK_RESULTS_DIR = ROOT / ".local" / "bench-quick"
DOCS = ROOT / "docs" / "benchmarks.md"
SCHEMA_VERSION = 1
VERSION_PACKAGES = ("mlflow", "uvicorn", "fastapi", "starlette", "flask", "scikit-learn", "pandas", "numpy",
                    "sqlalchemy", "psycopg2-binary", "aiohttp", "prometheus-client", "gcp-storage-emulator")


class Stopped(Exception):
    pass


def _stop(signum, _frame):
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def versions(platform: LocalPlatform) -> dict:
    code = ("import importlib.metadata as m, json, platform; d = {}\n"
            f"for name in {VERSION_PACKAGES!r}:\n"
            "    try: d[name] = m.version(name)\n"
            "    except m.PackageNotFoundError: d[name] = None\n"
            "d['python'] = platform.python_version(); print(json.dumps(d))")
    found = platform.runtime.run(["-c", code], home=platform.clients_home, timeout=60).check("versions").json()
    try:
        postgres = subprocess.run([str(find_bin_dir() / "postgres"), "--version"], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
    except Exception:  # informational only
        postgres = None
    found["postgres"] = postgres
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: every step, small (< 2 minutes)")
    parser.add_argument("--only", choices=("serving", "tracking"), help="run one part")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="default tools/benchmarks/results/ (--quick: .local/bench-quick/, so a smoke run never "
                             "overwrites the committed results)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="markdown report to write (default docs/benchmarks.md for a full run into the "
                             "default results dir, none otherwise); 'none' writes none")
    parser.add_argument("--no-report", action="store_true", help="JSON only: no plots, no markdown")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the platform's data and logs")
    args = parser.parse_args(argv)

    results_dir: Path = (args.results_dir or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.docs is None:
        docs = DOCS if (results_dir == RESULTS_DIR.resolve() and not args.quick) else None
    else:
        docs = None if str(args.docs) == "none" else args.docs.resolve()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[bench {time.monotonic() - started:5.0f}s] {message}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    header = {"schema_version": SCHEMA_VERSION, "quick": args.quick,
              "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine()}
    written = []
    ok = False
    try:
        with LocalPlatform(workdir, progress=progress) as platform:
            header["versions"] = versions(platform)
            header["platform_start_s"] = round(time.monotonic() - started, 1)
            if args.only in (None, "serving"):
                options = serving.ServingOptions.quick() if args.quick else serving.ServingOptions()
                result = {**header, **serving.run(platform, options, progress)}
                path = results_dir / "serving.json"
                path.write_text(json.dumps(result, indent=1) + "\n")
                written.append(path)
            if args.only in (None, "tracking"):
                options = tracking.TrackingOptions.quick() if args.quick else tracking.TrackingOptions()
                result = {**header, **tracking.run(platform, options, progress)}
                path = results_dir / "tracking.json"
                path.write_text(json.dumps(result, indent=1) + "\n")
                written.append(path)
        ok = True
    except (KeyboardInterrupt, Stopped) as reason:
        print(f"[bench] stopped by {reason or 'SIGINT'}", file=sys.stderr, flush=True)
    finally:
        if args.keep_workdir or not ok:
            keep = workdir if args.keep_workdir else workdir / "logs"
            print(f"[bench] logs kept in {keep}", file=sys.stderr, flush=True)
            if not args.keep_workdir:
                for child in workdir.iterdir():
                    if child.name != "logs":
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        return 1
    progress("wrote " + ", ".join(str(p) for p in written))
    if not args.no_report:
        command = ["-m", "tools.benchmarks.report", "--results-dir", str(results_dir)]
        if docs is not None:
            command += ["--docs", str(docs)]
        report = runtime().run(command, home=workdir.parent, env={"MPLBACKEND": "Agg"}, timeout=300)
        print(report.check("the report").stdout, end="", flush=True)
        progress("report written" + (f": {docs}" if docs else " (plots only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
