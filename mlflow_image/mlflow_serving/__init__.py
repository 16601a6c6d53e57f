"""`mlflow models serve --env-manager local`, plus Prometheus metrics at /metrics.

MLflow's scoring server exports no metrics; this package serves the same app (same /invocations,
/ping, /health, /version) wrapped in a small ASGI middleware, in the same process.
"""
