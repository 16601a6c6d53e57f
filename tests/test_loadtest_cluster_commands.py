"""The load-test stack's rendered commands, run for real inside the Locust image it pushes (built here
from loadtest/Dockerfile), against a local platform, as their pods run them (uid 10001, read-only root,
the results emptyDir and the Secret Manager files mounted at their paths): first the setup Job, which
makes the load test's own MLflow user as the admin; then the master and worker command lines of the
templates, which log in as that user. Only what is cluster-specific changes (LOCALIZE below); the
master's output then carries results the report can read."""

from __future__ import annotations

import os
import secrets as tokens
import subprocess
from pathlib import Path

import pytest
import requests

from k8s.secret_files import SECRETS_DIR
from loadtest.commands import MASTER_PORT, load_env
from loadtest.ensure_user import EXPERIMENT
from loadtest.pod_results import extract
from loadtest.results import endpoints, history
from loadtest.stack.templates import ADMIN_PASSWORD_FILE, PASSWORD_FILE, RESULTS_DIR, USERNAME, master_name, workers_name
from tools.local.container import Bind, container_argv, prepare
from tools.local.images import SOURCES, ImageStore
from tools.local.processes import free_port
from tools.local.testing import scratch_platform
from tests.test_loadtest_cluster import manifests

# What differs between the pod and this machine; everything else is the rendered command as is.
LOCALIZE = (
    "--host (in-cluster Service URL) -> the local platform's load-balancer URL",
    "--master-bind-host 0.0.0.0, --master-host <Service> -> 127.0.0.1; port 5557 -> a free port",
    "MLFLOW_TRACKING_URI (tracking's in-cluster URL) -> the local platform's load-balancer URL",
    f"/tmp and {RESULTS_DIR} (emptyDirs), {SECRETS_DIR} (the Secret Manager files) -> local directories bound there",
)
SECONDS, USERS = 6, 4


@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-loadtest-commands-") as local:
        local.start()
        yield local


@pytest.fixture(scope="module")
def templates() -> dict[str, dict]:
    """The dev load-test stack's CronJobs and setup Job, as committed (tests/test_loadtest_cluster.py keeps them current)."""
    return {doc["metadata"]["name"]: doc for doc in manifests("dev").values() if doc["kind"] in ("CronJob", "Job")}


@pytest.fixture(scope="module")
def locust_image():
    return ImageStore().rootfs(SOURCES["mlflow-loadtest"])


def localized(container: dict, host: str, port: int) -> tuple[list[str], dict]:
    argv = list(container["command"])
    args = container["args"]
    for index, arg in enumerate(args):
        before = args[index - 1] if index else ""
        if before == "--host":
            arg = host
        elif before in ("--master-bind-host", "--master-host"):
            arg = "127.0.0.1"
        elif before in ("--master-bind-port", "--master-port"):
            assert arg == str(MASTER_PORT)
            arg = str(port)
        argv.append(arg)
    return argv, {e["name"]: e["value"] for e in container.get("env", [])}


def in_image(image, container: dict, argv: list[str], binds: list[Bind]) -> list[str]:
    context = container["securityContext"]
    prepare(image.path, binds)
    return container_argv(image.path, argv, binds=binds, user=f"{context['runAsUser']}:{context['runAsGroup']}",
                          working_dir=image.working_dir)


def pod_container(template: dict) -> dict:
    spec = template["spec"]
    [container] = (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def user_secrets(platform, templates, locust_image, tmp_path_factory) -> Path:
    """The setup Job's command, run as its pod runs it: the load-test user exists, with the password of its
    own secret; the admin's password is in the Job's files only. The experiment exists already (made by the
    admin), so the user is granted EDIT on it rather than creating it."""
    admin = (platform.admin_username, platform.admin_password)
    created = requests.post(f"{platform.tracking_url}/api/2.0/mlflow/experiments/create", auth=admin,
                            json={"name": EXPERIMENT}, timeout=30)
    assert created.ok, created.text
    directory, scratch = tmp_path_factory.mktemp("secrets"), tmp_path_factory.mktemp("tmp")
    scratch.chmod(0o1777)
    (directory / ADMIN_PASSWORD_FILE).write_text(platform.admin_password)
    (directory / PASSWORD_FILE).write_text(tokens.token_urlsafe(24))
    for path in (directory, *directory.iterdir()):  # as the CSI volume mounts them: readable by the pod's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    spec = pod_container(templates["mlflow-loadtest-user"])
    env = {e["name"]: e["value"] for e in spec["env"]} | {"MLFLOW_TRACKING_URI": platform.tracking_url}
    argv = in_image(locust_image, spec, [*spec["command"], *spec["args"]],
                    [Bind(scratch, "/tmp", writable=True), Bind(directory, SECRETS_DIR)])
    for _ in range(2):  # idempotent: the second run updates the password and the grant
        done = subprocess.run(argv, env={**locust_image.env, **env}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"load-test user {USERNAME!r}: updated" in done.stdout and f"EDIT on experiment {EXPERIMENT!r}" in done.stdout
    return directory


def test_the_load_test_user_is_a_plain_user_with_edit_on_its_experiment(platform, user_secrets):
    auth = (USERNAME, (user_secrets / PASSWORD_FILE).read_text())
    user = requests.get(f"{platform.tracking_url}/api/2.0/mlflow/users/get", params={"username": USERNAME},
                        auth=(platform.admin_username, platform.admin_password), timeout=30).json()["user"]
    assert user["is_admin"] is False
    # EDIT on the admin's experiment: it may log runs there (READ, the default, would refuse with 403).
    experiment = requests.get(f"{platform.tracking_url}/api/2.0/mlflow/experiments/get-by-name",
                              params={"experiment_name": EXPERIMENT}, auth=auth, timeout=30).json()["experiment"]
    created = requests.post(f"{platform.tracking_url}/api/2.0/mlflow/runs/create", auth=auth, timeout=30,
                            json={"experiment_id": experiment["experiment_id"]})
    assert created.ok, created.text
    # Not the admin: it may not make users.
    refused = requests.post(f"{platform.tracking_url}/api/2.0/mlflow/users/create", auth=auth,
                            json={"username": "someone", "password": "x" * 16}, timeout=30)
    assert refused.status_code == 403, refused.text


@pytest.mark.parametrize("service", ["serving", "tracking"])
def test_the_rendered_master_and_workers_load_the_service_and_report_through_the_log(platform, templates, service,
                                                                                    locust_image, user_secrets,
                                                                                    tmp_path):
    host = {"serving": platform.serving_url, "tracking": platform.tracking_url}[service]
    port = free_port()
    workers_template = templates[workers_name(service)]
    workers = workers_template["spec"]["jobTemplate"]["spec"]["parallelism"]
    master_spec, worker_spec = pod_container(templates[master_name(service)]), pod_container(workers_template)
    scratch, secrets, results = tmp_path / "tmp", tmp_path / "secrets", tmp_path / "results"
    for directory in (scratch, secrets, results):
        directory.mkdir()
    for emptydir in (scratch, results):
        emptydir.chmod(0o1777)
    for spec in (master_spec, worker_spec):
        for entry in spec.get("env", []):
            if entry["name"] == "LOADTEST_PASSWORD_FILE":  # the load-test user's file, and only that one
                (secrets / PASSWORD_FILE).write_text((user_secrets / PASSWORD_FILE).read_text())
    master_argv, master_env = localized(master_spec, host, port)
    master_env |= load_env(USERS, SECONDS)  # what a run sets (loadtest/cluster.py)
    worker_argv, worker_env = localized(worker_spec, host, port)
    binds = [Bind(scratch, "/tmp", writable=True), Bind(results, RESULTS_DIR, writable=True),
             Bind(secrets, SECRETS_DIR)]
    master = subprocess.Popen(in_image(locust_image, master_spec, master_argv, binds),
                              env={**locust_image.env, **master_env}, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started = [subprocess.Popen(in_image(locust_image, worker_spec, worker_argv, binds),
                                env={**locust_image.env, **worker_env}, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
               for _ in range(workers)]
    output = ""
    try:
        output, _ = master.communicate(timeout=SECONDS + 90)
        codes = [worker.wait(timeout=30) for worker in started]  # the master tells them to quit
    except subprocess.TimeoutExpired:
        pytest.fail(f"Locust did not finish; master said:\n{output[-3000:]}")
    finally:
        for process in [master, *started]:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()
    assert master.returncode == 0 and codes == [0] * workers, output[-3000:]
    files = extract(output)
    assert {f"{service}.json", f"{service}_stats_history.csv", f"{service}_stats.csv"} <= set(files), sorted(files)
    copied = tmp_path / "copied"
    copied.mkdir()
    for name, content in files.items():
        (copied / name).write_bytes(content)
    rows = endpoints(copied / f"{service}.json")
    assert sum(r.requests for r in rows) > 20 and sum(r.failures for r in rows) == 0, rows
    assert max(second.users for second in history(copied / service)) == USERS
    if service == "tracking":
        assert {"runs/create", "runs/log-batch"} <= {r.name for r in rows if r.requests}


def test_make_loadtest_on_this_machine_logs_in_as_the_same_kind_of_user(platform, user_secrets, tmp_path):
    """`make loadtest` (TARGET=local) makes the user as the setup Job does: its own password file, no admin."""
    from loadtest.run import local_user

    # The password the other tests use: a password file that exists is kept, not regenerated.
    (tmp_path / PASSWORD_FILE).write_text((user_secrets / PASSWORD_FILE).read_text())
    (tmp_path / PASSWORD_FILE).chmod(0o600)
    credentials = local_user(platform.endpoints(), tmp_path)
    password_file = Path(credentials["LOADTEST_PASSWORD_FILE"])
    assert credentials["LOADTEST_USERNAME"] == USERNAME and password_file.parent == tmp_path
    runs = requests.get(f"{platform.tracking_url}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": EXPERIMENT}, auth=(USERNAME, password_file.read_text()), timeout=30)
    assert runs.ok, runs.text
