"""Everything the tracking server holds, read through its API, in a form that MLflow 2.x and 3.x
clients print alike (tests/test_upgrade.py compares the two around an upgrade).

Env: MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD (an admin).
Experiments (name, lifecycle, artifact location, tags) with every run (info, params, latest
metrics, full metric histories, tags, every artifact file's sha256 downloaded through the
server); registered models (description, tags, aliases) with every version (run, source,
status, description, tags, the sha256 of every file of `models:/NAME/VERSION`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType


def tree_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_state(client: MlflowClient, run) -> dict:
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = tree_hashes(Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=tmp)))
    return {
        "name": run.info.run_name, "status": run.info.status, "lifecycle": run.info.lifecycle_stage,
        "start_time": run.info.start_time, "end_time": run.info.end_time, "artifact_uri": run.info.artifact_uri,
        "params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags),
        "history": {key: sorted([m.step, m.value, m.timestamp] for m in client.get_metric_history(run_id, key))
                    for key in sorted(run.data.metrics)},
        "artifacts": artifacts,
    }


def main() -> None:
    client = MlflowClient()
    experiments = {}
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
        experiments[experiment.experiment_id] = {
            "name": experiment.name, "lifecycle": experiment.lifecycle_stage,
            "artifact_location": experiment.artifact_location, "tags": dict(experiment.tags),
            "runs": {run.info.run_id: run_state(client, run) for run in runs},
        }
    models = {}
    for model in client.search_registered_models():
        versions = {}
        for version in client.search_model_versions(f"name='{model.name}'"):
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(f"models:/{model.name}/{version.version}", dst_path=tmp)
                files = tree_hashes(Path(local))
            versions[str(version.version)] = {
                "run_id": version.run_id, "source": version.source, "status": version.status,
                "description": version.description or "", "tags": dict(version.tags), "files": files,
            }
        models[model.name] = {"description": model.description or "", "tags": dict(model.tags),
                              "aliases": {alias: str(v) for alias, v in model.aliases.items()}, "versions": versions}
    print(json.dumps({"experiments": experiments, "registered_models": models}, sort_keys=True))


if __name__ == "__main__":
    main()
