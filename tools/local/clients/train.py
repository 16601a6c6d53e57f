"""Train an iris classifier, log it (params, metrics, a text artifact, the model with signature and
input example), register it and point an alias at the new version (`--alias`; without it the alias
stays where it is, for `make promote` to move).

Env: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (a user who may write).
Variants: `base` (logistic regression) and `shifted` (the same, trained on labels shifted by one:
every prediction differs from `base`, so a test can tell which version is served), and `faulty` (`base`
as a pyfunc raising ValueError, which MLflow's scoring answers 400, for rows whose petal length is at least FAULTY_PETAL_LENGTH: a version
failing on part of its inputs, for the canary rehearsals).
Flavors: `sklearn` (in the serving image) and `lightgbm` (not in it: serving restores it from the
model's recorded requirements). This client gets LightGBM the way a serving pod does, with
mlflow_serving.environment (on PYTHONPATH). `--extra-requirement` adds a line to the recorded
requirements (one that cannot be installed makes a version serving must refuse).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

N_EXAMPLE = 5
FAULTY_PETAL_LENGTH = 5.0
LIGHTGBM_REQUIREMENT = "lightgbm==4.6.0"


def with_lightgbm():
    """LightGBM, restored into an overlay as serving restores it, importable here and in MLflow's
    requirement-inference subprocess."""
    from mlflow_serving.environment import EnvironmentBuilder, EnvironmentSettings, activate

    cache = Path.home() / "envs"
    spec = cache / "lightgbm-model"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "requirements.txt").write_text(LIGHTGBM_REQUIREMENT + "\n")
    restored = EnvironmentBuilder(EnvironmentSettings(cache)).restore(spec)
    activate(restored)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(restored.overlay), os.environ.get("PYTHONPATH")]))
    import lightgbm

    return lightgbm


def fit(flavor: str, features, labels, params: dict):
    if flavor == "lightgbm":
        lightgbm = with_lightgbm()
        return lightgbm.LGBMClassifier(n_estimators=20, min_child_samples=5, verbose=-1).fit(features, labels)
    return LogisticRegression(max_iter=params["max_iter"], C=params["C"]).fit(features, labels)


class Faulty(mlflow.pyfunc.PythonModel):
    """Raises a plain exception for a request with a long petal, as a model failing on some inputs does
    (MLflow's scoring answers it HTTP 400)."""

    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input, params=None):
        if (model_input["petal length (cm)"] >= FAULTY_PETAL_LENGTH).any():
            raise ValueError("faulty variant: a long petal")
        return self.model.predict(model_input)


def log_model(flavor: str, model, variant: str, **kwargs):
    if variant == "faulty":
        return mlflow.pyfunc.log_model(python_model=Faulty(model), **kwargs)
    if flavor == "lightgbm":
        return mlflow.lightgbm.log_model(model, **kwargs)
    return mlflow.sklearn.log_model(model, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--alias", help="move this alias to the new version")
    parser.add_argument("--experiment", default="iris-demo")
    parser.add_argument("--variant", choices=("base", "shifted", "faulty"), default="base")
    parser.add_argument("--flavor", choices=("sklearn", "lightgbm"), default="sklearn")
    parser.add_argument("--extra-requirement", action="append", default=[])
    args = parser.parse_args()

    iris = load_iris(as_frame=True)
    features, labels = iris.data, iris.target
    if args.variant == "shifted":
        labels = (labels + 1) % 3
    params = {"variant": args.variant, "max_iter": 500, "C": 1.0}
    model = fit(args.flavor, features, labels, params)
    predictions = model.predict(features)

    experiment = mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"iris-{args.variant}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({"train_accuracy": float(accuracy_score(labels, predictions)),
                            "n_samples": float(len(features))})
        mlflow.log_text(f"iris classifier, variant {args.variant}\n", "notes/README.txt")
        info = log_model(
            args.flavor, model, args.variant, name="model", registered_model_name=args.model_name,
            signature=infer_signature(features, predictions), input_example=features.head(N_EXAMPLE),
            extra_pip_requirements=args.extra_requirement or None)
    version = str(info.registered_model_version)
    if args.alias:
        MlflowClient().set_registered_model_alias(args.model_name, args.alias, version)
    print(json.dumps({
        "run_id": run.info.run_id, "experiment_id": experiment.experiment_id, "model_id": info.model_id,
        "version": version, "model_name": args.model_name, "alias": args.alias, "variant": args.variant,
        "flavor": args.flavor, "params": {k: str(v) for k, v in params.items()},
        "example_predictions": [int(p) for p in predictions[:N_EXAMPLE]],
    }))


if __name__ == "__main__":
    main()
