"""The `make local` adapter of tools.ops.interfaces: the local platform (tools/local/), the only ops
module that imports it.

A running `make local` is found through WORKDIR/endpoints.json (its tracking and serving URLs, the
admin's password file, its Secret Manager stand-in); it rolls serving or tracking when asked over
SIGUSR1 (tools/local/rollout.py). The rehearsal runs in the runtime virtualenv (the image's
packages) with the serving container's settings from the rendered dev manifests. Tests that own a
`LocalPlatform` in-process roll it with `PlatformRoller`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

from infra.secrets import ADMIN_PASSWORD, SERVING_PASSWORD
from tools.local.localplatform import LocalPlatform, provider_class_secrets, write_private_file
from tools.local.manifests import Manifests, container, serving_tracks
from tools.local.balancer import ready_servers, runtime_command, split_commands
from tools.local.notifications import RecordingSink
from tools.local.processes import LocalPlatformError, http
from tools.local.rollout import RolloutRequestError, request_rollout
from tools.local.secretmanager import LocalSecretManager
from tools.ops.canary import Thresholds, canary_thresholds
from tools.ops.interfaces import (
    ChallengerTarget, PromotionTarget, Rehearsed, Roller, RolloutError, RotationTarget, TargetError, TrackStats,
    Tracking,
)
from tools.ops.lease import Lease
from tools.ops.scrape import Counts, parse, stats
from tools.ops.runtime import AdminRunner
from tools.ops.verify import REHEARSAL_SLACK_SECONDS, check_answer, env_timeout, post_json, rehearsal_args, rehearsal_result
from tools.venvs import VenvError

DEFAULT_TIMEOUT = 300.0


# --- rollout -----------------------------------------------------------------------------------
class PlatformRoller:
    """A LocalPlatform this process owns: `serving` (or the `challenger`) rolls as a Roller, any
    component restarts as a Restarter."""

    def __init__(self, platform: LocalPlatform, serving: str = "serving"):
        self.platform, self.serving = platform, serving

    def restart(self, component: str) -> str:
        roll = {"tracking": self.platform.roll_tracking, "challenger": self.platform.restart_challenger}
        try:
            roll.get(component, self.platform.restart_serving)()
        except LocalPlatformError as err:
            raise RolloutError(f"local {component} did not become ready: {str(err).splitlines()[0]}") from None
        if component == "tracking":
            return f"local tracking rolled, ready on {self.platform.tracking_url}"
        return f"local {component} restarted (pid {getattr(self.platform, component).pid})"

    def roll(self, model: str, alias: str, version: str) -> str:
        return self.restart(self.serving)

    def restore(self) -> str:
        return self.restart(self.serving)


class LocalSignalRoller:
    """A running `make local` (python -m tools.local) using `workdir`: rolls `serving` or the
    `challenger` (Roller) or any component (Restarter)."""

    def __init__(self, workdir: Path, timeout: float = DEFAULT_TIMEOUT, serving: str = "serving"):
        self.workdir = Path(workdir)
        self.timeout = timeout
        self.serving = serving

    def _request(self, component: str) -> dict:
        try:
            return request_rollout(self.workdir, timeout=self.timeout, component=component)
        except RolloutRequestError as err:
            raise RolloutError(str(err)) from None

    def restart(self, component: str) -> str:
        return f"`make local` rolled {component} (rollout {self._request(component)['generation']})"

    def _roll_serving(self) -> str:
        status = self._request(self.serving)
        return f"`make local` restarted {self.serving} (rollout {status['generation']})"

    def roll(self, model: str, alias: str, version: str) -> str:
        return self._roll_serving()

    def restore(self) -> str:
        return self._roll_serving()


# --- the challenger track ------------------------------------------------------------------------
class HaproxyRouter:
    """The split of serving's backend (tools/local/balancer.py), through HAProxy's runtime API."""

    def __init__(self, socket_path: Path, split_map: Path):
        self.socket_path, self.split_map = Path(socket_path), Path(split_map)
        self.held = False

    def route(self, weight: int, mirror: bool) -> str:
        try:
            for text in split_commands(self.split_map, weight, mirror):
                runtime_command(self.socket_path, text)
        except (OSError, LocalPlatformError) as err:
            raise RolloutError(f"changing the local split: {err}") from None
        return f"local split: challenger {'gets a copy of every request' if mirror else f'{weight}%'}"

    def abort(self) -> str:
        self.route(0, False)
        return "local split: all traffic to the champion, mirror off"

    @property
    def lease_path(self) -> Path:
        return self.split_map.with_name("split.lease")

    def acquire(self, lease: Lease) -> None:
        try:
            fd = os.open(self.lease_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # exclusive: one wins
        except FileExistsError:
            raise Lease.parse(self.lease_path.read_text()).refusal(str(self.lease_path),
                                                                   f"delete {self.lease_path}") from None
        with os.fdopen(fd, "w") as out:
            out.write(lease.text())
        self.held = True

    def release(self) -> None:
        if self.held:
            self.lease_path.unlink(missing_ok=True)
            self.held = False


class PodMetrics:
    """Each track's numbers from the /metrics of its pods in rotation (found through HAProxy's runtime
    API, as Prometheus discovers pods), counter differences per pod (tools.ops.scrape)."""

    def __init__(self, socket_path: Path, backends: dict[str, str]):
        self.socket_path, self.backends = Path(socket_path), backends

    def _scrape(self) -> dict[str, dict[tuple[str, int], Counts]]:
        found = {}
        try:
            for track, backend in self.backends.items():
                pods = {}
                for address, port in ready_servers(self.socket_path, backend):
                    response = http("GET", f"http://{address}:{port}/metrics")
                    if response.status == 200:  # a pod stopping between the two calls is skipped
                        pods[(address, port)] = parse(response.body.decode())
                found[track] = pods
        except (OSError, LocalPlatformError) as err:
            raise RolloutError(f"reading the tracks' metrics: {err}") from None
        return found

    def mark(self) -> dict[str, dict[tuple[str, int], Counts]]:
        return self._scrape()

    def since(self, mark: dict[str, dict[tuple[str, int], Counts]]) -> dict[str, TrackStats]:
        now = self._scrape()
        totals = {}
        for track, pods in now.items():
            total = Counts()
            for pod, counts in pods.items():
                total = total.plus(counts.minus(mark.get(track, {}).get(pod)))
            totals[track] = stats(total)
        return totals


def local_challenger(endpoints: dict, roller: Roller, thresholds: Thresholds) -> Optional[ChallengerTarget]:
    """The challenger track of a `make local` whose plan declares one (endpoints.json says how to reach it)."""
    if "challenger_url" not in endpoints:
        return None
    socket_path = Path(endpoints["balancer_socket"])
    weight, mirror = endpoints["declared_split"]
    model, champion_alias = endpoints["model_uri"].removeprefix("models:/").split("@")
    return ChallengerTarget(model, champion_alias, endpoints["challenger_alias"], roller, HaproxyRouter(socket_path, endpoints["split_map"]),
                            PodMetrics(socket_path, endpoints["track_backends"]), thresholds, (weight, bool(mirror)))


def admin_runner(platform: LocalPlatform) -> AdminRunner:
    """Ops' runtime-side modules against an in-process LocalPlatform, as its admin, in its runtime virtualenv."""
    return AdminRunner(platform.tracking_url, platform.admin_username, platform.admin_password, platform.runtime)


# --- verify ------------------------------------------------------------------------------------
class LocalVerifier:
    """Rehearses with `run(argv) -> stdout` (the runtime virtualenv, where the serving code runs on
    `make local`) and probes `serving_url`."""

    def __init__(self, run: Callable[[list[str]], str], container_args: list[str], env_cache: Path, serving_url: str):
        self.run, self.container_args, self.env_cache, self.serving_url = run, container_args, env_cache, serving_url

    def rehearse(self, model: str, version: str) -> Rehearsed:
        args = rehearsal_args(model, version, self.container_args)
        # As `make local` runs the pod (tools/local/localize.py): its volume is a local directory, its
        # package index the one this machine reaches.
        args[args.index("--env-cache") + 1] = str(self.env_cache)
        if "--package-index" in args:
            args[args.index("--package-index") + 1] = ""
        return rehearsal_result(self.run(args))

    def probe(self, request: dict) -> str:
        return check_answer(*post_json(f"{self.serving_url}/invocations", request))


def local_verifier(runner: AdminRunner, workdir: Path, serving_url: str) -> LocalVerifier:
    """The rehearsal as the serving container of the rendered dev manifests (what `make local` runs)."""
    args = container(serving_tracks(Manifests.load("dev"))[0], "serving")["args"]
    timeout = env_timeout(args) + REHEARSAL_SLACK_SECONDS

    def run(rehearsal: list[str]) -> str:
        try:
            return runner.run(rehearsal, timeout).stdout
        except VenvError as err:
            raise TargetError(f"the rehearsal of the model's environment: {err}") from None

    return LocalVerifier(run, args, Path(workdir) / "env-rehearsal", serving_url)


# --- the target ----------------------------------------------------------------------------------
class LocalTarget:
    """A running `make local` using `workdir`, rendered from `stack`."""

    def __init__(self, workdir: Path, stack: str = "dev"):
        self.workdir, self.stack = Path(workdir), stack
        endpoints_file = self.workdir / "endpoints.json"
        try:
            self.endpoints = json.loads(endpoints_file.read_text())
        except OSError:
            raise TargetError(f"{endpoints_file} is missing: is `make local` running?") from None

    def promotion(self, timeout: Optional[float]) -> PromotionTarget:
        e = self.endpoints
        tracking = Tracking(e["tracking_url"], e["admin_username"], Path(e["admin_password_file"]).read_text().strip(),
                            e["serving_username"])
        runner = AdminRunner(tracking.uri, tracking.username, tracking.password)
        roller = LocalSignalRoller(self.workdir, timeout or DEFAULT_TIMEOUT, serving="challenger")
        return PromotionTarget(tracking, LocalSignalRoller(self.workdir, timeout or DEFAULT_TIMEOUT),
                               local_verifier(runner, self.workdir, e["serving_url"]), RecordingSink(self.workdir).record,
                               challenger=local_challenger(e, roller, canary_thresholds(self.stack)))

    def rotation(self, timeout: Optional[float]) -> RotationTarget:
        store = LocalSecretManager(Path(self.endpoints["secret_manager_dir"]))
        secret_ids = provider_class_secrets(Manifests.load(self.stack))

        def rotated() -> None:
            for key, name in (("admin_password_file", ADMIN_PASSWORD), ("serving_password_file", SERVING_PASSWORD)):
                write_private_file(Path(self.endpoints[key]), store.access(secret_ids[name]) + "\n", 0o600)

        return RotationTarget(self.endpoints["tracking_url"], store, secret_ids,
                              LocalSignalRoller(self.workdir, timeout or DEFAULT_TIMEOUT), rotated)
