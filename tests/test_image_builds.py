"""What ships, built and run here: the images the program pushes are built from their real
Dockerfiles by a real daemonless builder (tools/local/images.py), and every container of the rendered
plans that names one of them starts inside it as its pod runs it (uid 10001, read-only root, /tmp
writable). The dev plan's containers are started by tests/test_local_e2e.py's platform; this
module starts the prod plan's."""

from __future__ import annotations

import subprocess

import pytest

from tools.local.container import Bind, container_argv, prepare
from tools.local.images import SOURCES, ImageBuildError, ImageStore, base_reference, debian_mirror, source_for
from tools.local.manifests import Manifests
from tools.local.testing import built_image_containers, scratch_platform

def test_every_dockerfile_starts_from_the_one_official_base():
    assert {base_reference(source.dockerfile) for source in SOURCES.values()} == {
        "docker.io/library/python:3.11.14-slim-bookworm"}


def test_every_container_image_of_the_plans_is_built_here_or_named():
    for stack in ("dev", "prod"):
        found = built_image_containers(Manifests.load(stack))
        assert {container for _, container in found} >= {"mlflow", "serving", "metrics-exporter"}, found


def test_a_manifest_image_maps_to_its_build_and_an_unknown_one_is_refused():
    assert source_for("us-central1-docker.pkg.dev/p/r/mlflow-serving@sha256:" + "1" * 64).target == "serving"
    assert source_for("localhost/mlflow-loadtest:abc").context.name == "loadtest"
    with pytest.raises(ImageBuildError, match="not built by the program"):
        source_for("gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1")


@pytest.mark.parametrize("files, expected", [
    ({"sources.list.d/debian.sources": "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm "
                                       "bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://sec.example\n"
                                       "Suites: bookworm-security\n"}, "http://mirror.example/debian"),
    ({"sources.list": "deb [arch=amd64] http://mirror.example/debian bookworm main\n"}, "http://mirror.example/debian"),
])
def test_the_base_comes_from_the_debian_archive_apt_uses(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert debian_mirror(tmp_path) == expected


def test_no_debian_archive_is_a_clear_error(tmp_path):
    with pytest.raises(ImageBuildError, match="no Debian bookworm archive"):
        debian_mirror(tmp_path)


def test_the_launcher_mounts_volumes_read_only_unless_writable_and_runs_as_the_pod(tmp_path):
    binds = [Bind(tmp_path / "tmp", "/tmp", writable=True), Bind(tmp_path / "cfg", "/etc/cfg")]
    for bind in binds:
        bind.source.mkdir()
    argv = container_argv(tmp_path / "root", ["mlflow", "server"], binds=binds, user="10001:10001",
                          working_dir="/tmp")
    assert argv[:5] == ["/usr/bin/unshare", "--mount", "--propagation", "private", "--"]
    assert argv[-9:] == [str(tmp_path / "tmp"), "/tmp", "rw", str(tmp_path / "cfg"), "/etc/cfg", "ro", "--",
                         "mlflow", "server"]
    prepare(tmp_path / "root", binds)
    assert (tmp_path / "root" / "etc" / "cfg").is_dir() and (tmp_path / "root" / "etc" / "hosts").is_file()


@pytest.fixture(scope="module")
def image_store() -> ImageStore:
    return ImageStore(progress=print)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_image_builds_and_runs_as_its_pods_run_it(image_store, name, tmp_path):
    root = image_store.rootfs(SOURCES[name])
    assert root.user == "10001:10001" and root.working_dir == "/tmp"
    assert root.env["HOME"] == "/tmp" and root.env["PATH"].startswith("/opt/venv/bin:")
    scratch = tmp_path / "tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)
    binds = [Bind(scratch, "/tmp", writable=True)]
    prepare(root.path, binds)
    check = ("import os, pathlib, sys; pathlib.Path('/tmp/written').write_text(str(os.getuid())); "
             "sys.exit(0 if not os.access('/opt/venv', os.W_OK) else 3)")
    completed = subprocess.run(container_argv(root.path, ["python", "-c", check], binds=binds, user=root.user,
                                              working_dir=root.working_dir),
                               env=root.env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert (scratch / "written").read_text() == "10001"
    denied = subprocess.run(container_argv(root.path, ["touch", "/opt/venv/x"], binds=binds, user="0:0",
                                           working_dir="/"),
                            env=root.env, capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr


@pytest.fixture(scope="module")
def prod_platform(request):
    with scratch_platform(request, "mlflow-prod-images-", stack="prod") as local:
        local.start()
        yield local


def test_every_prod_container_starts_in_its_image(prod_platform):
    assert prod_platform.started_containers == built_image_containers(Manifests.load("prod"))
    assert prod_platform.demo_run["version"]  # trained through prod's tracking, served by prod's serving
