"""Pure builders shared by every pod: no Pulumi needed."""

import pytest

from infra.settings import cpu_millis
from k8s.pods import (
    container_security_context, http_probe, pod_security_context, resources, sql_proxy_sidecar,
)

PROXY_IMAGE = "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.2@sha256:" + "a" * 64


def test_container_security_context_is_restricted_with_read_only_root():
    context = container_security_context()
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_pod_security_context_sets_fs_group_for_writable_volumes():
    assert pod_security_context(1234)["fsGroup"] == 1234


def test_memory_limit_equals_request_and_cpu_may_burst():
    assert resources("500m", "1Gi") == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                        "limits": {"cpu": "1000m", "memory": "1Gi"}}
    assert resources("1.5", "2Gi")["limits"]["cpu"] == "3000m"


def test_cpu_quantity_parse_refuses_garbage():
    assert cpu_millis("250m") == 250
    with pytest.raises(ValueError, match="allowed forms 500m or 1.5"):
        cpu_millis("lots")


def test_http_probe_shape():
    assert http_probe("/health", "http", period=5, failures=60) == {
        "httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5, "failureThreshold": 60,
        "timeoutSeconds": 5}


def test_proxy_sidecar_is_a_native_sidecar():
    sidecar = sql_proxy_sidecar("p:r:i", image=PROXY_IMAGE)
    assert sidecar["restartPolicy"] == "Always"


def test_proxy_sidecar_uses_private_ip_structured_logs_and_the_connection_name():
    args = sql_proxy_sidecar("p:r:i", image=PROXY_IMAGE)["args"]
    assert {"--private-ip", "--structured-logs", "--health-check", "--http-address=0.0.0.0"} <= set(args)
    assert args[-1] == "p:r:i"


def test_proxy_sidecar_probes_its_health_endpoints():
    sidecar = sql_proxy_sidecar("p:r:i", image=PROXY_IMAGE, http_port=9801)
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/startup", "port": 9801}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/liveness", "port": 9801}
    assert "--http-port=9801" in sidecar["args"]


def test_proxy_sidecar_shuts_down_cleanly():
    args = sql_proxy_sidecar("p:r:i", image=PROXY_IMAGE)["args"]
    assert "--exit-zero-on-sigterm" in args
    assert any(arg.startswith("--max-sigterm-delay=") for arg in args)


def test_proxy_runs_as_distroless_nonroot():
    assert sql_proxy_sidecar("p:r:i", image=PROXY_IMAGE)["securityContext"]["runAsUser"] == 65532
