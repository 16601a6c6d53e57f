"""Test support for the rehearsals on a LocalPlatform (tests/test_promote.py, test_upgrade.py,
test_backup_restore.py): a platform in a scratch directory, stopped afterwards, whose logs are
kept only when a test of the module failed. Imported by tests only (it uses pytest)."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import os
import signal

import psutil

from k8s.traffic import GATE_CONTAINER
from tools.local.images import source_for
from tools.local.localplatform import LocalPlatform
from tools.local.manifests import Manifests, workload_containers
from tools.local.postgres import find_bin_dir
from tools.local.processes import LocalPlatformError, descendants, pids_alive


# Containers whose images the program does not build: Google's Cloud SQL Auth Proxy, replaced by
# the local Postgres (tools/local/localize.py).
NOT_BUILT = ("cloud-sql-proxy",)
# Containers that talk only to the cluster's API server, which `make local` has none of: the gate waiting
# for GKE's Gateway API CRDs (its module runs in tests/test_crdwait.py).
CLUSTER_API_ONLY = frozenset({GATE_CONTAINER})


def built_image_containers(manifests: Manifests) -> set[tuple[str, str]]:
    """(workload, container) of every rendered container that runs an image the program builds;
    a container of any other image must be one of NOT_BUILT."""
    found = set()
    for workload, spec in workload_containers(manifests):
        if any(name in spec["image"] for name in NOT_BUILT) or spec["name"] in CLUSTER_API_ONLY:
            continue
        source_for(spec["image"])  # raises for an image nobody builds
        found.add((workload["metadata"]["name"], spec["name"]))
    return found


def _mounts_from(pid: int, directory: Path) -> bool:
    """Whether a process in an image (tools/local/container.py) has a volume of `directory` mounted."""
    try:
        return str(directory) in Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False


def processes_using(directory: Path) -> dict[int, str]:
    """pid -> command line of every live process whose command line or working directory is
    under `directory`, or that runs in an image with a volume from it (what a platform started
    there and did not stop)."""
    found = {}
    for process in psutil.process_iter(["cmdline", "cwd"]):
        if process.pid == os.getpid():
            continue
        cmdline, cwd = " ".join(process.info["cmdline"] or []), process.info["cwd"] or ""
        if str(directory) in cmdline or cwd.startswith(str(directory)) or _mounts_from(process.pid, directory):
            found[process.pid] = cmdline.strip()
    return found


@contextmanager
def scratch_platform(request, prefix: str, **kwargs) -> Iterator[LocalPlatform]:
    """A LocalPlatform, not started (the caller starts it, whole or in parts); missing Postgres
    binaries or runtime virtualenv FAIL the tests. Every process is gone afterwards."""
    import pytest

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        find_bin_dir()
        platform = LocalPlatform(workdir, **kwargs)
    except LocalPlatformError as err:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the local platform cannot run here: {err}", pytrace=False)
    failed_before = request.session.testsfailed
    try:
        yield platform
    finally:
        started = {pid for p in platform.processes() if p.running for pid in (p.pid, *descendants(p.pid))}
        platform.stop()
        left = pids_alive(started)
        strays = processes_using(workdir)  # also those the platform lost track of
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        failed = request.session.testsfailed != failed_before
        for child in workdir.iterdir():
            if child.name != "logs" or not failed:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        if failed:
            print(f"\nlocal platform logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        assert not left and not strays, f"processes left behind: {left or strays}"
