"""Train an iris classifier, log it (params, metrics, a text artifact, the model with signature and
input example), register it and point an alias at the new version.

Env: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (a user who may write).
Variants: `base` (logistic regression) and `shifted` (the same, trained on labels shifted by one:
every prediction differs from `base`, so a test can tell which version is served).
"""

from __future__ import annotations

import argparse
import json

import mlflow
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

N_EXAMPLE = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--experiment", default="iris-demo")
    parser.add_argument("--variant", choices=("base", "shifted"), default="base")
    args = parser.parse_args()

    iris = load_iris(as_frame=True)
    features, labels = iris.data, iris.target
    if args.variant == "shifted":
        labels = (labels + 1) % 3
    params = {"variant": args.variant, "max_iter": 500, "C": 1.0}
    model = LogisticRegression(max_iter=params["max_iter"], C=params["C"]).fit(features, labels)
    predictions = model.predict(features)

    experiment = mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"iris-{args.variant}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({"train_accuracy": float(accuracy_score(labels, predictions)),
                            "n_samples": float(len(features))})
        mlflow.log_text(f"iris classifier, variant {args.variant}\n", "notes/README.txt")
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=args.model_name,
            signature=infer_signature(features, predictions), input_example=features.head(N_EXAMPLE))
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(args.model_name, args.alias, version)
    print(json.dumps({
        "run_id": run.info.run_id, "experiment_id": experiment.experiment_id, "model_id": info.model_id,
        "version": version, "model_name": args.model_name, "alias": args.alias, "variant": args.variant,
        "params": {k: str(v) for k, v in params.items()},
        "example_predictions": [int(p) for p in predictions[:N_EXAMPLE]],
    }))


if __name__ == "__main__":
    main()
