"""`mlflow models serve --env-manager local`, plus Prometheus metrics at /metrics, plus waiting.

MLflow's scoring server exports no metrics; this package serves the same app (same /invocations,
/ping, /health, /version) wrapped in a small ASGI middleware, in the same process. It also starts
before the model exists: until the model is loaded every path answers 503 with the reason, and
/live (the liveness probe) answers 200.
"""
