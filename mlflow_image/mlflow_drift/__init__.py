"""Drift of served data against the training data, per model version (the drift job and its reference).

    python -m mlflow_drift score --source bigquery://PROJECT.DATASET|FILE --window-hours 24 \\
        --threshold 0.2 --min-rows 100 [--redacted COLUMN ...]
    python -m mlflow_drift reference --model NAME --version N [--data FILE.csv|FILE.parquet]

Both act as an MLflow user with EDIT on the models (MLFLOW_TRACKING_URI/USERNAME/PASSWORD).
"""
