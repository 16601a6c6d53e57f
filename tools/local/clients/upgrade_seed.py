"""Seed an MLflow 2.x platform with one of everything an upgrade must keep (tests/test_upgrade.py).

Run by the MLflow 2.x virtualenv's python against the 2.x tracking server, as the admin.
Env: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD (admin), USER_PASSWORDS (JSON
object user -> password, secrets: never printed).

- users alice, bob, carol; alice creates experiment `upgrade-alice` (so she MANAGEs it) with
  three runs: params, metric histories, tags, text/JSON artifacts and a scikit-learn model each
  for the first two (registered as `upgrade-model` versions 1 and 2), the third deleted;
  alias `champion` -> 1, model and version tags and descriptions;
- the admin creates `upgrade-admin` with one run;
- grants: bob READ on the experiment and EDIT on the model, carol NO_PERMISSIONS on both.
Prints ids, and the alias's predictions on a fixed slice of iris.
"""

from __future__ import annotations

import json
import os
import time

import mlflow
import sklearn
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.server import get_app_client
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

MODEL = "upgrade-model"
ALIAS = "champion"


def as_user(username: str, password: str) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = username, password
    return MlflowClient()


def log_run(client: MlflowClient, experiment_id: str, variant: str, register: bool) -> str:
    """One run; params, metric histories and tags in one request (every request to a 2.x server
    costs a scrypt check: it has no credential cache)."""
    iris = load_iris(as_frame=True)
    labels = (iris.target + 1) % 3 if variant == "shifted" else iris.target
    model = LogisticRegression(max_iter=500).fit(iris.data, labels)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"upgrade-{variant}") as run:
        now = int(time.time() * 1000)
        accuracy = (0.5, 0.75, 0.875, float(model.score(iris.data, labels)))
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("accuracy", value, now + step, step) for step, value in enumerate(accuracy)]
            + [Metric("loss", 0.25 if variant == "base" else 0.3, now, 0)],
            params=[Param("variant", variant), Param("max_iter", "500"), Param("C", "1.0")],
            tags=[RunTag("stage", "rehearsal"), RunTag("variant", variant)])
        mlflow.log_text(f"notes of the {variant} run\n", "notes/README.txt")
        mlflow.log_dict({"variant": variant, "features": list(iris.data.columns)}, "config/params.json")
        if register:
            mlflow.sklearn.log_model(model, artifact_path="model", registered_model_name=MODEL,
                                     pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return run.info.run_id


def main() -> None:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    passwords = json.loads(os.environ["USER_PASSWORDS"])
    auth = get_app_client("basic-auth", tracking_uri=uri)
    for username, password in sorted(passwords.items()):
        auth.create_user(username, password)

    client = as_user("alice", passwords["alice"])
    experiment = client.create_experiment("upgrade-alice", tags={"team": "alice", "purpose": "upgrade"})
    runs = {variant: log_run(client, experiment, variant, register=variant != "deleted")
            for variant in ("base", "shifted", "deleted")}
    client.delete_run(runs["deleted"])
    client.set_registered_model_alias(MODEL, ALIAS, "1")
    client.set_registered_model_tag(MODEL, "domain", "iris")
    client.update_registered_model(MODEL, description="two versions, seeded by MLflow 2.x")
    client.set_model_version_tag(MODEL, "2", "validated", "false")
    client.update_model_version(MODEL, "1", description="the base classifier")

    client = as_user(*admin)
    admin_experiment = client.create_experiment("upgrade-admin")
    runs["admin"] = log_run(client, admin_experiment, "base", register=False)
    auth.create_experiment_permission(experiment, "bob", "READ")
    auth.create_registered_model_permission(MODEL, "bob", "EDIT")
    auth.create_experiment_permission(experiment, "carol", "NO_PERMISSIONS")
    auth.create_registered_model_permission(MODEL, "carol", "NO_PERMISSIONS")

    features = load_iris(as_frame=True).data.iloc[::10]
    predictions = mlflow.pyfunc.load_model(f"models:/{MODEL}@{ALIAS}").predict(features)
    print(json.dumps({
        "mlflow_version": mlflow.__version__, "experiments": {"alice": experiment, "admin": admin_experiment},
        "runs": runs, "model": MODEL, "alias": ALIAS, "predictions": [int(p) for p in predictions],
    }, sort_keys=True))


if __name__ == "__main__":
    main()
