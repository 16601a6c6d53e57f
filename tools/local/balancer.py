"""HAProxy in front of the local pods, standing in for a Service (kube-proxy) or a cloud load
balancer: clients of `make local` reach tracking and serving only through it, so a pod that stops
while the balancer still routes to it fails requests here as it would in the cluster.

The configuration is written at run time (`haproxy_config`, a pure function); pods are added and
removed through HAProxy's runtime API on a unix socket (`set server ... addr/state`), as endpoint
changes reach a real load balancer. Health checks are the pods' readiness probes (path, period,
failure threshold), so an unready pod leaves rotation as it leaves the Service's endpoints.

A backend may split its traffic with another (serving's champion and challenger tracks, as the
Gateway's HTTPRoute weights them): a request goes to the other backend with the probability of the
`weight` entry of split.map, or is mirrored to it (mirror.lua) while `mirror` is 1. The map changes
at run time through the same API (`split_commands`), as a patched HTTPRoute reaches the Gateway.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tools.local.processes import LocalPlatformError, ManagedProcess, http_ok

HAPROXY = "haproxy"
SLOTS = 4  # pods one Service may have at once locally: 1 replica + maxSurge, with room
# The delay between a pod's deletion and its removal from the balancer: kube-proxy applies an
# EndpointSlice change about a second after the API server records it; a preStop drain shorter
# than this fails requests, which is what the rehearsals check.
ENDPOINT_PROPAGATION_SECONDS = 2.0
SPLIT_MAP = "split.map"
MAINTENANCE_FLAGS = 0x3  # srv_admin_state bits of `show servers state`: a server nothing is routed to
MIRROR_LUA = Path(__file__).resolve().parent / "mirror.lua"
MIRRORED_PATH = "/invocations"  # what is copied: scoring requests, not probes


@dataclass(frozen=True)
class Backend:
    """One Service: where clients connect, and how its pods are health-checked."""

    name: str
    listen_port: int
    health_path: str
    check_period_seconds: int
    check_failures: int
    split_to: Optional[str] = None
    """Another backend that gets split.map's `weight` percent of this one's requests, or a copy of
    each while `mirror` is 1."""


def find_haproxy() -> str:
    path = shutil.which(HAPROXY) or (f"/usr/sbin/{HAPROXY}" if Path(f"/usr/sbin/{HAPROXY}").exists() else None)
    if path is None:
        raise LocalPlatformError("haproxy is not installed: `apt-get install haproxy` (.ci/run installs it)")
    return path


def split_commands(map_path: Path, weight: int, mirror: bool) -> list[str]:
    """The runtime API commands that route `weight` percent to the split backend, or mirror to it."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight={weight}: allowed 0..100")
    return [f"set map {map_path} weight {weight}", f"set map {map_path} mirror {int(mirror)}"]


def runtime_command(socket_path: Path, text: str) -> str:
    """One command on HAProxy's runtime API; its answer (an error answer raises)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(text.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks).decode(errors="replace").strip()
    if any(word in answer.lower() for word in ("unknown", "error", "no such", "require")):
        raise LocalPlatformError(f"haproxy runtime API: {text!r} -> {answer}")
    return answer


def ready_servers(socket_path: Path, backend: str) -> list[tuple[str, int]]:
    """(address, port) of the backend's pods in rotation (`show servers state`: not in maintenance)."""
    lines = runtime_command(socket_path, f"show servers state {backend}").splitlines()
    header = next(line for line in lines if line.startswith("# be_id")).lstrip("# ").split()
    found = []
    for line in lines:
        if line and not line.startswith("#") and len(values := line.split()) >= len(header):
            row = dict(zip(header, values))
            # Not put in maintenance (0x1 forced, 0x2 inherited); 0x4 only records the template's `disabled`.
            if int(row["srv_admin_state"]) & MAINTENANCE_FLAGS == 0:
                found.append((row["srv_addr"], int(row["srv_port"])))
    return found


def _frontend(backend: Backend, backends: dict[str, Backend], map_path: Path) -> list[str]:
    lines = [f"frontend {backend.name}", f"    bind 127.0.0.1:{backend.listen_port}"]
    if backend.split_to:
        other = backends[backend.split_to]
        lines += [
            f"    http-request set-var(txn.split_weight) str(weight),map_str_int({map_path},0)",
            f"    http-request set-var(txn.split_mirror) str(mirror),map_str_int({map_path},0)",
            "    acl mirrored var(txn.split_mirror) -m int eq 1",
            f"    acl scoring path {MIRRORED_PATH}",
            "    http-request wait-for-body time 2s if mirrored scoring",
            f"    http-request lua.mirror http://127.0.0.1:{other.listen_port} if mirrored scoring",
            # rand(100) is 0..99: weight 0 never matches, weight 100 always does.
            f"    use_backend {other.name} if {{ rand(100),sub(txn.split_weight) lt 0 }}",
        ]
    return lines + [f"    default_backend {backend.name}"]


def haproxy_config(backends: list[Backend], socket_path: Path) -> str:
    by_name = {backend.name: backend for backend in backends}
    map_path = socket_path.parent / SPLIT_MAP
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    maxconn 4096",
        *([f"    lua-load {MIRROR_LUA}"] if any(backend.split_to for backend in backends) else []),
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        # Longer than any request of the platform (an artifact upload): the balancer never cuts one.
        "    timeout client 120s",
        "    timeout server 120s",
        # A new connection to the pod per request, as kube-proxy balances connections and not
        # requests: no idle pooled connection can outlive the pod's keep-alive and be reused
        # after the pod closed it (that race is the keep-alive rule of the cluster's Ingress,
        # handled by the pods' own keep-alive timeouts).
        "    option http-server-close",
        # No retries on another pod: kube-proxy does not retry either, failures must show.
        "    retries 0",
    ]
    for backend in backends:
        lines += [
            *_frontend(backend, by_name, map_path),
            f"backend {backend.name}",
            f"    option httpchk GET {backend.health_path}",
            "    http-check expect status 200",
            f"    default-server init-addr none inter {backend.check_period_seconds}s "
            f"fall {backend.check_failures} rise 1",
            f"    server-template pod {SLOTS} 127.0.0.1:1 disabled check",
        ]
    return "\n".join(lines) + "\n"


class LocalBalancer:
    """The HAProxy process and its runtime API. `add` puts a pod in a free slot, `remove` takes it out."""

    def __init__(self, backends: list[Backend], directory: Path, log_path: Path, redact: Callable[[str], str]):
        self.backends = {backend.name: backend for backend in backends}
        self.directory = directory
        self.socket_path = directory / "haproxy.sock"
        self.config_path = directory / "haproxy.cfg"
        self.split_map = directory / SPLIT_MAP
        self.log_path = log_path
        self.redact = redact
        self.process: Optional[ManagedProcess] = None
        self.slots: dict[tuple[str, int], Optional[int]] = {
            (name, slot): None for name in self.backends for slot in range(1, SLOTS + 1)}

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.backends[backend].listen_port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.split_map.write_text("weight 0\nmirror 0\n")
        self.config_path.write_text(haproxy_config(list(self.backends.values()), self.socket_path))
        self.process = ManagedProcess("haproxy", [find_haproxy(), "-db", "-f", str(self.config_path)],
                                      env={"PATH": "/usr/sbin:/usr/bin:/bin"}, cwd=self.directory,
                                      log_path=self.log_path, redact=self.redact)
        self.process.start()
        self.process.wait_until(self.socket_path.exists, 20, f"runtime socket {self.socket_path}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def command(self, text: str) -> str:
        return runtime_command(self.socket_path, text)

    def split(self, weight: int, mirror: bool) -> None:
        """The split backend gets `weight` percent of the requests, or a copy of each (`mirror`)."""
        for text in split_commands(self.split_map, weight, mirror):
            self.command(text)

    def add(self, backend: str, port: int, ready: bool = True) -> int:
        """Route to 127.0.0.1:port; returns its slot. A pod not `ready` yet enters as down and
        gets traffic after its first passing health check, as an endpoint after its readiness probe."""
        slot = next((s for (name, s), used in self.slots.items() if name == backend and used is None), None)
        if slot is None:
            raise LocalPlatformError(f"balancer {backend}: all {SLOTS} slots in use")
        self.slots[(backend, slot)] = port
        self.command(f"set server {backend}/pod{slot} addr 127.0.0.1 port {port}")
        if not ready:
            self.command(f"set server {backend}/pod{slot} health down")
        self.command(f"set server {backend}/pod{slot} state ready")
        return slot

    def remove(self, backend: str, port: int) -> None:
        """No new request goes to 127.0.0.1:port (the endpoint is gone); requests in flight finish."""
        for (name, slot), used in self.slots.items():
            if name == backend and used == port:
                self.command(f"set server {backend}/pod{slot} state maint")
                self.slots[(name, slot)] = None

    def serving_ports(self, backend: str) -> list[int]:
        return [port for (name, _), port in self.slots.items() if name == backend and port is not None]

    def healthy(self, backend: str) -> bool:
        """The balancer answers on the backend's port (any pod behind it answering its health path)."""
        return http_ok(self.url(backend) + self.backends[backend].health_path)
