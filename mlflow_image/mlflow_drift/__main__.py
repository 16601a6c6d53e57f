"""`python -m mlflow_drift score|reference` (see the package's docstring)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from mlflow_drift import reference
from mlflow_drift.profile import profile_columns
from mlflow_drift.score import EXPERIMENT, JobSettings, run_job
from mlflow_drift.sources import authorized_session, read_pages


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlflow_drift")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score the window's requests against each version's profile")
    score.add_argument("--source", required=True, help="bigquery://PROJECT.DATASET or a file of payload log lines")
    score.add_argument("--window-hours", type=int, required=True)
    score.add_argument("--threshold", type=float, required=True, help="PSI above which a column has drifted")
    score.add_argument("--min-rows", type=int, required=True, help="fewer rows in the window: not scored")
    score.add_argument("--redacted", nargs="*", default=[], help="columns redacted in the pod: never scored")
    score.add_argument("--experiment", default=EXPERIMENT)
    ref = commands.add_parser("reference", help="store a version's reference profile")
    ref.add_argument("--model", required=True)
    ref.add_argument("--version", required=True)
    ref.add_argument("--data", help="CSV or Parquet training data; without it, the dataset the run logged")
    return parser.parse_args(argv)


REFUSED_MESSAGE = "mlflow.drift.refused"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mlflow.exceptions import MlflowException

    args = parse_args(argv)
    try:
        return run(args)
    except MlflowException as err:
        if err.error_code != "PERMISSION_DENIED":
            raise
        # Tracking refused this user a call (403): say who and which call, not a traceback.
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        print(json.dumps({"message": REFUSED_MESSAGE, "severity": "ERROR", "user": user, "reason": err.message}),
              flush=True)
        print(f"mlflow_drift: MLflow user {user!r} was refused: {err.message}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    client = MlflowClient()
    if args.command == "reference":
        if args.data:
            profiles = profile_columns(reference.read_table(args.data))
            reference.store(client, args.model, args.version, profiles)
        else:
            profiles = reference.ensure(client, args.model, args.version)
            if profiles is None:
                print(f"{args.model} version {args.version}: its run logged no dataset this job can read; "
                      f"make drift-reference MODEL={args.model} VERSION={args.version} DATA=FILE", file=sys.stderr)
                return 1
        print(json.dumps({"model": args.model, "version": args.version, "columns": sorted(profiles)}))
        return 0
    settings = JobSettings(window_hours=args.window_hours, threshold=args.threshold, min_rows=args.min_rows,
                           redacted=frozenset(args.redacted), experiment=args.experiment)
    run_job(client, read_pages(args.source, args.window_hours, authorized_session), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
