"""READ for the serving user on a model and the experiments of its versions: the serving-user
Job's own logic (mlflow_image/mlflow_serving_user), imported, for a model promoted after
that Job ran. Needs MLflow: run it with the runtime virtualenv's python from the project root

    MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
        .venv-runtime/bin/python -m tools.ops.grants --model NAME --user mlflow-serving

The user must exist (the Job creates it and owns its password); this never touches passwords.
Prints one JSON object; exit 1 with a message on stderr when the user or model is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from mlflow_serving_user import READ, grant_model_read, is_registered


def grant_read(tracking_uri: str, username: str, model_name: str) -> dict:
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        auth.get_user(username)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise SystemExit(f"serving user {username!r} does not exist: the serving-user Job creates it "
                         "(`pulumi up`, or `make local`)") from None
    if not is_registered(client, model_name):
        raise SystemExit(f"registered model {model_name!r} does not exist")
    experiments = grant_model_read(auth, client, username, model_name)
    return {"user": username, "permission": READ, "model": model_name, "experiments": experiments}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.grants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(grant_read(os.environ["MLFLOW_TRACKING_URI"], args.user, args.model)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
