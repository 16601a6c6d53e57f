"""The tracking server: pure builders, then the component as the committed stacks declare it."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from infra.config import settings_from_values
from k8s.tracking import (
    AUTH_CONFIG_FILE, TrackingServerArgs, allowed_hosts, auth_config_ini, postgres_uri, tracking_args,
    tracking_env,
)
from tools.offline.mocks import is_secret
from tests.helpers import container, containers, env_of, pod_spec, plain

DOCKERFILE = Path(__file__).resolve().parent.parent / "mlflow_image" / "Dockerfile"


# --- pure builders --------------------------------------------------------------------------
def test_backend_uri_goes_through_the_local_proxy_with_psycopg2_as_the_iam_user_without_password():
    uri = postgres_uri("mlflow-tracking-dev@p-1.iam", "mlflow")
    assert uri == "postgresql+psycopg2://mlflow-tracking-dev%40p-1.iam@127.0.0.1:5432/mlflow"
    parsed = urlsplit(uri)  # SQLAlchemy percent-decodes the user the same way (proven on make local)
    assert (unquote(parsed.username), parsed.password, parsed.port) == ("mlflow-tracking-dev@p-1.iam", None, 5432)


def test_allowed_hosts_name_every_service_dns_name_with_port_and_the_ingress_host():
    hosts = allowed_hosts("mlflow", "mlflow.example.com", "10.10.15.254")
    for host in ("mlflow-tracking:5000", "mlflow-tracking.mlflow.svc.cluster.local:5000",
                 "mlflow-tracking.mlflow.svc.cluster.local", "mlflow.example.com", "10.10.15.254:5000"):
        assert host in hosts
    assert "*" not in hosts


def test_server_args_serve_artifacts_from_the_bucket_with_basic_auth():
    args = tracking_args(bucket="b", namespace="mlflow", workers=3, ingress_host=None, internal_ip=None)
    assert args[0] == "server"
    assert args[args.index("--artifacts-destination") + 1] == "gs://b/artifacts"
    assert "--serve-artifacts" in args
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert args[args.index("--workers") + 1] == "3"


def test_the_ingress_origin_may_change_state_and_no_other():
    args = tracking_args(bucket="b", namespace="mlflow", workers=1, ingress_host="mlflow.example.com", internal_ip=None)
    assert args[args.index("--cors-allowed-origins") + 1] == "https://mlflow.example.com"
    # without an ingress only localhost origins (port-forwards) may: MLflow's default
    assert "--cors-allowed-origins" not in tracking_args(bucket="b", namespace="mlflow", workers=1,
                                                         ingress_host=None, internal_ip=None)


def test_job_runner_is_off_unless_configured():
    assert env_of({"env": tracking_env(False, "u")})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert env_of({"env": tracking_env(True, "u")})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "true"


def test_auth_config_names_the_auth_database_default_permission_and_cache():
    ini = auth_config_ini("READ", 300, postgres_uri("mlflow-tracking-dev@p.iam", "mlflow_auth"))
    assert "default_permission = READ" in ini and "auth_cache_ttl_seconds = 300" in ini
    parsed = configparser.ConfigParser()  # as MLflow reads it: `%` interpolation on
    parsed.read_string(ini)
    assert parsed["mlflow"]["database_uri"] == "postgresql+psycopg2://mlflow-tracking-dev%40p.iam@127.0.0.1:5432/mlflow_auth"
    assert "admin_password" not in ini



# --- as declared by the stacks --------------------------------------------------------------
def tracking_deployment(run):
    return run.named("mlflow-deployment")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_proxy_is_a_native_sidecar_and_the_app_is_a_main_container(stack_runs, stack):
    spec = pod_spec(tracking_deployment(stack_runs[stack]))
    assert [c["name"] for c in spec["initContainers"]] == ["cloud-sql-proxy"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["mlflow", "metrics-exporter"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_proxy_connects_to_the_stack_instance(stack_runs, stack):
    run = stack_runs[stack]
    connection = run.named("mlflow-db-instance").state["connectionName"]
    assert container(tracking_deployment(run), "cloud-sql-proxy")["args"][-1] == connection


def test_migration_job_runs_both_upgrades_behind_the_proxy(stack_runs):
    run = stack_runs["dev"]
    job = next(r for r in run.of_type("kubernetes:batch/v1:Job") if r.name == "mlflow-migrate")
    spec = pod_spec(job)
    assert spec["initContainers"][0]["name"] == "cloud-sql-proxy" and spec["restartPolicy"] == "Never"
    assert container(job, "upgrade-tracking-db")["args"] == ["db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    auth = container(job, "upgrade-auth-db")
    assert auth["command"] + auth["args"] == ["python", "-m", "mlflow.server.auth", "db", "upgrade", "--url",
                                              "$(MLFLOW_AUTH_DATABASE_URI)"]
    assert [c["name"] for c in spec["initContainers"]] == ["cloud-sql-proxy", "wait-for-database",
                                                          "upgrade-tracking-db"]
    assert [c["name"] for c in spec["containers"]] == ["upgrade-auth-db"]


def test_migration_job_first_waits_minutes_for_the_database_as_iam_propagates(stack_runs):
    job = stack_runs["dev"].named("mlflow-migrate")
    wait = container(job, "wait-for-database")
    assert wait["command"] + wait["args"] == ["python", "-m", "mlflow_dbwait", "--url-env",
                                              "MLFLOW_BACKEND_STORE_URI", "--timeout", "420"]
    assert env_of(wait)["MLFLOW_BACKEND_STORE_URI"] == env_of(container(job, "upgrade-tracking-db"))["MLFLOW_BACKEND_STORE_URI"]
    assert 420 < job.inputs["spec"]["activeDeadlineSeconds"]  # the wait fits, with the migrations after it
    tracking_stage = DOCKERFILE.read_text().split("AS tracking", 1)[1].split("FROM ", 1)[0]
    assert "COPY mlflow_dbwait /opt/mlflow-extras/mlflow_dbwait" in tracking_stage  # the module is in the image


def test_migration_job_precedes_the_deployment(stack_runs):
    run = stack_runs["dev"]
    job = run.named("mlflow-migrate")
    assert job.urn in tracking_deployment(run).dependencies


def test_migration_job_is_named_per_image_version(run_stack_with):
    digest_a, digest_b = "a" * 64, "b" * 64
    image = "us-docker.pkg.dev/p/r/mlflow-tracking@sha256:"
    first = run_stack_with("dev", {"tracking.image": image + digest_a}).named("mlflow-migrate")
    second = run_stack_with("dev", {"tracking.image": image + digest_b}).named("mlflow-migrate")
    assert first.inputs["metadata"]["name"] == "mlflow-migrate-aaaaaaaaaaaa"
    assert second.inputs["metadata"]["name"] == "mlflow-migrate-bbbbbbbbbbbb"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_secrets_are_referenced_never_inlined(stack_runs, stack):
    run = stack_runs[stack]
    secrets = [plain(r.state["result"]) for r in run.of_type("random:index/randomPassword:RandomPassword")]
    for record in run.of_type("kubernetes:apps/v1:Deployment") + run.of_type("kubernetes:batch/v1:Job"):
        text = repr(record.inputs)
        assert not any(secret in text for secret in secrets), f"{record.urn} inlines a secret"
        for spec in containers(record):
            for entry in spec.get("env", []):
                if entry["name"].endswith("URI") and "value" in entry:  # database URIs hold no password
                    assert urlsplit(entry["value"]).password is None, f"{record.urn}: {entry['name']}"
                    continue
                assert not any(word in entry["name"] for word in ("PASSWORD", "SECRET")) \
                    or entry["name"].endswith("_FILE") and entry["value"].startswith("/etc/mlflow-secrets/"), \
                    f"{record.urn}: {entry}"


POSTGRES_URI = re.compile(r"postgresql(?:\+\w+)?://[^\s'\"]+")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_database_password_exists_in_any_resource_or_uri(stack_runs, stack):
    run = stack_runs[stack]
    users = run.of_type("gcp:sql/user:User")
    assert users and all(user.inputs["type"] == "CLOUD_IAM_SERVICE_ACCOUNT" and "password" not in user.inputs
                         for user in users)
    uris = [uri for record in run.resources for uri in POSTGRES_URI.findall(json.dumps(record.inputs))]
    assert len(uris) >= 4 and all(urlsplit(uri.replace("%%", "%")).password is None for uri in uris), uris
    flags = {flag["name"]: flag["value"]
             for flag in run.named("mlflow-db-instance").inputs["settings"]["databaseFlags"]}
    assert flags["cloudsql.iam_authentication"] == "on"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_proxy_logs_its_pod_identity_in(stack_runs, stack):
    run = stack_runs[stack]
    proxies = [spec for record in run.of_type("kubernetes:apps/v1:Deployment") + run.of_type("kubernetes:batch/v1:Job")
               for spec in pod_spec(record).get("initContainers", []) if spec["name"] == "cloud-sql-proxy"]
    assert len(proxies) == 3 and all("--auto-iam-authn" in spec["args"] for spec in proxies)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_the_database_admin_identity_holds_cloud_sqls_admin_role(stack_runs, stack):
    run = stack_runs[stack]
    tracking, admin = run.named("mlflow-tracking-db-user"), run.named("mlflow-db-admin-user")
    assert "databaseRoles" not in tracking.inputs and admin.inputs["databaseRoles"] == ["cloudsqlsuperuser"]
    for identity in ("mlflow-identity", "mlflow-db-admin-identity"):  # reach the instance, log in as IAM users
        roles = {r.inputs["role"] for r in run.of_type("gcp:projects/iAMMember:IAMMember")
                 if r.name.startswith(f"{identity}-")}
        assert {"roles/cloudsql.client", "roles/cloudsql.instanceUser"} <= roles, identity
    grants = run.named("mlflow-db-grants")
    job = container(grants, "grant-database-privileges")
    assert pod_spec(grants)["serviceAccountName"] == "mlflow-db-admin"
    assert job["args"][job["args"].index("--grantee") + 1] == tracking.inputs["name"]
    assert unquote(urlsplit(job["env"][0]["value"]).username) == admin.inputs["name"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_grants_job_fails_at_once_when_the_tracking_user_is_a_superuser(stack_runs, stack):
    # mlflow_dbgrant exits 3 for a cloudsqlsuperuser grantee: retrying cannot mend it, only an operator.
    grants = run_named_job(stack_runs[stack], "mlflow-db-grants")
    assert grants["podFailurePolicy"] == {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": "grant-database-privileges", "operator": "In", "values": [3]}}]}
    assert grants["template"]["spec"]["restartPolicy"] == "Never", "podFailurePolicy refuses OnFailure"
    assert "grant-database-privileges" in [c["name"] for c in grants["template"]["spec"]["containers"]]


def run_named_job(run, name: str) -> dict:
    return plain(run.named(name).inputs["spec"])


def test_grants_precede_the_migration_and_wait_for_both_database_users(stack_runs):
    run = stack_runs["dev"]
    grants = run.named("mlflow-db-grants")
    assert grants.urn in run.named("mlflow-migrate").dependencies
    assert run.named("mlflow-db-admin-user").urn in grants.dependencies
    assert run.named("mlflow-tracking-db-user").urn in run.named("mlflow-migrate").dependencies  # through its URIs


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_server_env_and_args_follow_config(stack_runs, stack):
    run = stack_runs[stack]
    app = container(tracking_deployment(run), "mlflow")
    env = env_of(app)
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY_FILE"]["value"] == "/etc/mlflow-secrets/flask-secret-key"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"]["value"] == "/etc/mlflow-secrets/admin-password"
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" not in env and "MLFLOW_AUTH_ADMIN_PASSWORD" not in env
    assert app["command"] == ["python"]
    assert app["args"][:7] == ["-m", "mlflow_fileenv", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                               "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "--", "mlflow"]
    # every replica decrypts the webhooks any of them stored, and delivers to the in-cluster receiver
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY_FILE"]["value"] == "/etc/mlflow-secrets/webhook-encryption-key"
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]["value"] == "true"
    assert "http" in env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"]["value"].split(",")
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].endswith(AUTH_CONFIG_FILE)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    bucket = run.named("mlflow-artifacts-bucket").inputs["name"]
    assert app["args"][app["args"].index("--artifacts-destination") + 1] == f"gs://{bucket}/artifacts"
    assert app["startupProbe"]["httpGet"]["path"] == "/health"


def test_workers_and_replicas_follow_config(run_stack_with):
    deployment = tracking_deployment(run_stack_with("dev", {"tracking.workers": "3", "tracking.replicas": "4"}))
    app = container(deployment, "mlflow")
    assert app["args"][app["args"].index("--workers") + 1] == "3"
    assert deployment.inputs["spec"]["replicas"] == 4


def test_rolling_update_never_drops_below_desired(stack_runs):
    strategy = tracking_deployment(stack_runs["prod"]).inputs["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_pdb_only_with_more_than_one_replica(stack_runs):
    assert [r.name for r in stack_runs["prod"].of_type("kubernetes:policy/v1:PodDisruptionBudget")
            if r.name == "mlflow-pdb"] == ["mlflow-pdb"]
    assert not [r for r in stack_runs["dev"].resources if r.name == "mlflow-pdb"]


def test_prod_exposes_tracking_to_the_serving_cluster_through_an_internal_lb(stack_runs):
    run = stack_runs["prod"]
    lb = run.named("mlflow-internal-lb")
    assert lb.inputs["metadata"]["annotations"] == {"networking.gke.io/load-balancer-type": "Internal"}
    assert lb.inputs["spec"]["type"] == "LoadBalancer"
    reserved = next(r for r in run.of_type("gcp:compute/address:Address") if r.name.endswith("-tracking-ilb-ip"))
    assert lb.inputs["spec"]["loadBalancerIP"] == reserved.inputs["address"]
    assert reserved.inputs["addressType"] == "INTERNAL"
    assert not [r for r in stack_runs["dev"].resources if r.name == "mlflow-internal-lb"]


def test_prod_ingress_uses_a_managed_certificate_and_health_checks_health(stack_runs):
    run = stack_runs["prod"]
    certificate = run.named("mlflow-certificate")
    assert certificate.inputs["apiVersion"] == "networking.gke.io/v1"
    assert certificate.inputs["spec"]["domains"] == ["mlflow.example.com"]
    assert run.named("mlflow-backend-config").inputs["spec"]["healthCheck"]["requestPath"] == "/health"
    ingress = run.named("mlflow-ingress")
    annotations = ingress.inputs["metadata"]["annotations"]
    assert annotations["networking.gke.io/managed-certificates"] == "mlflow-tracking"
    assert annotations["kubernetes.io/ingress.allow-http"] == "false"
    service = run.named("mlflow-service").inputs["metadata"]["annotations"]
    assert "cloud.google.com/backend-config" in service
    args = container(tracking_deployment(run), "mlflow")["args"]
    assert args[args.index("--cors-allowed-origins") + 1] == "https://mlflow.example.com"  # the UI's origin


def test_network_policy_admits_namespace_serving_and_load_balancers_only(stack_runs):
    policy = stack_runs["prod"].named("mlflow-netpol").inputs["spec"]
    peers = policy["ingress"][0]["from"]
    assert {"podSelector": {}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow-serving"}}} in peers
    assert {"ipBlock": {"cidr": "130.211.0.0/22"}} in peers
    assert {"ipBlock": {"cidr": "10.24.0.0/16"}} in peers  # the serving cluster's pods
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5000}]


def test_tracking_identity_reads_and_writes_only_the_artifact_bucket(stack_runs):
    run = stack_runs["dev"]
    grant = run.named("mlflow-identity-bucket-0")
    assert grant.inputs["bucket"] == settings_from_values(
        {"gcp:project": "my-mlflow-dev", "mlflow-platform:environment": "dev"}).bucket_name
    assert run.named("mlflow-identity-ksa").inputs["metadata"]["namespace"] == "mlflow"
    assert pod_spec(tracking_deployment(run))["serviceAccountName"] == "mlflow-tracking"


def test_managed_prometheus_scrapes_the_exporter_and_the_proxy_without_credentials(stack_runs):
    run = stack_runs["dev"]
    monitoring = run.named("mlflow-pod-monitoring").inputs
    assert monitoring["apiVersion"] == "monitoring.googleapis.com/v1"
    assert monitoring["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"},
                                               {"port": "proxy-http", "path": "/metrics", "interval": "30s"}]
    exporter = container(tracking_deployment(run), "metrics-exporter")
    app = container(tracking_deployment(run), "mlflow")
    # the exporter reads the directory the server writes its multiprocess metrics to, on the shared /tmp
    assert exporter["args"][exporter["args"].index("--dir") + 1] == app["args"][app["args"].index("--expose-prometheus") + 1]
    assert {"name": "tmp", "mountPath": "/tmp"} in exporter["volumeMounts"]
    assert "--prometheus" in container(tracking_deployment(run), "cloud-sql-proxy")["args"]


def test_network_policy_admits_only_the_collector_to_the_metrics_ports(stack_runs):
    rules = stack_runs["dev"].named("mlflow-netpol").inputs["spec"]["ingress"]
    metrics_rule = next(rule for rule in rules if {"protocol": "TCP", "port": 9102} in rule["ports"])
    assert metrics_rule["ports"] == [{"protocol": "TCP", "port": 9102}, {"protocol": "TCP", "port": 9801}]
    # Standard clusters run the collectors in gmp-system, Autopilot in gke-gmp-system
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
                                    for ns in ("gmp-system", "gke-gmp-system")]


def test_server_logs_json_lines_through_the_mounted_logging_config(stack_runs):
    app = container(tracking_deployment(stack_runs["dev"]), "mlflow")
    assert app["args"][app["args"].index("--uvicorn-opts") + 1].startswith(
        "--log-config /etc/mlflow-logging/logging.json ")
    assert {"name": "logging", "mountPath": "/etc/mlflow-logging", "readOnly": True} in app["volumeMounts"]
