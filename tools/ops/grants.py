"""What the machine users need on a model and the experiments of its versions: the serving-user
Job's own logic (mlflow_image/mlflow_serving_user), imported, for a model promoted after that Job
ran. The serving user gets READ; the drift user, where the stack has one, EDIT on the model (it
stores reference profiles on the versions) and READ on the experiments. Needs MLflow: run it with
the runtime virtualenv's python from the project root

    MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
        .venv-runtime/bin/python -m tools.ops.grants --model NAME --user mlflow-serving [--drift-user mlflow-drift]

The users must exist (the Job creates them and owns their passwords; a stack without the drift job has
no drift user, which is then skipped); this never touches passwords. Prints one JSON object; exit 1
with a message on stderr when the serving user or model is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from mlflow import MlflowClient
from mlflow.server import get_app_client

from mlflow_serving_user import DRIFT_MODEL_PERMISSION, READ, grant_model, is_registered, user_exists


def grant_read(tracking_uri: str, username: str, model_name: str, drift_user: Optional[str] = None) -> dict:
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if not user_exists(auth, username):
        raise SystemExit(f"serving user {username!r} does not exist: the serving-user Job creates it "
                         "(`pulumi up`, or `make local`)")
    if not is_registered(client, model_name):
        raise SystemExit(f"registered model {model_name!r} does not exist")
    experiments = grant_model(auth, client, username, model_name, READ)
    drift = bool(drift_user) and user_exists(auth, drift_user)
    if drift:
        grant_model(auth, client, drift_user, model_name, DRIFT_MODEL_PERMISSION)
    return {"user": username, "permission": READ, "model": model_name, "experiments": experiments,
            "drift_user": drift_user if drift else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.grants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--user", required=True, help="the serving user")
    parser.add_argument("--drift-user", help="the drift job's user, granted too where it exists")
    args = parser.parse_args(argv)
    print(json.dumps(grant_read(os.environ["MLFLOW_TRACKING_URI"], args.user, args.model, args.drift_user)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
