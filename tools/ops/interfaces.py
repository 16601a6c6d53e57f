"""What day-2 operations need of a running platform, as protocols, and what a target hands them.

`make promote`, `make rollback`, `make rotate-secret` and the challenger's commands act on a platform through these only. Exactly
two adapters implement them: `tools.ops.gke` (the stack's clusters through the Kubernetes API, Secret
Manager) and `tools.ops.local` (a running `make local`); `tools.ops.targets` picks one from --target.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:
    from tools.ops.canary import Thresholds
    from tools.ops.lease import Lease


# --- rollout -----------------------------------------------------------------------------------
class RolloutError(RuntimeError):
    """Pods did not become ready on the new version in time (or could not be asked to roll)."""


class Roller(Protocol):
    """Rolls serving onto what the alias points to now, and waits until it serves."""

    def roll(self, model: str, alias: str, version: str) -> str:
        """Roll serving; return a one-line summary once it serves; raise RolloutError otherwise."""

    def restore(self) -> str:
        """After a failed roll (the alias already moved back): serve the previous target again."""


class Restarter(Protocol):
    def restart(self, component: str) -> str:
        """New `tracking` or `serving` pods from the same template (they read the secrets anew), as the
        Deployment's strategy declares; a summary once they are ready, RolloutError otherwise."""


# --- verify ------------------------------------------------------------------------------------
class RehearsalFailed(RuntimeError):
    """The version would not serve: its environment cannot be built or it does not load."""


@dataclass(frozen=True)
class Rehearsed:
    summary: str
    """What the environment step did (nothing needed, reused, built)."""
    example: Optional[dict]
    """The model's serving input example, if it has one."""


class Verifier(Protocol):
    def rehearse(self, model: str, version: str) -> Rehearsed:
        """Load the version as a serving pod would; RehearsalFailed if it would not serve."""

    def probe(self, request: dict) -> str:
        """POST `request` to serving's /invocations; a summary, or RolloutError."""


# --- the challenger track ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackStats:
    """One track's /invocations answers over a window."""

    requests: float
    errors: float
    """Answers with a 5xx status."""
    p99_seconds: Optional[float]
    """None when the track answered nothing."""

    @property
    def error_percent(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0


class TrackMetrics(Protocol):
    """Each track's numbers: `since(mark())` covers the time between the two calls."""

    def mark(self) -> object: ...
    def since(self, mark: object) -> dict[str, TrackStats]:
        """{"champion": ..., "challenger": ...}; RolloutError when they cannot be read."""


class ReplicaHold(Protocol):
    def hold(self) -> str:
        """Keep the champion's current replicas until `release`; a summary."""

    def release(self) -> str:
        """Give the autoscaler back its own minimum (nothing if not held); a summary."""


class TrafficRouter(Protocol):
    """The split of serving's traffic between champion and challenger, changed on the live platform."""

    def route(self, weight: int, mirror: bool) -> str:
        """The challenger answers `weight`% of requests (0..100), or gets a copy of each with `mirror`
        (weight 0); a one-line summary."""

    def abort(self) -> str:
        """All traffic to the champion at once, mirror off; a summary."""

    def acquire(self, lease: "Lease") -> None:
        """Hold the split for `lease` (tools.ops.lease); LeaseHeld naming the holder if another holds it."""

    def release(self) -> None:
        """Give the split back (nothing if not held)."""


@dataclass(frozen=True)
class ChallengerTarget:
    """The challenger track of a platform that declares one (`serving.challenger`)."""

    model: str
    """The served model (serving.modelName)."""
    champion_alias: str
    alias: str
    roller: Roller
    """Rolls the challenger's pods onto what its alias points to now."""
    router: TrafficRouter
    metrics: TrackMetrics
    thresholds: "Thresholds"
    """The stack's `serving.canary`."""
    declared: tuple[int, bool]
    """(weight, mirror) the settings declare: where a finished canary leaves the route."""
    notes: Callable[[int, bool], tuple[str, ...]] = lambda weight, mirror: ()
    """What to print after the route changed (the cluster: how to keep it in the stack)."""
    champion_replicas: Optional["ReplicaHold"] = None
    """Holds the champion's replicas during a canary (the cluster's HPA); None where nothing scales it."""


# --- secrets -----------------------------------------------------------------------------------
class SecretStoreError(RuntimeError):
    """A call on the secret store failed; the message holds no secret value."""


class SecretStore(Protocol):
    """Secret Manager's calls on versions of one secret (a store's own secret names); SecretStoreError
    when one fails."""

    def access(self, secret: str, version: str = "latest") -> str: ...
    def add_version(self, secret: str, value: str) -> int: ...
    def enabled_versions(self, secret: str) -> list[int]: ...
    def disable(self, secret: str, version: int) -> None: ...


def generate_password(length: int = 32) -> str:
    """A new secret value: letters and digits, like the program's RandomPassword(special=False)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --- what a target hands an operation ----------------------------------------------------------------
@dataclass(frozen=True)
class Tracking:
    """The tracking server, as its admin; the serving user is the one serving pods log in as."""

    uri: str
    username: str
    password: str = field(repr=False)
    serving_user: str


@dataclass(frozen=True)
class PromotionTarget:
    tracking: Tracking
    roller: Roller
    verifier: Verifier
    notify: Callable[[dict], None]
    """Sends one notification line (tools/ops/notify.py): a refused promotion, a rollback."""
    notes: tuple[str, ...] = ()
    """Printed once promoted (the cluster: how to keep the new rollout token in the stack)."""
    challenger: Optional[ChallengerTarget] = None
    """None where the stack declares no challenger track."""


@dataclass(frozen=True)
class RotationTarget:
    tracking_uri: str
    store: SecretStore
    secret_ids: dict[str, str]
    """Logical name (admin-password, ...) -> the store's name of that secret."""
    restarter: Restarter
    rotated: Callable[[], None] = lambda: None
    """Run once rotated (local: rewrite the password files endpoints.json names)."""


class TargetError(RuntimeError):
    """The platform cannot be reached or read; nothing changed."""


class Platform(Protocol):
    """A running platform: each call reads and checks what its operation needs before anything
    changes (TargetError otherwise). `timeout`: seconds to wait for each rollout (None: the target's own)."""

    def promotion(self, timeout: Optional[float]) -> PromotionTarget: ...
    def rotation(self, timeout: Optional[float]) -> RotationTarget: ...
