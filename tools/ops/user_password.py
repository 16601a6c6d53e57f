"""Set an MLflow user's password through the basic-auth app (MLflow's AuthServiceClient), as an
admin. Needs MLflow: run it with the runtime virtualenv's python from the project root

    MLFLOW_TRACKING_URI=... MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... NEW_PASSWORD=... \\
        .venv-runtime/bin/python -m tools.ops.user_password --user mlflow-serving

The new password comes from the environment only. Prints one JSON object without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mlflow.server import get_app_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.user_password", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", required=True)
    args = parser.parse_args(argv)
    auth = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    # Changing one's own password (the admin's) needs the current one; an admin changing another's does not.
    own = args.user == os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth.update_user_password(args.user, os.environ["NEW_PASSWORD"],
                              current_password=os.environ["MLFLOW_TRACKING_PASSWORD"] if own else None)
    print(json.dumps({"user": args.user, "password": "updated"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
