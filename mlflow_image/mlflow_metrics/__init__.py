"""Serves the tracking server's Prometheus metrics on their own port, without credentials.

`mlflow server --expose-prometheus DIR` keeps its metrics in multiprocess files in DIR, but
answers /metrics only to admins once basic auth is on. This sidecar reads the same files (shared
emptyDir) and serves them on a port only Managed Prometheus may reach (NetworkPolicy).
"""
