"""`python -m tools.benchmarks.coldstart [--rounds N]`: cold start of a serving process, from its start
to /ping answering 200, for a model the serving image satisfies (scikit-learn) and for one that
needs one package more (LightGBM), on one LocalPlatform, beside `mlflow models serve
--env-manager uv` and `--env-manager virtualenv` for the same registered versions, in the same run
(and `--env-manager local`, which restores nothing: the image-only reference).

cold: empty environment cache (the pod's volume; for the peers MLFLOW_ENV_ROOT and their uv/pip
caches), as a new pod on a new node. warm: the same cache again, as a restarted container. Configs
alternate per round so machine noise lands on all of them. Results: tools/benchmarks/results/coldstart.json;
the table in docs/benchmarks.md comes from `python -m tools.benchmarks.report`; the conclusions beside it
are written by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from tools.benchmarks.common import machine
from tools.benchmarks.variants import Server, models_serve, serving_variant
from tools.local.localplatform import LocalPlatform
from tools.local.manifests import ROOT
from tools.local.postgres import find_bin_dir
from tools.local.processes import http

RESULTS = ROOT / "tools" / "benchmarks" / "results" / "coldstart.json"
READY_TIMEOUT = 600.0
# This machine's CA bundle, for peers that download (a TLS-intercepting proxy may sit in front of
# pypi.org); the project's pods use the image's CA store (mlflow_serving.environment).
TLS_ENV = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
PROJECT, LOCAL, UV, VIRTUALENV = "project", "models-serve-local", "models-serve-uv", "models-serve-virtualenv"
# `--env-manager local` restores nothing: the reference for "no added start-up" on image models.
MANAGERS = {LOCAL: "local", UV: "uv", VIRTUALENV: "virtualenv"}
BASELINE = UV
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def peer_env(platform: LocalPlatform, root: Path) -> dict:
    """Where an env manager keeps its environments and downloads, and the tools it calls: pyenv
    (virtualenv) and the Python the model was logged with (uv finds it on PATH)."""
    pyenv = shutil.which("pyenv")
    python_home = next(line.split("=", 1)[1].strip() for line in
                       (platform.runtime.path / "pyvenv.cfg").read_text().splitlines() if line.startswith("home"))
    path = ":".join(part for part in (str(platform.runtime.path / "bin"), os.path.dirname(pyenv) if pyenv else "", python_home,
                                      SYSTEM_PATH) if part)
    env = {"PATH": path, "MLFLOW_ENV_ROOT": str(root / "envs"), "UV_CACHE_DIR": str(root / "uv-cache"),
           "PIP_CACHE_DIR": str(root / "pip-cache"), "UV_SYSTEM_CERTS": "1"}
    if pyenv:
        env["PYENV_ROOT"] = os.environ.get("PYENV_ROOT") or str(Path(pyenv).resolve().parent.parent)
    return env | {name: os.environ[name] for name in TLS_ENV if name in os.environ}


def start(platform: LocalPlatform, config: str, name: str, uri: str, cache: Path) -> Server:
    if config == PROJECT:
        return serving_variant(platform, name, model_uri=uri, env_cache=cache)
    return models_serve(platform, name, 1, model_uri=uri, env_manager=MANAGERS[config],
                        extra_env=peer_env(platform, cache))


def measure(platform: LocalPlatform, config: str, name: str, uri: str, cache: Path, example: dict) -> dict:
    started = time.monotonic()
    server = start(platform, config, name, uri, cache)
    try:
        server.wait_ready(READY_TIMEOUT)
        seconds = time.monotonic() - started
        answer = http("POST", f"{server.url}/invocations", json_body=example)
        return {"seconds": round(seconds, 2), "answered": answer.status == 200, "command": server.command}
    except Exception as err:  # a config that never gets ready is a result, not a crash
        return {"seconds": None, "error": str(err).splitlines()[0][:300], "command": server.command}
    finally:
        server.stop()


def run(platform: LocalPlatform, rounds: int, progress: Callable[[str], None]) -> dict:
    lightgbm = platform.train_model(flavor="lightgbm", move_alias=False)
    cases = {"sklearn (image)": f"models:/{platform.model_name}/{platform.demo_run['version']}",
             "lightgbm (+1 package)": f"models:/{platform.model_name}/{lightgbm['version']}"}
    rows = {"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                            "petal width (cm)"], "data": [[5.1, 3.5, 1.4, 0.2]]}}
    results: dict = {case: {} for case in cases}
    configs = [PROJECT, LOCAL, UV, VIRTUALENV]
    for round_ in range(rounds):
        for case, uri in cases.items():
            for config in configs[round_ % len(configs):] + configs[:round_ % len(configs)]:
                cache = Path(tempfile.mkdtemp(prefix=f"cold-{config}-", dir=platform.workdir))
                for phase in ("cold", "warm"):
                    label = f"{config} {phase}"
                    result = measure(platform, config, f"{config}-{phase}-{round_}".replace(" ", ""), uri, cache, rows)
                    progress(f"{case}: {label}: {result.get('seconds')} s {result.get('error', '')}")
                    entry = results[case].setdefault(label, {"seconds": [], "command": result["command"]})
                    entry["seconds"].append(result["seconds"])
                    if "error" in result:
                        entry["error"] = result["error"]
                shutil.rmtree(cache, ignore_errors=True)
    for case in results.values():
        for entry in case.values():
            done = [s for s in entry["seconds"] if s is not None]
            entry["median_s"] = round(statistics.median(done), 2) if done else None
    return {"cases": results, "rounds": rounds, "baseline": f"{BASELINE} cold",
            "lightgbm_requirement": "lightgbm==4.6.0"}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.benchmarks.coldstart", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    find_bin_dir()
    progress = lambda message: print(f"[coldstart] {message}", flush=True)  # noqa: E731
    workdir = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    try:
        with LocalPlatform(workdir, progress=progress) as platform:
            data = run(platform, args.rounds, progress) | {"machine": machine()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
