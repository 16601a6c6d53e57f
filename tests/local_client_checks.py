"""Client-side checks for tests/test_local_e2e.py, run by the runtime virtualenv's python
(MLflow, scikit-learn) against the local tracking server. Not a test module: pytest does not collect it.

Env: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD.
Prints one JSON object on stdout.

    snapshot            everything a restart must not lose: experiments, runs (params, metrics,
                        artifact listing and the notes' text), registered models, versions,
                        aliases, and a hash of every file of every model version
    predict MODEL_URI   in-process pyfunc predictions on a fixed slice of iris, with the rows
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType

NOTES = "notes/README.txt"


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    paths = []
    for info in client.list_artifacts(run_id, path):
        paths += _artifact_paths(client, run_id, info.path) if info.is_dir else [info.path]
    return sorted(paths)


def _tree_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def snapshot() -> dict:
    client = MlflowClient()
    experiments = {}
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        runs = {}
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL):
            artifacts = _artifact_paths(client, run.info.run_id)
            notes = None
            if NOTES in artifacts:
                notes = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=NOTES)).read_text()
            runs[run.info.run_id] = {
                "status": run.info.status, "lifecycle": run.info.lifecycle_stage,
                "artifact_uri": run.info.artifact_uri, "params": run.data.params, "metrics": run.data.metrics,
                "artifacts": artifacts, "notes": notes,
            }
        experiments[experiment.experiment_id] = {"name": experiment.name,
                                                 "artifact_location": experiment.artifact_location, "runs": runs}
    models = {}
    for model in client.search_registered_models():
        versions = {}
        for version in client.search_model_versions(f"name='{model.name}'"):
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(f"models:/{model.name}/{version.version}", dst_path=tmp)
                files = _tree_hashes(Path(local))
            versions[version.version] = {"run_id": version.run_id, "source": version.source,
                                         "status": version.status, "files": files}
        models[model.name] = {"aliases": dict(model.aliases), "versions": versions}
    return {"experiments": experiments, "registered_models": models}


def predict(model_uri: str) -> dict:
    from sklearn.datasets import load_iris

    features = load_iris(as_frame=True).data.iloc[::10]
    model = mlflow.pyfunc.load_model(model_uri)
    return {"columns": list(features.columns), "data": features.values.tolist(),
            "predictions": [int(p) for p in model.predict(features)],
            "model_id": model.metadata.model_id}


def main(argv: list[str]) -> None:
    if argv[:1] == ["snapshot"]:
        result = snapshot()
    elif len(argv) == 2 and argv[0] == "predict":
        result = predict(argv[1])
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
