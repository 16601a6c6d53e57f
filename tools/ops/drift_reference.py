"""`make drift-reference`: a model version's drift profile from a file of training data, for a version whose
run logged no dataset MLflow can load (the drift job makes the others' itself).

    python -m tools.ops.drift_reference --model NAME --version N --data train.parquet [--target local|cluster]

The profile is made by the drift job's own code (`python -m mlflow_drift reference`, in the runtime
virtualenv) and stored on the version as its tag `drift.reference`, as the admin of the target's tracking.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from tools.ops import targets
from tools.ops.interfaces import TargetError
from tools.ops.runtime import AdminRunner
from tools.venvs import VenvError

TIMEOUT = 600.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="make drift-reference")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--data", type=Path, required=True, help="training data, .csv or .parquet")
    targets.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.data.suffix.lower() not in (".csv", ".parquet") or not args.data.is_file():
        parser.error(f"--data {args.data}: give an existing .csv or .parquet file")
    try:
        tracking = targets.platform(args).promotion(args.timeout).tracking
        result = AdminRunner(tracking.uri, tracking.username, tracking.password).run_module(
            ["-m", "mlflow_drift", "reference", "--model", args.model, "--version", args.version,
             "--data", str(args.data.resolve())], "the reference profile", TIMEOUT)
    except (TargetError, VenvError) as err:
        print(f"drift-reference: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
