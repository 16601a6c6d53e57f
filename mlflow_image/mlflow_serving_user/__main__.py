"""`python -m mlflow_serving_user`: create or update the serving user, then grant it READ.

Idempotent: run by a Job on every change of model, alias, image or password, and by `make local`.
Environment: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD (an admin),
SERVING_USERNAME, SERVING_PASSWORD, MODEL_NAME.
"""

from __future__ import annotations

import os
import sys

from mlflow import MlflowClient
from mlflow.server import get_app_client

from mlflow_serving_user import ensure_user, grant_model_read, is_registered


def main() -> int:
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    username, password = os.environ["SERVING_USERNAME"], os.environ["SERVING_PASSWORD"]
    model_name = os.environ["MODEL_NAME"]
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    print(f"serving user {username!r}: {ensure_user(auth, username, password)}", flush=True)

    client = MlflowClient(tracking_uri=tracking_uri)
    if not is_registered(client, model_name):
        print(f"model {model_name!r} is not registered yet; grant READ when it is (rerun or `make promote`)")
        return 0
    experiments = grant_model_read(auth, client, username, model_name)
    print(f"READ on model {model_name!r} and experiments {experiments}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
