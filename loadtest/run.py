"""`make loadtest [TARGET=local|cluster] [STACK=dev] [DURATION=60] [USERS=16]`: Locust, headless and
bounded, against the serving and the tracking Service, one after the other.

- local: a running `make local` (its .local/endpoints.json: the load balancer's URLs), distributed
  on this machine: one master and two worker processes per run.
- cluster: the load-test stack's pool (loadtest/Pulumi.yaml, `cd loadtest && pulumi up -s STACK`), a
  master and the stack's workers as Kubernetes Jobs (loadtest/cluster.py).

Results (CSV + JSON) in loadtest-results/<target>/, tables and charts in docs/loadtest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from loadtest.cluster import ClusterRunError, run_cluster
from loadtest.ensure_user import Tracking, provision
from loadtest.locust_run import ROOT, LoadRun, run_load
from loadtest.report import update_report
from loadtest.stack.templates import PASSWORD_FILE, USERNAME

RESULTS = ROOT / "loadtest-results"


def tracking_users(users: int) -> int:
    """8 writers: a team logging at once; more saturates one tracking worker on 2 cores."""
    return min(users, 8)


def local_user(endpoints: dict, workdir: Path) -> dict[str, str]:
    """The load test's own user on `make local`, made as the cluster's setup Job makes it: Locust never
    holds the admin's password. Its password is generated once into the work dir (owner-only)."""
    password_file = workdir / PASSWORD_FILE
    if not password_file.exists():
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    admin = Tracking(endpoints["tracking_url"], endpoints["admin_username"],
                     Path(endpoints["admin_password_file"]).read_text().strip())
    provision(admin, USERNAME, password_file.read_text().strip())
    return {"LOADTEST_USERNAME": USERNAME, "LOADTEST_PASSWORD_FILE": str(password_file)}


def local_runs(workdir: Path, seconds: int, users: int, out_dir: Path) -> list[LoadRun]:
    endpoints_file = workdir / "endpoints.json"
    try:
        endpoints = json.loads(endpoints_file.read_text())
    except OSError:
        raise SystemExit(f"loadtest: {endpoints_file} is missing: start `make local` first") from None
    credentials = local_user(endpoints, workdir)
    return [LoadRun("serving", endpoints["serving_url"], users, seconds, out_dir, workers=2),
            LoadRun("tracking", endpoints["tracking_url"], tracking_users(users), seconds, out_dir, workers=2,
                    env=credentials)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("local", "cluster"), default="local")
    parser.add_argument("--stack", default="dev", help="cluster: the load-test Pulumi stack (default dev)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local", help="`make local` work dir")
    parser.add_argument("--seconds", type=int, default=60, help="per Service (default 60)")
    parser.add_argument("--users", type=int, default=16, help="serving users (tracking: at most 8)")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "loadtest.md")
    args = parser.parse_args(argv)
    if not 5 <= args.seconds <= 3600 or not 1 <= args.users <= 1000:
        parser.error("--seconds 5-3600, --users 1-1000: a load test is bounded")
    if args.target == "cluster":
        out_dir, section = RESULTS / "cluster" / args.stack, f"cluster-{args.stack}"
        try:
            run_cluster(args.stack, [("serving", args.users), ("tracking", tracking_users(args.users))],
                        args.seconds, out_dir)
        except ClusterRunError as err:
            raise SystemExit(f"loadtest: {err}") from None
    else:
        out_dir, section = RESULTS / args.target, args.target
        for run in local_runs(args.workdir.resolve(), args.seconds, args.users, out_dir):
            print(f"[loadtest] {run.name}: {run.users} users for {run.seconds}s against {run.host} "
                  f"(1 master, {run.workers} workers)", flush=True)
            run_load(run)
    update_report(args.report, section, out_dir)
    print(f"[loadtest] results in {out_dir}/, report {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
