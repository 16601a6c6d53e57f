"""Ports of local platforms: two test processes starting platforms at once never get the same one."""

from __future__ import annotations

import socket
import subprocess
import sys

from tools.local import processes
from tools.local.processes import PORT_RANGE, free_port


def test_ports_are_claimed_once_across_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "PORT_CLAIMS", tmp_path)
    code = ("import sys; from pathlib import Path; from tools.local import processes; "
            f"processes.PORT_CLAIMS = Path({str(tmp_path)!r}); "
            "print(' '.join(str(processes.free_port()) for _ in range(300)))")
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    ports = [int(port) for run in runs for port in run.communicate(timeout=60)[0].split()]
    assert len(ports) == 600 and len(set(ports)) == 600
    assert all(port in PORT_RANGE for port in ports)


def test_a_port_in_use_is_never_returned(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "PORT_CLAIMS", tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        # every other port of the range is claimed already: only the busy one is left to try
        taken = busy.getsockname()[1]
        monkeypatch.setattr(processes, "PORT_RANGE", range(taken, taken + 2))
        (tmp_path / str(taken + 1)).touch()
        try:
            free_port()
        except processes.LocalPlatformError as err:
            assert "no free port" in str(err)
        else:
            raise AssertionError("a port in use was returned")
