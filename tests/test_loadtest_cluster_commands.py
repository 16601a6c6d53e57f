"""The cluster load test's rendered Locust commands, run for real inside the Locust image the
program pushes (built here from loadtest/Dockerfile): the master and worker command lines of the
rendered templates (loadTesting on) run for a few seconds against a local platform, as their pods
run them (uid 10001, read-only root, the results emptyDir and the password Secret mounted at their
paths). Only what is cluster-specific changes (LOCALIZE below); the master's output then carries
results the report can read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from k8s.loadtest import RESULTS_DIR, master_name, workers_name
from k8s.secret_files import SECRETS_DIR
from loadtest.commands import MASTER_PORT, load_env
from loadtest.pod_results import extract
from loadtest.results import endpoints, history
from tools.local.container import Bind, container_argv, prepare
from tools.local.images import SOURCES, ImageStore
from tools.local.processes import free_port
from tools.local.testing import scratch_platform
from tools.offline.render import render
from tests.test_loadtest_cluster import ON, run_with

# What differs between the pod and this machine; everything else is the rendered command as is.
LOCALIZE = (
    "--host (in-cluster Service URL) -> the local platform's load-balancer URL",
    "--master-bind-host 0.0.0.0, --master-host <Service> -> 127.0.0.1; port 5557 -> a free port",
    f"/tmp and {RESULTS_DIR} (emptyDirs), {SECRETS_DIR} (the Secret) -> local directories bound there",
)
SECONDS, USERS = 6, 4


@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-loadtest-commands-") as local:
        local.start()
        yield local


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, dict]:
    import yaml

    files = render(run_with("dev", ON))
    return {doc["metadata"]["name"]: doc for doc in (yaml.safe_load(text) for name, text in files.items()
                                                     if name.startswith("k8s/") and "cronjob-mlflow-loadtest" in name)}


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
    [container] = template["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("service", ["serving", "tracking"])
def test_the_rendered_master_and_workers_load_the_service_and_report_through_the_log(platform, templates, service,
                                                                                    locust_image, tmp_path):
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
            if entry["name"] == "LOADTEST_PASSWORD_FILE":  # the Secret volume's file, readable by the pod's group
                (secrets / Path(entry["value"]).name).write_text(platform.admin_password)
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
