"""Scripts run by the runtime virtualenv's python (MLflow, psycopg2, scikit-learn), never imported by
the orchestrator. Each takes secrets from its environment only and prints one JSON object on stdout."""
