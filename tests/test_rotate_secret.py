"""`make rotate-secret`: the order of its steps (fakes), its Secret Manager and Kubernetes calls, and
the rehearsal of all three rotations on the local platform (slow): after each, the new value works,
the old one fails, and serving answers every request meanwhile."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from infra.secrets import (
    ADMIN_PASSWORD, DRIFT_PASSWORD, FLASK_SECRET_KEY, PAYLOAD_HASH_KEY, SECRET_LENGTHS, SERVING_PASSWORD,
)
from tools.local.processes import http
from tools.local.secretmanager import LocalSecretManager
from tools.ops.interfaces import RolloutError, generate_password
from tools.ops.local import PlatformRoller
from tools.ops.rollout import RESTARTED_AT_ANNOTATION, ClusterRoller
from tools.ops.rotate_secret import (
    EXIT_USAGE, NOT_ROTATABLE, ROTATIONS, RotationError, parse_args, rotate, runtime_password_setter,
)
from tools.ops.secret_manager import CloudSecretManager, SecretManagerError
from tools.venvs import Venv

SECRETS = {ADMIN_PASSWORD: "admin-id", FLASK_SECRET_KEY: "flask-id", SERVING_PASSWORD: "serving-id",
           PAYLOAD_HASH_KEY: "payload-key-id", DRIFT_PASSWORD: "drift-id"}


class Recorder:
    def __init__(self, store: LocalSecretManager, fail_add: bool = False, fail_roll: bool = False):
        self.store, self.calls = store, []
        self.fail_add, self.fail_roll = fail_add, fail_roll
        original_add = store.add_version

        def add_version(secret, value):
            self.calls.append(("add", secret))
            if self.fail_add:
                raise OSError("quota exceeded")
            return original_add(secret, value)
        store.add_version = add_version

    def set_password(self, user, password, admin_password):
        self.calls.append(("set", user, password, admin_password))

    def restart(self, component):
        self.calls.append(("roll", component))
        if self.fail_roll:
            raise RolloutError("not ready within 600s")
        return f"{component} rolled"


@pytest.fixture
def store(tmp_path) -> LocalSecretManager:
    store = LocalSecretManager(tmp_path / "sm")
    for name, secret in SECRETS.items():
        store.add_version(secret, f"old-{name}")
    return store


def run(store, recorder, name):
    return rotate(name, store=store, secrets=SECRETS, set_password=recorder.set_password, restarter=recorder,
                  generate=lambda length: f"new-{length}")


def test_a_user_password_changes_in_mlflow_before_the_new_version_is_current_then_pods_roll(store):
    recorder = Recorder(store)
    assert run(store, recorder, SERVING_PASSWORD) == 2
    assert recorder.calls == [("set", "mlflow-serving", "new-32", "old-admin-password"), ("add", "serving-id"),
                              ("roll", "serving")]
    assert store.access("serving-id") == "new-32"
    assert store.enabled_versions("serving-id") == [2], "the old value must no longer be readable"


def test_the_admin_password_rolls_tracking_and_the_flask_key_touches_no_user(store):
    recorder = Recorder(store)
    run(store, recorder, ADMIN_PASSWORD)
    assert recorder.calls == [("set", "admin", "new-32", "old-admin-password"), ("add", "admin-id"),
                              ("roll", "tracking")]
    recorder.calls.clear()
    run(store, recorder, FLASK_SECRET_KEY)
    assert recorder.calls == [("add", "flask-id"), ("roll", "tracking")]
    assert store.access("flask-id") == "new-64"


def test_the_drift_password_changes_in_mlflow_then_becomes_current_with_nothing_to_roll(store):
    # The drift job's pods belong to a CronJob: each run mounts `latest`, none runs on the old value for long.
    recorder = Recorder(store)
    assert run(store, recorder, DRIFT_PASSWORD) == 2
    assert recorder.calls == [("set", "mlflow-drift", "new-32", "old-admin-password"), ("add", "drift-id")]
    assert store.enabled_versions("drift-id") == [2]


def test_a_failed_new_version_puts_the_admin_password_back_authenticating_with_the_new_one(store):
    recorder = Recorder(store, fail_add=True)
    with pytest.raises(RotationError, match="adding a version to admin-id failed, nothing changed: quota exceeded"):
        run(store, recorder, ADMIN_PASSWORD)
    assert recorder.calls[-1] == ("set", "admin", "old-admin-password", "new-32")
    assert store.access("admin-id") == "old-admin-password" and store.enabled_versions("admin-id") == [1]


def test_a_failed_rollout_keeps_the_older_versions_enabled_and_says_so(store):
    recorder = Recorder(store, fail_roll=True)
    with pytest.raises(RotationError, match="version 2 of serving-id is current but serving did not roll"):
        run(store, recorder, SERVING_PASSWORD)
    assert store.enabled_versions("serving-id") == [1, 2]


def test_every_application_secret_has_a_rotation_and_a_bad_name_lists_them(capsys):
    assert set(ROTATIONS) == set(SECRETS)
    with pytest.raises(SystemExit):
        parse_args(["--name", "db-password"])
    assert "admin-password" in capsys.readouterr().err


def test_the_webhook_secrets_are_refused_with_the_reason_and_what_to_do(capsys):
    # every application secret is either rotated by this command or refused by it, saying why
    assert set(ROTATIONS) | set(NOT_ROTATABLE) == set(SECRET_LENGTHS)
    with pytest.raises(SystemExit) as refused:
        parse_args(["--name", "webhook-encryption-key"])
    assert refused.value.code == EXIT_USAGE
    assert "not rotatable: tracking decrypts the stored webhook's secret" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--name", "webhook-secret"])
    assert "then `pulumi up` rolls the receiver" in capsys.readouterr().err


def test_password_setter_without_the_runtime_virtualenv_says_how_to_build_it(tmp_path):
    setter = runtime_password_setter("http://127.0.0.1:1", Venv(tmp_path / "no-venv", "runtime"))
    with pytest.raises(RotationError, match="make runtime"):
        setter("admin", "p", "a")


class FakeSecretManagerClient:
    def __init__(self):
        self.requests = []

    def access_secret_version(self, request):
        self.requests.append(("access", request))
        return SimpleNamespace(payload=SimpleNamespace(data=b"value"))

    def add_secret_version(self, request):
        self.requests.append(("add", request))
        return SimpleNamespace(name=f"{request['parent']}/versions/7")

    def list_secret_versions(self, request):
        self.requests.append(("list", request))
        return [SimpleNamespace(name=f"{request['parent']}/versions/{n}") for n in (6, 5)]

    def disable_secret_version(self, request):
        raise PermissionError("403 Permission 'secretmanager.versions.disable' denied")


def test_cloud_secret_manager_speaks_the_client_librarys_requests():
    client = FakeSecretManagerClient()
    manager = CloudSecretManager(client)
    secret = "projects/p/secrets/mlflow-admin-password"
    assert manager.access(secret) == "value"
    assert manager.add_version(secret, "new") == 7
    assert manager.enabled_versions(secret) == [5, 6]
    assert client.requests == [("access", {"name": f"{secret}/versions/latest"}),
                               ("add", {"parent": secret, "payload": {"data": b"new"}}),
                               ("list", {"parent": secret, "filter": "state:ENABLED"})]
    with pytest.raises(SecretManagerError, match=r"disable_secret_version on .*/versions/5 failed: PermissionError"):
        manager.disable(secret, 5)


def test_cluster_restart_patches_restarted_at_and_waits_for_the_rollout():
    patches = []
    ready = SimpleNamespace(metadata=SimpleNamespace(generation=2),
                            spec=SimpleNamespace(replicas=1),
                            status=SimpleNamespace(observed_generation=2, conditions=[], updated_replicas=1, replicas=1,
                                                   available_replicas=1))

    class Api:
        def patch_namespaced_deployment(self, name, namespace, body, **kwargs):
            patches.append((name, namespace, body))

        def read_namespaced_deployment_status(self, name, namespace):
            return ready

    roller = ClusterRoller(Api(), "mlflow", "mlflow-tracking", sleep=lambda s: None)
    assert roller.restart(now=0).startswith("deployment/mlflow-tracking -n mlflow restarted: 1 replicas")
    assert patches == [("mlflow-tracking", "mlflow", {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: "1970-01-01T00:00:00Z"}}}}})]


# ============================ rehearsal on the local platform ============================
IRIS_ROW = {"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                                            "petal width (cm)"], "data": [[5.1, 3.5, 1.4, 0.2]]}}


@pytest.fixture(scope="module")
def platform(request):
    from tools.local.testing import scratch_platform

    with scratch_platform(request, "mlflow-rotate-") as local:
        local.start()
        yield local


class ServingLoad:
    """Requests to serving through its Service (the balancer) until stopped; counts what failed."""

    def __init__(self, url: str):
        self.url, self.answered, self.failed = url, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                status = http("POST", f"{self.url}/invocations", json_body=IRIS_ROW, timeout=10).status
            except OSError as err:
                status = repr(err)
            self.answered += 1
            if status != 200:
                self.failed.append(status)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def login(platform, user: str, password: str) -> int:
    return http("GET", f"{platform.tracking_url}/api/2.0/mlflow/experiments/search?max_results=1",
                auth=(user, password)).status


def process_env(pid: int) -> dict[str, str]:
    """The environment mlflow_fileenv exec'd the server with (same pid)."""
    return psutil.Process(pid).environ()


def rotate_on(platform, name: str) -> int:
    return rotate(name, store=platform.secret_manager, secrets=platform.secret_ids,
                  set_password=runtime_password_setter(platform.tracking_url, platform.runtime),
                  restarter=PlatformRoller(platform), generate=generate_password)


@pytest.mark.slow
def test_rotating_each_secret_locally_new_works_old_fails_serving_keeps_answering(platform):
    old_admin, old_serving = platform.admin_password, platform.serving_password
    old_flask = platform.secret_value(FLASK_SECRET_KEY)
    assert process_env(platform.tracking.pid)["MLFLOW_FLASK_SERVER_SECRET_KEY"] == old_flask
    rotated = (SERVING_PASSWORD, ADMIN_PASSWORD, FLASK_SECRET_KEY)
    with ServingLoad(platform.serving_url) as load:
        for name in rotated:
            assert rotate_on(platform, name) == 2, name
    assert load.answered > 20 and load.failed == [], f"serving failed {len(load.failed)}: {load.failed[:5]}"

    assert platform.admin_password != old_admin
    assert login(platform, "admin", platform.admin_password) == 200
    assert login(platform, "admin", old_admin) == 401
    assert platform.serving_password != old_serving
    assert login(platform, "mlflow-serving", platform.serving_password) == 200
    assert login(platform, "mlflow-serving", old_serving) == 401
    # The rolled serving pod loaded its model with the new password; the tracking pod runs with the new key.
    assert http("POST", f"{platform.serving_url}/invocations", json_body=IRIS_ROW).status == 200
    env = process_env(platform.tracking.pid)
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == platform.secret_value(FLASK_SECRET_KEY) != old_flask
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE" not in env
    for name, secret in platform.secret_ids.items():
        if name in rotated:
            assert platform.secret_manager.enabled_versions(secret) == [2], f"{name}: the old version is still readable"
        else:
            assert platform.secret_manager.enabled_versions(secret) == [1], f"{name}: rotated without being asked"
    platform.write_password_files()
    assert platform.admin_password_file.read_text().strip() == platform.admin_password
