"""A model version's reference profile: stored as a version tag, taken from the training data.

The tag (REFERENCE_TAG, a few hundred bytes per column; MLflow allows 100,000 characters) keeps the
profile with the version itself: it is visible in the registry UI, goes when the version goes, and needs
no artifact store write. Its source is the dataset the version's run logged with `mlflow.log_input`
(context `training` first), when the job can load it (`mlflow.data.get_source(...).load()`): on GCP an
`mlflow-artifacts:` or reachable http(s) source (the job's identity has no Storage role and no trainer's
files); otherwise a person supplies the data (`make drift-reference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mlflow_drift.profile import ColumnProfile, dumps, loads, profile_columns

REFERENCE_TAG = "drift.reference"
TRAINING_CONTEXT = "training"


def stored(client: Any, model: str, version: str) -> Optional[dict[str, ColumnProfile]]:
    text = client.get_model_version(model, version).tags.get(REFERENCE_TAG)
    return loads(text) if text else None


def store(client: Any, model: str, version: str, profiles: dict[str, ColumnProfile]) -> None:
    if not profiles:
        raise ValueError(f"{model} version {version}: the data has no column with values to profile")
    client.set_model_version_tag(model, version, REFERENCE_TAG, dumps(profiles))


def read_table(path: str) -> dict[str, list]:
    """The columns of a CSV or Parquet file (pandas: in the image, not in the suite's environment)."""
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: give a .csv or .parquet file")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    return {str(name): frame[name].tolist() for name in frame.columns}


def logged_dataset_path(client: Any, model: str, version: str) -> Optional[str]:
    """A local copy of the dataset the version's run logged, or None when it logged none MLflow can load."""
    import mlflow.data

    run_id = client.get_model_version(model, version).run_id
    inputs = client.get_run(run_id).inputs.dataset_inputs if run_id else []
    ordered = sorted(inputs, key=lambda item: not any(
        tag.key == "mlflow.data.context" and tag.value == TRAINING_CONTEXT for tag in item.tags))
    for dataset_input in ordered:
        try:
            return str(mlflow.data.get_source(dataset_input).load())
        except Exception as err:  # a code or table source: MLflow cannot load it here
            print(f"{model} version {version}: dataset {dataset_input.dataset.name!r} "
                  f"({dataset_input.dataset.source_type}) not loadable here: {err}; give the training data with "
                  f"`make drift-reference MODEL={model} VERSION={version} DATA=FILE`")
    return None


def ensure(client: Any, model: str, version: str) -> Optional[dict[str, ColumnProfile]]:
    """The version's profile: stored, else made from its logged dataset and stored; None without either."""
    profiles = stored(client, model, version)
    if profiles is not None:
        return profiles
    path = logged_dataset_path(client, model, version)
    if path is None:
        return None
    profiles = profile_columns(read_table(path))
    store(client, model, version, profiles)
    return profiles
