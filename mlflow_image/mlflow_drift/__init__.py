"""Drift of served data against the training data, per model version (the drift job and its reference).

    python -m mlflow_drift score --source bigquery://PROJECT.DATASET|FILE --window-hours 24 \\
        --threshold 0.2 --min-rows 100 [--redacted COLUMN ...]
    python -m mlflow_drift reference --model NAME --version N [--data FILE.csv|FILE.parquet]

Both act as the MLflow user MLFLOW_TRACKING_USERNAME (with MLFLOW_TRACKING_URI/PASSWORD): the job as its own
user, with EDIT on the served model, READ on its versions' experiments and EDIT on the monitoring experiment
(k8s/drift.py); `make drift-reference` as the admin. A call tracking refuses (403) ends the command with one
line naming the user and the call (REFUSED_MESSAGE), exit 1.
"""
