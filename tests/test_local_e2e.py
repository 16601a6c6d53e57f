"""Testing layer 5: the rendered manifests (plan/dev/k8s/) run for real on this machine.

Unit tests (no processes) pin down the complete list of what `make local` changes in a rendered
container. The end-to-end tests run one LocalPlatform for the module, of the dev stack rendered
with an ingress host, brought up as a first `pulumi up` would (Postgres, GCS emulator, migrations
while the database still refuses, tracking with basic auth, serving user, serving before any
model, then the demo model): they check that rehearsal, auth, CORS, logging, artifact storage, the
registry, serving, permissions, migrations and restarts.
Missing Postgres binaries or runtime virtualenv FAIL the tests (CI installs both).
"""

from __future__ import annotations

import configparser
import copy
import json
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.database import AUTH_DATABASE, DATABASE_ADMIN_ROLE, TRACKING_DATABASE
from infra.secrets import DRIFT_PASSWORD
from k8s.serving import ENV_CACHE_PATH, ENV_VOLUME, SERVING_PORT
from k8s.tracking import TRACKING_PORT, auth_config_ini
from tools.local.container import Bind
from tools.local.images import ImageRoot
from tools.local.localize import LocalizeError, LocalSite, expand_vars, localize_container
from tools.local.localplatform import LocalPlatform, parse_auth_settings, refuse_secrets
from tools.local.manifests import Manifests
from tools.local.postgres import find_bin_dir
from tools.local.testing import built_image_containers
from tools.local.processes import HttpResponse, LocalPlatformError, descendants, http, pids_alive
from tools.offline.plan import write_plan
from tools.offline.render import render
from tools.offline.stack import run_stack
from tools.ops.backup import pg_env, query_command, run

CHECKS = Path(__file__).resolve().parent / "local_client_checks.py"
# What a built image's config gives every container (the fake images of the unit tests).
IMAGE_CONFIG_ENV = {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp",
                    "PYTHONPATH": "/opt/mlflow-extras", "PYTHONUNBUFFERED": "1"}
PROCESS_ENV = set(IMAGE_CONFIG_ENV)


def fake_image(rootfs: Path) -> ImageRoot:
    return ImageRoot("localhost/mlflow-x:0", rootfs, {"Env": [f"{k}={v}" for k, v in IMAGE_CONFIG_ENV.items()],
                                                       "WorkingDir": "/tmp", "User": "10001:10001"})


# ============================ unit: the substitution, no processes ============================
@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> LocalPlatform:
    """A platform that is never started: real manifests, a stub runtime virtualenv, fake images."""
    venv = tmp_path_factory.mktemp("stub-venv")
    (venv / "bin").mkdir()
    for name in ("python", "mlflow", "gcp-storage-emulator"):
        (venv / "bin" / name).touch()
    rootfs = tmp_path_factory.mktemp("rootfs")
    return LocalPlatform(tmp_path_factory.mktemp("work"), runtime_venv=venv, images=lambda image: fake_image(rootfs))


def argv_diff(rendered: list[str], local: list[str]) -> dict[str, tuple[str, str]]:
    """Changed argv entries, keyed by the flag before them (or their index)."""
    assert len(rendered) == len(local), (rendered, local)
    return {(rendered[i - 1] if i and rendered[i - 1].startswith("-") else f"argv[{i}]"): (a, b)
            for i, (a, b) in enumerate(zip(rendered, local)) if a != b}


def check_env(spec: dict, env: dict[str, str], expected_changes: dict[str, str], extra: set[str] = frozenset()):
    """Every manifest env var is present; literal values unchanged unless listed; nothing else added."""
    manifest = {e["name"]: e for e in spec["env"]}
    assert set(env) == set(manifest) | PROCESS_ENV | set(extra)
    for name, entry in manifest.items():
        if name in expected_changes:
            assert env[name] == expected_changes[name], name
        else:
            assert "value" in entry, f"{name} comes from a secret: its local value must be checked"
            assert env[name] == entry["value"], name


def test_tracking_container_changes_only_cluster_specifics(offline):
    p, spec = offline, offline.tracking_container
    command = p.tracking_command()
    pod = p.workdir / "pods" / "tracking"
    allowed = spec["args"][spec["args"].index("--allowed-hosts") + 1]
    assert argv_diff(spec["command"] + spec["args"], command.container_argv) == {
        "--host": ("0.0.0.0", "127.0.0.1"),
        "--port": (str(TRACKING_PORT), str(p.tracking_port)),
        # the Host headers clients send to the pod and through the local load balancer (the Service)
        "--allowed-hosts": (allowed, f"{allowed},127.0.0.1:{p.tracking_port},"
                                     f"127.0.0.1:{p.balancer.backends['tracking'].listen_port}"),
    }
    check_env(spec, command.env, {"MLFLOW_BACKEND_STORE_URI": p.database_uri(TRACKING_DATABASE)},
              extra={"STORAGE_EMULATOR_HOST"})
    assert command.env["STORAGE_EMULATOR_HOST"] == f"http://127.0.0.1:{p.emulator_port}"
    # The tracking user's IAM name, and no password: the local Postgres trusts it as the proxy logs it in.
    assert p.database_uri(TRACKING_DATABASE) == (
        f"postgresql+psycopg2://mlflow-tracking-dev%40my-mlflow-dev.iam@127.0.0.1:{p.postgres_port}/mlflow")
    # The image's HOME; the pod's volumes at their mount paths, only the emptyDir writable.
    assert command.env["HOME"] == "/tmp" and command.cwd == pod / "tmp"
    assert command.binds == [Bind(pod / "tmp", "/tmp", writable=True),
                             Bind(pod / "auth-config", "/etc/mlflow-auth"),
                             Bind(pod / "app-secrets", "/etc/mlflow-secrets"),
                             Bind(pod / "logging", "/etc/mlflow-logging")]
    assert command.fs_group == 10001
    assert command.argv[-len(command.container_argv):] == command.container_argv
    assert "10001:10001" in command.argv and str(command.rootfs) in command.argv


def test_tracking_auth_config_is_the_clusters_with_the_local_database(offline):
    command = offline.tracking_command()
    ini_path = offline.workdir / "pods" / "tracking" / "auth-config" / "basic_auth.ini"
    logging_config = offline.workdir / "pods" / "tracking" / "logging" / "logging.json"
    secrets = offline.workdir / "pods" / "tracking" / "app-secrets"
    assert set(command.files) == {ini_path, logging_config, secrets / "admin-password", secrets / "flask-secret-key",
                                  secrets / "webhook-encryption-key"}
    assert command.files[secrets / "admin-password"] == (offline.admin_password, 0o600)
    assert command.files[secrets / "flask-secret-key"] == (offline.credentials.flask_secret_key, 0o600)
    text, mode = command.files[ini_path]
    assert mode == 0o644  # a ConfigMap: no credential in it
    p = offline
    assert text == auth_config_ini(p.default_permission, p.auth_cache_ttl, p.database_uri(AUTH_DATABASE))
    parsed = configparser.ConfigParser()
    parsed.read_string(text)
    assert dict(parsed["mlflow"]) == {
        "default_permission": p.default_permission, "database_uri": p.database_uri(AUTH_DATABASE),
        "admin_username": "admin", "auth_cache_ttl_seconds": str(p.auth_cache_ttl),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }


def test_serving_container_changes_only_cluster_specifics(offline):
    p, spec = offline, offline.serving_container
    command = p.serving_command()
    assert argv_diff(spec["command"] + spec["args"], command.container_argv) == {
        "--host": ("0.0.0.0", "127.0.0.1"),
        "--port": (str(SERVING_PORT), str(p.serving_port)),
        # the cluster's Artifact Registry -> the index this machine reaches
        "--package-index": ("https://us-central1-python.pkg.dev/my-mlflow-dev/mlflow-pypi/simple/", ""),
    }
    check_env(spec, command.env, {"MLFLOW_TRACKING_URI": p.tracking_url})  # the Service: the local load balancer
    assert command.env["PYTHONPATH"] == "/opt/mlflow-extras"  # the image's
    password_file = p.workdir / "pods" / "serving" / "app-secrets" / "serving-password"
    key_file = p.workdir / "pods" / "serving" / "app-secrets" / "payload-hash-key"
    assert set(command.files) == {p.workdir / "pods" / "serving" / "logging" / "logging.json", password_file, key_file}
    assert command.files[password_file] == (p.serving_password, 0o600)
    assert command.files[key_file] == (p.secret_value("payload-hash-key"), 0o600)  # from the Secret Manager stand-in
    assert Bind(p.workdir / "pods" / "serving" / ENV_VOLUME, ENV_CACHE_PATH, writable=True) in command.binds


def test_migration_job_waits_then_runs_both_upgrades_in_order_against_local_postgres(offline):
    p = offline
    commands = p.job_commands(p.migration_job, "migrate")
    assert [spec["name"] for spec, _ in commands] == ["wait-for-database", "upgrade-tracking-db", "upgrade-auth-db"]
    (wait_spec, wait), (tracking_spec, tracking), (auth_spec, auth) = commands
    assert argv_diff(wait_spec["command"] + wait_spec["args"], wait.container_argv) == {}
    check_env(wait_spec, wait.env, {"MLFLOW_BACKEND_STORE_URI": p.database_uri(TRACKING_DATABASE)})
    assert argv_diff(tracking_spec["command"] + tracking_spec["args"], tracking.container_argv) == {
        "argv[3]": ("$(MLFLOW_BACKEND_STORE_URI)", p.database_uri(TRACKING_DATABASE)),
    }
    assert argv_diff(auth_spec["command"] + auth_spec["args"], auth.container_argv) == {
        "--url": ("$(MLFLOW_AUTH_DATABASE_URI)", p.database_uri(AUTH_DATABASE)),
    }
    check_env(tracking_spec, tracking.env, {"MLFLOW_BACKEND_STORE_URI": p.database_uri(TRACKING_DATABASE)})
    check_env(auth_spec, auth.env, {"MLFLOW_AUTH_DATABASE_URI": p.database_uri(AUTH_DATABASE)})


def test_serving_user_job_runs_the_image_s_module_against_local_tracking(offline):
    p = offline
    [(spec, command)] = p.job_commands(p.serving_user_job, "serving-user")
    secrets = p.workdir / "pods" / "serving-user" / "app-secrets"
    assert argv_diff(spec["command"] + spec["args"], command.container_argv) == {}
    assert command.container_argv[-2:] == ["-m", "mlflow_serving_user"]
    check_env(spec, command.env, {"MLFLOW_TRACKING_URI": p.tracking_url})  # the Service: the local load balancer
    assert command.files == {secrets / "admin-password": (p.admin_password, 0o600),
                             secrets / "serving-password": (p.serving_password, 0o600),
                             secrets / DRIFT_PASSWORD: (p.secret_value(DRIFT_PASSWORD), 0o600)}


def test_changes_are_listed_without_secrets(offline):
    p = offline
    commands = [p.tracking_command(), p.serving_command()]
    commands += [c for _, c in p.job_commands(p.migration_job, "m") + p.job_commands(p.serving_user_job, "s")]
    text = "\n".join(change for command in commands for change in command.changes)
    for secret in p.credentials.values():
        assert secret not in text
    assert "Cloud SQL proxy 127.0.0.1:5432 -> Postgres 127.0.0.1:" in text
    assert "--allowed-hosts: appended 127.0.0.1:" in text


def _site(tmp_path: Path, **overrides) -> LocalSite:
    values = dict(image=fake_image(tmp_path / "rootfs"), volume_root=tmp_path / "pod", secrets={("s", "k"): "sv"},
                  services={"mlflow-tracking.mlflow.svc.cluster.local:5000": "127.0.0.1:1234"}, listen_port=4321)
    values.update(overrides)
    return LocalSite(**values)


TMP = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def test_everything_else_stays_as_rendered(tmp_path):
    spec = {"name": "x", "command": ["mlflow"], "volumeMounts": [TMP_MOUNT],
            "args": ["--workers", "1", "--bind", "0.0.0.0", "--url", "http://example.com:5000", "/etc/other",
                     "--host", "10.0.0.1", "$(A)|$$(A)|$(UNDEFINED)", "127.0.0.1:5432"],
            "env": [{"name": "A", "value": "http://mlflow-tracking.mlflow.svc.cluster.local:5000/x"},
                    {"name": "B", "value": "postgresql://u@127.0.0.1:5432/db"},
                    {"name": "C", "value": "http://other.svc.cluster.local:5000"}]}
    command = localize_container(spec, [TMP], _site(tmp_path))
    assert command.container_argv == ["mlflow", "--workers", "1", "--bind", "0.0.0.0", "--url",
                            "http://example.com:5000", "/etc/other", "--host", "10.0.0.1",
                            "http://127.0.0.1:1234/x|$(A)|$(UNDEFINED)", "127.0.0.1:5432"]
    # no proxy sidecar in this pod: its addresses are nobody's business
    assert {k: command.env[k] for k in "ABC"} == {"A": "http://127.0.0.1:1234/x",
                                                 "B": "postgresql://u@127.0.0.1:5432/db",
                                                 "C": "http://other.svc.cluster.local:5000"}


def test_proxy_address_only_in_values(tmp_path):
    spec = {"name": "x", "command": ["mlflow"], "volumeMounts": [TMP_MOUNT], "args": ["127.0.0.1:5432"],
            "env": [{"name": "URI", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    site = _site(tmp_path, secrets={("s", "k"): "postgresql+psycopg2://u:p@127.0.0.1:5432/db"},
                 proxy_address="127.0.0.1:5432", postgres_address="127.0.0.1:6543")
    command = localize_container(spec, [TMP], site)
    assert command.env["URI"] == "postgresql+psycopg2://u:p@127.0.0.1:6543/db"
    assert command.container_argv[1:] == ["127.0.0.1:5432"]
    assert command.secret_env == {"URI"}


def test_unknown_secret_or_volume_is_an_error(tmp_path):
    spec = {"name": "x", "command": ["mlflow"], "volumeMounts": [TMP_MOUNT],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "missing"}}}]}
    with pytest.raises(LocalizeError, match="no local value for secret s/missing"):
        localize_container(spec, [TMP], _site(tmp_path))
    with pytest.raises(LocalizeError, match="unknown volume"):
        localize_container({"name": "x", "command": ["mlflow"], "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
                           [TMP], _site(tmp_path))
    with pytest.raises(LocalizeError, match="no local port"):
        localize_container({"name": "x", "command": ["mlflow"], "args": ["--port", "1"], "volumeMounts": [TMP_MOUNT]},
                           [TMP], _site(tmp_path, listen_port=None))


CSI = {"name": "app-secrets", "csi": {"driver": "secrets-store-gke.csi.k8s.io", "readOnly": True,
                                      "volumeAttributes": {"secretProviderClass": "spc"}}}
CSI_MOUNT = {"name": "app-secrets", "mountPath": "/etc/mlflow-secrets", "readOnly": True}
SPC = {"provider": "gke", "parameters": {"secrets": '- resourceName: "projects/p/secrets/s/versions/latest"\n'
                                                    '  path: "pw"\n'}}


def test_secret_manager_volume_files_come_from_the_local_secret_manager(tmp_path):
    spec = {"name": "x", "command": ["mlflow"], "volumeMounts": [TMP_MOUNT, CSI_MOUNT],
            "env": [{"name": "PW_FILE", "value": "/etc/mlflow-secrets/pw"}]}
    site = _site(tmp_path, provider_classes={"spc": SPC},
                 secret_versions={"projects/p/secrets/s/versions/latest": "v2"})
    command = localize_container(spec, [TMP, CSI], site)
    assert command.files == {tmp_path / "pod" / "app-secrets" / "pw": ("v2", 0o600)}
    assert command.env["PW_FILE"] == "/etc/mlflow-secrets/pw"  # mounted at its path in the image
    assert Bind(tmp_path / "pod" / "app-secrets", "/etc/mlflow-secrets") in command.binds


@pytest.mark.parametrize("change, message", [
    (lambda v, s: v["csi"].update(driver="secrets-store.csi.k8s.io"), "only secrets-store-gke.csi.k8s.io"),
    (lambda v, s: v["csi"]["volumeAttributes"].update(secretProviderClass="other"), "'other' is not in the manifests"),
    (lambda v, s: s.update(provider="gcp"), "provider 'gcp'"),
    (lambda v, s: s["parameters"].update(secrets='- resourceName: "projects/p/secrets/t/versions/latest"\n  path: x\n'),
     "no local value for projects/p/secrets/t/versions/latest"),
])
def test_secret_manager_volumes_the_add_on_would_refuse_are_errors(tmp_path, change, message):
    volume, spc = copy.deepcopy(CSI), copy.deepcopy(SPC)
    change(volume, spc)
    site = _site(tmp_path, provider_classes={"spc": spc},
                 secret_versions={"projects/p/secrets/s/versions/latest": "v2"})
    with pytest.raises(LocalizeError, match=re.escape(message)):
        localize_container({"name": "x", "command": ["mlflow"], "volumeMounts": [TMP_MOUNT, CSI_MOUNT]},
                           [TMP, volume], site)


def test_expand_vars_follows_kubernetes():
    assert expand_vars("$(A)-$(B)-$$(A)-$(A", {"A": "1"}) == "1-$(B)-$(A)-$(A"


def test_a_rendered_kubernetes_secret_is_refused(offline):
    refuse_secrets(offline.manifests)  # the committed plan renders none
    with_secret = Manifests(offline.manifests.directory, offline.manifests.objects + (
        {"kind": "Secret", "metadata": {"name": "leftover", "namespace": "mlflow"}, "stringData": {"k": "v"}},))
    with pytest.raises(LocalPlatformError, match="Secret mlflow/leftover is rendered"):
        refuse_secrets(with_secret)


def test_auth_settings_come_from_the_tracking_annotation():
    deployment = Manifests.load("dev").one("Deployment", component="tracking")
    permission, ttl = parse_auth_settings(deployment)
    assert permission in ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS") and ttl >= 0
    annotated = {"spec": {"template": {"metadata": {"annotations": {"mlflow.org/auth-settings": "EDIT,ttl=60"}}}}}
    assert parse_auth_settings(annotated) == ("EDIT", 60)
    with pytest.raises(LocalPlatformError, match="auth-settings"):
        parse_auth_settings({"spec": {"template": {"metadata": {"annotations": {}}}}})


def test_missing_postgres_names_the_package(monkeypatch):
    import tools.local.postgres as postgres

    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(LocalPlatformError, match="apt-get install postgresql"):
        postgres.find_bin_dir()


def test_missing_runtime_venv_says_how_to_build_it(tmp_path):
    with pytest.raises(LocalPlatformError, match="make runtime"):
        LocalPlatform(tmp_path / "work", runtime_venv=tmp_path / "no-venv")


# ============================ end to end: one platform for the module ============================
INGRESS_HOST = "mlflow.example.com"
IRIS_ROW = {"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                            "petal width (cm)"], "data": [[5.1, 3.5, 1.4, 0.2]]}}
WAITING_ATTEMPTS = 3
SERVE_WITHIN_SECONDS = 60.0


@pytest.fixture(scope="module")
def ingress_plan(tmp_path_factory) -> Path:
    """The dev stack with an ingress host, rendered as `make plan` renders it (the committed dev
    stack has none): the same platform, plus what the UI behind an Ingress needs."""
    plan_dir = tmp_path_factory.mktemp("plan")
    run = run_stack("dev", overrides={"edge.ingressHost": INGRESS_HOST})
    write_plan(render(run), plan_dir / "dev")
    return plan_dir


@dataclass(frozen=True)
class FirstUp:
    """What the first-up rehearsal saw (see `rehearse_first_up`)."""

    platform: LocalPlatform
    migration_log: str
    """The migration Job's wait-for-database log: the database refused its first attempt."""
    attempts_while_waiting: int
    """Failed model loads serving logged before any model existed."""
    waiting: dict[str, HttpResponse]
    """/live, /ping and /invocations while waiting."""
    pids: tuple[int, int]
    """Serving's pid while waiting, and once it served."""
    seconds_to_serve: float
    """From the alias being set to the first 200 from /invocations."""


def migrate_while_the_database_refuses(local: LocalPlatform) -> str:
    """The grants and migration Jobs, started while the database refuses every connection (as the
    Cloud SQL proxy does on a new project until IAM propagates): the first to reach the database,
    the grants Job, comes back after a first failed attempt."""
    log = local.logs_dir / "db-grants-grant-database-privileges.log"
    local.postgres.stop()
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(local.run_migrations)
        deadline = time.monotonic() + 60
        while "attempt 1 failed" not in (log.read_text() if log.exists() else ""):
            if job.done() or time.monotonic() > deadline:
                local.postgres.start()
                outcome = job.exception() if job.done() else "nothing yet"
                raise AssertionError(f"the grants Job logged no failed attempt; it ended with {outcome}")
            time.sleep(0.2)
        local.postgres.start()
        job.result(timeout=300)
    return log.read_text()


def rehearse_first_up(local: LocalPlatform) -> FirstUp:
    """The first `pulumi up` on an empty project, in the program's dependency order: Postgres and
    the bucket, the migration Job, tracking, the serving-user Job, then serving, started before
    any model exists. Then the first version is registered and the alias set, as a first promotion.

    Against the old serving process (download the model, then listen) this fails: the process
    exits on the registry's answer (403 for a model not registered yet) before /live answers (a
    crash loop in the cluster), and `start_serving(ready=False)` raises with that log. Without the
    wait-for-database container `migrate_while_the_database_refuses` fails: no attempt is logged
    (`mlflow db upgrade` then rides out a short outage on MLflow's internal ~100 s retry).
    """
    local.start_storage()
    migration_log = migrate_while_the_database_refuses(local)
    local.start_tracking()
    if local.notify_deployment:
        local.start_notifications()
    local.ensure_serving_user()
    local.start_serving(ready=False)  # live; unready until a version is behind the alias
    serving, serving_log = local.serving, local.logs_dir / "serving.log"
    deadline = time.monotonic() + 60
    while serving_log.read_text().count("not loaded (attempt") < WAITING_ATTEMPTS:
        serving.check_alive()  # a crash (loop) ends the rehearsal here, with the log
        assert time.monotonic() < deadline, f"serving logged no {WAITING_ATTEMPTS} failed attempts in 60 s"
        time.sleep(0.2)
    # the waiting pod's own answers (the balancer, like a Service, sends it nothing while it is unready)
    waiting = {"live": http("GET", f"{local.serving_pod_url}/live"), "ping": http("GET", f"{local.serving_pod_url}/ping"),
               "invocations": http("POST", f"{local.serving_pod_url}/invocations", json_body=IRIS_ROW)}
    attempts = serving_log.read_text().count("not loaded (attempt")
    waiting_pid = serving.pid

    local.demo_run = local.train_model(variant="base")  # registers version 1 and sets the alias
    promoted = time.monotonic()
    local.ensure_serving_user()  # READ on the model, as `make promote` grants it
    while http("POST", f"{local.serving_url}/invocations", json_body=IRIS_ROW).status != 200:
        serving.check_alive()
        assert time.monotonic() < promoted + 2 * SERVE_WITHIN_SECONDS, "serving never served the first version"
        time.sleep(0.2)
    return FirstUp(local, migration_log, attempts, waiting, (waiting_pid, local.serving.pid),
                   time.monotonic() - promoted)


@pytest.fixture(scope="module")
def first_up(request, ingress_plan) -> FirstUp:
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-local-e2e-"))
    try:
        find_bin_dir()
        local = LocalPlatform(workdir, plan_dir=ingress_plan)
    except LocalPlatformError as err:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the local platform cannot run here: {err}", pytrace=False)
    failed_before = request.session.testsfailed
    try:
        try:
            yield rehearse_first_up(local)
            started = {pid for p in local.processes() if p.running for pid in (p.pid, *descendants(p.pid))}
        finally:
            local.stop()
        assert started and not pids_alive(started), "processes left behind"
    finally:
        # keep only the logs of a failed run
        for child in workdir.iterdir():
            if child.name != "logs" or request.session.testsfailed == failed_before:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        if request.session.testsfailed == failed_before:
            workdir.rmdir()
        else:
            print(f"\nlocal platform logs kept in {workdir / 'logs'}")


@pytest.fixture(scope="module")
def platform(first_up) -> LocalPlatform:
    return first_up.platform


def test_every_dev_container_starts_in_its_image(platform):
    assert platform.started_containers == built_image_containers(platform.manifests)


def test_first_up_grants_wait_for_the_database(first_up):
    log = first_up.migration_log
    assert "grant on mlflow: attempt 1 failed: OperationalError: " in log
    assert re.search(r"grant on mlflow: connected after [2-9] attempt\(s\)", log), log
    assert "grant on mlflow_auth: connected after 1 attempt(s)" in log


def test_first_up_serving_waits_for_a_model_unready_never_restarted_then_serves_within_60s(first_up):
    assert first_up.attempts_while_waiting >= WAITING_ATTEMPTS  # alive through several retries: no crash loop
    waiting = first_up.waiting
    assert waiting["live"].status == 200
    assert waiting["ping"].status == 503 and waiting["invocations"].status == 503
    # no model registered yet: MLflow's basic auth answers the serving user 403 (not 404) for it
    reason = waiting["ping"].json()["reason"]
    assert reason.startswith("models:/iris-classifier@champion: the model is not registered yet or the serving "
                             "user lacks READ on it (PERMISSION_DENIED: "), reason
    assert first_up.pids[1] == first_up.pids[0], "serving was restarted"
    assert first_up.seconds_to_serve < SERVE_WITHIN_SECONDS


def test_the_ui_behind_the_ingress_may_change_state_other_origins_may_not(platform):
    def create_experiment(origin: str, name: str):
        # what the browser sends through the Ingress: its Host, its Origin, the user's basic auth
        return http("POST", f"{platform.tracking_url}/ajax-api/2.0/mlflow/experiments/create",
                    json_body={"name": name}, auth=(platform.admin_username, platform.admin_password),
                    headers={"Host": INGRESS_HOST, "Origin": origin})

    allowed = create_experiment(f"https://{INGRESS_HOST}", "created-from-the-ui")
    refused = create_experiment("https://evil.example.net", "created-from-elsewhere")
    assert allowed.status == 200, allowed.body[:300]
    assert (refused.status, refused.body) == (403, b"Cross-origin request blocked")
    deleted = api(platform, "POST", "experiments/delete", {"experiment_id": allowed.json()["experiment_id"]})
    assert deleted.status == 200  # leave nothing behind for the tests after this one


def checks(platform: LocalPlatform, *args: str) -> dict:
    return platform.run_client(CHECKS, *args, user="admin", timeout=120).json()


def api(platform: LocalPlatform, method: str, path: str, body=None, auth="admin"):
    credentials = {"admin": (platform.admin_username, platform.admin_password),
                   "serving": (platform.serving_username, platform.serving_password)}.get(auth, auth)
    return http(method, f"{platform.tracking_url}/api/2.0/mlflow/{path}", json_body=body, auth=credentials)


def invocations(platform: LocalPlatform, rows: dict) -> list:
    response = http("POST", f"{platform.serving_url}/invocations",
                    json_body={"dataframe_split": {"columns": rows["columns"], "data": rows["data"]}})
    assert response.status == 200, response.body[:500]
    return response.json()["predictions"]


def test_health_is_open_and_the_api_needs_credentials(platform):
    assert http("GET", f"{platform.tracking_url}/health").status == 200
    assert api(platform, "GET", "experiments/search?max_results=1", auth=None).status == 401
    assert api(platform, "GET", "experiments/search?max_results=1",
               auth=(platform.admin_username, "wrong-" + platform.admin_password)).status == 401
    assert api(platform, "GET", "experiments/search?max_results=1", auth=("nobody", "x")).status == 401
    assert api(platform, "GET", "experiments/search?max_results=1").status == 200


def test_tracking_exposes_prometheus_metrics(platform):
    # --expose-prometheus: /metrics is behind basic auth like every route but /health
    assert http("GET", f"{platform.tracking_url}/metrics").status == 401
    response = http("GET", f"{platform.tracking_url}/metrics", auth=(platform.admin_username, platform.admin_password))
    assert response.status == 200 and b"mlflow_http_request_total" in response.body


@pytest.fixture(scope="module")
def state(platform) -> dict:
    """What the demo training logged, as the client reads it back through the server."""
    return checks(platform, "snapshot")


def test_run_logged_with_params_metrics_and_model(platform, state):
    demo = platform.demo_run
    run = state["experiments"][demo["experiment_id"]]["runs"][demo["run_id"]]
    assert run["status"] == "FINISHED"
    assert run["params"] == {"variant": "base", "max_iter": "500", "C": "1.0"}
    assert run["metrics"]["train_accuracy"] > 0.9 and run["metrics"]["n_samples"] == 150
    assert run["notes"] == "iris classifier, variant base\n"
    # through the server's artifact proxy: the client holds no GCS credentials
    assert run["artifact_uri"].startswith("mlflow-artifacts:/")
    version = state["registered_models"][platform.model_name]["versions"][demo["version"]]
    assert version["run_id"] == demo["run_id"] and version["status"] == "READY"
    assert {"MLmodel", "input_example.json", "serving_input_example.json"} <= set(version["files"])


def test_registered_model_has_the_served_alias(platform, state):
    model = state["registered_models"][platform.model_name]
    assert model["aliases"] == {platform.model_alias: platform.demo_run["version"]}


def test_artifacts_land_in_the_emulator_bucket(platform):
    assert "STORAGE_EMULATOR_HOST" not in platform.client_env()  # clients reach GCS only through tracking
    demo = platform.demo_run
    base = f"{platform.artifacts_prefix}/{demo['experiment_id']}"
    names = {item["name"] for item in platform.list_objects(base + "/")}
    notes = f"{base}/{demo['run_id']}/artifacts/notes/README.txt"
    assert notes in names
    assert platform.read_object(notes) == b"iris classifier, variant base\n"
    model_dir = f"{base}/models/{demo['model_id']}/artifacts"
    assert {f"{model_dir}/MLmodel", f"{model_dir}/input_example.json"} <= names
    assert b"signature" in platform.read_object(f"{model_dir}/MLmodel")


def test_serving_predicts_like_pyfunc(platform):
    local = checks(platform, "predict", f"models:/{platform.model_name}@{platform.model_alias}")
    assert local["model_id"] == platform.demo_run["model_id"]
    assert invocations(platform, local) == local["predictions"]
    assert len(set(local["predictions"])) == 3  # a real classifier: all three species


def test_serving_user_can_read_but_not_write(platform):
    name, demo = platform.model_name, platform.demo_run
    read = {
        "get model": api(platform, "GET", f"registered-models/get?name={name}", auth="serving"),
        "get experiment": api(platform, "GET", f"experiments/get?experiment_id={demo['experiment_id']}",
                              auth="serving"),
        "get run": api(platform, "GET", f"runs/get?run_id={demo['run_id']}", auth="serving"),
    }
    assert {op: r.status for op, r in read.items()} == {op: 200 for op in read}
    write = {
        "create run": api(platform, "POST", "runs/create", {"experiment_id": demo["experiment_id"]},
                          auth="serving"),
        "set alias": api(platform, "POST", "registered-models/alias",
                         {"name": name, "alias": "hijacked", "version": demo["version"]}, auth="serving"),
        "update model": api(platform, "PATCH", "registered-models/update",
                            {"name": name, "description": "x"}, auth="serving"),
        "delete version": api(platform, "DELETE", "model-versions/delete",
                              {"name": name, "version": demo["version"]}, auth="serving"),
        "delete model": api(platform, "DELETE", "registered-models/delete", {"name": name}, auth="serving"),
    }
    assert {op: r.status for op, r in write.items()} == {op: 403 for op in write}
    upload = http("PUT", f"{platform.tracking_url}/api/2.0/mlflow-artifacts/artifacts/{demo['experiment_id']}/"
                         f"{demo['run_id']}/artifacts/evil.txt", json_body="x",
                  auth=(platform.serving_username, platform.serving_password))
    assert upload.status == 403
    assert api(platform, "GET", f"registered-models/get?name={name}").json()["registered_model"]["name"] == name


@pytest.mark.xfail(strict=True, reason=(
    "MLflow 3.17 basic-auth lets every authenticated user create experiments and registered models "
    "(a wildcard DENY grant would also hide the served model); only workspaces gate creation"))
def test_serving_user_cannot_create_resources(platform):
    created = {
        "experiment": api(platform, "POST", "experiments/create", {"name": "by-serving-user"}, auth="serving"),
        "registered model": api(platform, "POST", "registered-models/create", {"name": "by-serving-user"},
                                auth="serving"),
    }
    # leave nothing behind for the tests after this one
    if created["experiment"].status == 200:
        experiment_id = created["experiment"].json()["experiment_id"]
        assert api(platform, "POST", "experiments/delete", {"experiment_id": experiment_id}).status == 200
    if created["registered model"].status == 200:
        assert api(platform, "DELETE", "registered-models/delete", {"name": "by-serving-user"}).status == 200
    assert {kind: r.status for kind, r in created.items()} == {kind: 403 for kind in created}


def test_migrations_twice_are_a_no_op(platform):
    before = platform.schema_snapshot()
    assert list(before[TRACKING_DATABASE]["alembic_versions"]) == ["alembic_version"]
    assert list(before[AUTH_DATABASE]["alembic_versions"]) == ["alembic_version_auth"]
    assert all(len(v) == 1 for db in before.values() for v in db["alembic_versions"].values())
    results = platform.run_migrations()
    assert [(r.container, r.returncode) for r in results] == [
        ("grant-database-privileges", 0), ("wait-for-database", 0), ("upgrade-tracking-db", 0), ("upgrade-auth-db", 0)]
    assert platform.schema_snapshot() == before
    assert http("GET", f"{platform.tracking_url}/health").status == 200


def test_the_tracking_user_may_create_tables_only_once_the_grants_job_ran(platform):
    """The tracking user logs in with no password (the local Postgres trusts IAM users as the proxy
    does) and, as on Cloud SQL, holds no privilege on a new database until the rendered grants Job ran."""
    probe = "grants_probe"
    platform.bootstrap_databases((probe,))
    create = query_command(platform.postgres.bin_dir, "127.0.0.1", platform.postgres_port, platform.tracking_db_user,
                           probe, "CREATE TABLE probe (id integer)")
    with pytest.raises(RuntimeError, match="permission denied for schema public"):
        run(create, env=pg_env(), timeout=60)
    assert DATABASE_ADMIN_ROLE not in grant_on(platform, probe)
    run(create, env=pg_env(), timeout=60)
    owner = query_command(platform.postgres.bin_dir, "127.0.0.1", platform.postgres_port, platform.tracking_db_user,
                          probe, "SELECT tableowner FROM pg_tables WHERE tablename = 'probe'")
    assert run(owner, env=pg_env(), timeout=60).strip() == platform.tracking_db_user
    # The admin role, given outside the program, fails the Job (so the migrations never run as its member)
    # until it is revoked.
    superuser = pg_env(platform.credentials.postgres_superuser_password)
    membership = f'{DATABASE_ADMIN_ROLE} TO "{platform.tracking_db_user}"'

    def as_superuser(statement: str) -> None:
        run(query_command(platform.postgres.bin_dir, "127.0.0.1", platform.postgres_port, platform.postgres.superuser,
                          probe, statement), env=superuser, timeout=60)

    as_superuser(f"GRANT {membership}")
    try:
        with pytest.raises(LocalPlatformError, match="exited with code 3") as failed:
            platform.grant_database_privileges(probe)
        assert f"{platform.tracking_db_user} is a member of {DATABASE_ADMIN_ROLE}" in str(failed.value)
        assert f"REVOKE {DATABASE_ADMIN_ROLE} FROM" in str(failed.value)
    finally:
        as_superuser(f"REVOKE {membership.replace(' TO ', ' FROM ')}")
    assert "may connect and create in schema public" in (log := grant_on(platform, probe))
    assert DATABASE_ADMIN_ROLE not in log


def grant_on(platform: LocalPlatform, database: str) -> str:
    """The rendered grants Job's commands on `database` instead of MLflow's two; the log of this run
    (the log file keeps every run)."""
    results = platform.grant_database_privileges(database)
    assert [r.returncode for r in results] == [0]
    return results[-1].log_path.read_text().rsplit("\n=== run ", 1)[-1]


def test_restarts_lose_nothing(platform):
    state = checks(platform, "snapshot")
    assert state["registered_models"][platform.model_name]["versions"]
    objects = sorted((o["name"], o.get("md5Hash")) for o in platform.list_objects())
    platform.restart_tracking()
    assert checks(platform, "snapshot") == state
    platform.restart_postgres()
    platform.restart_emulator()
    assert sorted((o["name"], o.get("md5Hash")) for o in platform.list_objects()) == objects
    assert checks(platform, "snapshot") == state  # tracking reconnected to both, artifacts readable
    rows = checks(platform, "predict", f"models:/{platform.model_name}@{platform.model_alias}")
    assert invocations(platform, rows) == rows["predictions"]


def test_moving_the_alias_and_rolling_serving_serves_the_new_version(platform):
    uri = f"models:/{platform.model_name}@{platform.model_alias}"
    old = checks(platform, "predict", uri)
    second = platform.train_model(variant="shifted")
    assert second["version"] != platform.demo_run["version"]
    platform.ensure_serving_user()  # as a promotion does
    new = checks(platform, "predict", uri)
    assert new["model_id"] == second["model_id"]
    assert all(a != b for a, b in zip(new["predictions"], old["predictions"])), "the two models must differ"
    assert invocations(platform, new) == old["predictions"]  # the running server keeps what it loaded
    platform.restart_serving()
    assert invocations(platform, new) == new["predictions"]


def test_no_secret_in_any_log(platform):
    logs = {path: path.read_text(errors="replace") for path in platform.logs_dir.rglob("*.log")}
    assert len(logs) >= 8
    leaks = {str(path): [i for i, secret in enumerate(platform.credentials.values()) if secret in text]
             for path, text in logs.items()}
    assert {path: found for path, found in leaks.items() if found} == {}



def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, labels): value} (no external parser needed)."""
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line.strip())
        if not match or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples[(match[1], labels)] = float(match[3])
    return samples


def delta(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def scrape_tracking(platform: LocalPlatform) -> dict:
    """What Managed Prometheus scrapes: the exporter sidecar, no credentials."""
    response = http("GET", platform.endpoints()["tracking_metrics_url"])
    assert response.status == 200
    return metric_samples(response.body.decode())


def test_exporter_sidecar_runs_as_rendered_in_the_tracking_pod(offline):
    spec = offline.exporter_container
    command = offline.exporter_command()
    assert Bind(offline.workdir / "pods" / "tracking" / "tmp", "/tmp", writable=True) in command.binds
    assert argv_diff(spec["command"] + spec["args"], command.container_argv) == {
        "--host": ("0.0.0.0", "127.0.0.1"),
        "--port": ("9102", str(offline.tracking_metrics_port)),
    }


def test_tracking_metrics_count_exactly_the_calls(platform):
    # The exporter reads the server's files: its own scrapes are not server requests.
    per_scrape = 0
    before = scrape_tracking(platform)
    assert api(platform, "GET", "experiments/search?max_results=1", auth=None).status == 401
    for _ in range(2):
        assert api(platform, "GET", "experiments/search?max_results=1").status == 200
    after = scrape_tracking(platform)
    assert delta(before, after, "mlflow_http_request_total", method="GET", status="401") == 1
    assert delta(before, after, "mlflow_http_request_total", method="GET", status="200") == 2 + per_scrape
    assert delta(before, after, "mlflow_http_request_duration_seconds_count", method="GET", status="200",
                 mlflow_version=next(dict(k[1])["mlflow_version"] for k in after
                                     if k[0] == "mlflow_http_request_duration_seconds_count")) == 2 + per_scrape


def test_serving_metrics_count_exactly_the_calls(platform, state):
    rows = checks(platform, "predict", f"models:/{platform.model_name}@{platform.model_alias}")
    before = metric_samples(http("GET", f"{platform.serving_url}/metrics").body.decode())
    for _ in range(3):
        invocations(platform, rows)
    assert http("POST", f"{platform.serving_url}/invocations", json_body={"bad": "payload"}).status == 400
    after = metric_samples(http("GET", f"{platform.serving_url}/metrics").body.decode())
    assert delta(before, after, "mlflow_serving_requests_total", path="/invocations", method="POST", status="200") == 3
    assert delta(before, after, "mlflow_serving_requests_total", path="/invocations", method="POST", status="400") == 1
    assert delta(before, after, "mlflow_serving_request_duration_seconds_count", path="/invocations") == 4
    assert after[("mlflow_serving_requests_in_flight", frozenset())] == 0


def test_servers_log_json_lines_with_a_severity(platform):
    for name in ("tracking", "serving"):
        lines = [line for line in (platform.logs_dir / f"{name}.log").read_text().splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(parsed) >= 3, f"{name}: no JSON log lines"
        assert all(entry.get("severity") in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for entry in parsed)
        assert any("/health" in entry.get("message", "") or "/ping" in entry.get("message", "")
                   or "Uvicorn running" in entry.get("message", "") for entry in parsed), name


def test_no_authorization_header_in_any_log(platform):
    for path in platform.logs_dir.rglob("*.log"):
        text = path.read_text(errors="replace")
        assert "Authorization" not in text and "Basic " not in text, path.name
