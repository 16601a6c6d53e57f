"""`make local` (= python -m tools.local): start the platform, print where it is, run until Ctrl-C/SIGTERM.

Writes .local/endpoints.json (URLs, admin user, path of the 0600 admin password file); logs of every
process go to .local/logs/. On exit every process started is stopped and the data is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from tools.local.localplatform import LocalPlatform
from tools.local.rollout import is_local_instance, write_pid_file
from tools.local.manifests import ROOT
from tools.local.processes import LocalPlatformError
from tools.local.rollout import Rollouts

DEFAULT_WORKDIR = ROOT / ".local"
THROWAWAY = ("postgres", "gcs", "pods", "clients", "secrets", "secretmanager")


class Stop(Exception):
    """SIGTERM or SIGHUP arrived."""


def _raise_stop(signum, _frame):
    # Once: a second Ctrl-C must not interrupt the cleanup (processes started later are none).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def _other_instance(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and is_local_instance(pid) else None


def _clean(workdir: Path) -> None:
    for name in THROWAWAY:
        shutil.rmtree(workdir / name, ignore_errors=True)
    (workdir / "endpoints.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="rendered stack to run (plan/<stack>/k8s), default dev")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="default .local/")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file = workdir / "local.pid"
    other = _other_instance(pid_file)
    if other:
        print(f"another `make local` (pid {other}) uses {workdir}; stop it first", file=sys.stderr)
        return 1
    _clean(workdir)
    write_pid_file(workdir)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    rollouts = Rollouts(workdir)  # SIGUSR1: roll serving or tracking (`make promote`, `make rotate-secret`)
    rollouts.install()

    def progress(message: str) -> None:
        print(f"[local] {message}", flush=True)

    started = time.monotonic()
    code = 0
    try:
        with LocalPlatform(workdir, stack=args.stack, progress=progress) as platform:
            # A second demo model: its flavor (LightGBM) is not in the serving image, so serving
            # restores the recorded environment when it is promoted.
            second = platform.train_model(flavor="lightgbm", move_alias=False)
            endpoints = platform.endpoints()
            (workdir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
            people = (f"\n  people    {platform.people_url}   (stand-in for IAP: sign in with an e-mail; "
                      "MLflow permissions by team)" if platform.people_url else "")
            challenger = ""
            if platform.challenger_alias:
                weight, mirror = platform.declared_split
                challenger = (f"\n  challenger {endpoints['challenger_url']}   (@{platform.challenger_alias}: "
                           f"{'a copy of every request' if mirror else f'{weight}% of serving'}; make challenger-weight ...)")
            print(f"""
MLflow platform ({args.stack} manifests) up in {time.monotonic() - started:.0f}s
  tracking  {platform.tracking_url}   (basic auth; /health is open){people}
  serving   {platform.serving_url}/invocations   ({endpoints['model_uri']}){challenger}
  admin     user {platform.admin_username!r}, password in {platform.admin_password_file}
  endpoints {workdir / 'endpoints.json'}
  logs      {platform.logs_dir}/
  LightGBM  version {second['version']} of {platform.model_name} (not in the serving image):
            make promote MODEL={platform.model_name} VERSION={second['version']} ALIAS={platform.model_alias}
Ctrl-C stops everything.""", flush=True)
            while True:
                rollouts.poll(platform, progress)
                for process in platform.processes():
                    process.check_alive()  # a crash ends the session rather than leaving it half up
                time.sleep(1)
    except Stop as reason:
        print(f"\n[local] stopped by {reason}", flush=True)
    except LocalPlatformError as err:
        print(f"[local] error: {err}", file=sys.stderr, flush=True)
        code = 1
    finally:
        _clean(workdir)
        pid_file.unlink(missing_ok=True)
    print("[local] stopped; logs kept in", workdir / "logs", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
