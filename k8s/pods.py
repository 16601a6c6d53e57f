"""Pure builders of pod-spec fragments shared by every workload: security, probes, resources, proxy.

They return plain Kubernetes manifest dicts (camelCase), so they are testable without Pulumi and
render to YAML as they are. Values may be Pulumi Inputs; the builders only place them.
"""

from __future__ import annotations

from typing import Any

from infra.settings import cpu_limit_millis

APP_UID = 10001  # the numeric user of mlflow_image/Dockerfile
PROXY_UID = 65532  # distroless "nonroot" of the Cloud SQL Auth Proxy image
SQL_PROXY_PORT = 5432
SQL_PROXY_HTTP_PORT = 9801
TMP_VOLUME = "tmp"


def container_security_context(run_as_user: int = APP_UID) -> dict:
    """The `restricted` Pod Security Standard, plus a read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(run_as_user: int = APP_UID) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(cpu: str, memory: str) -> dict:
    """Requests as given; memory limit = request (no OOM surprises), CPU may burst (cpu_limit_millis)."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": f"{cpu_limit_millis(cpu)}m", "memory": memory},
    }


def http_probe(path: str, port: int | str, *, period: int = 10, failures: int = 3, timeout: int = 5,
               initial_delay: int = 0) -> dict:
    probe = {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
             "failureThreshold": failures, "timeoutSeconds": timeout}
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


def drain_on_stop(seconds: int) -> dict:
    """A container `lifecycle` whose preStop keeps the pod serving for `seconds` after deletion.

    The kubelet sends SIGTERM as soon as the pod is deleted, while its endpoint removal still
    travels to kube-proxy and load balancers (seconds; longer for a GCLB's NEGs): without a drain
    the server closes its socket while requests are still routed to it. The `sleep` action needs
    no binary in the image (Kubernetes 1.30+)."""
    return {"preStop": {"sleep": {"seconds": seconds}}}


def tmp_volume(size: str = "1Gi") -> dict:
    """Writable scratch space: the root filesystem is read-only."""
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": size}}


def tmp_mount() -> dict:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def sql_proxy_sidecar(connection_name: Any, *, image: str, port: int = SQL_PROXY_PORT,
                      http_port: int = SQL_PROXY_HTTP_PORT) -> dict:
    """Cloud SQL Auth Proxy v2 as a native sidecar: an init container that keeps running.

    Kubernetes starts the app only after the proxy's startup probe passes, and stops the proxy
    after the app, so Jobs complete and connections drain on shutdown.
    """
    return {
        "name": "cloud-sql-proxy",
        "image": image,
        "restartPolicy": "Always",
        "args": [
            "--private-ip",
            "--structured-logs",
            f"--port={port}",
            "--address=127.0.0.1",
            "--health-check",
            "--http-address=0.0.0.0",
            f"--http-port={http_port}",
            "--prometheus",
            # Log in as the pod's IAM identity with a fresh token per connection: no password exists.
            "--auto-iam-authn",
            # Let in-flight queries finish, then exit 0 so a completed Job is not marked failed.
            "--max-sigterm-delay=20s",
            "--exit-zero-on-sigterm",
            connection_name,
        ],
        "ports": [{"name": "proxy-http", "containerPort": http_port}],
        "startupProbe": http_probe("/startup", http_port, period=2, failures=30, timeout=2),
        "livenessProbe": http_probe("/liveness", http_port, period=10, failures=3),
        "readinessProbe": http_probe("/readiness", http_port, period=10, failures=3),
        "resources": resources("100m", "128Mi"),
        "securityContext": container_security_context(PROXY_UID),
    }


def default_deny_ingress(namespace, labels: dict) -> dict:
    """Every pod of the namespace (Jobs too) refuses traffic unless a policy admits it."""
    return {"metadata": {"name": "default-deny-ingress", "namespace": namespace, "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
