"""What a Deployment's manifest says about replacing and stopping its pods, read as the
controller and the kubelet read it: the rollout order from `strategy.rollingUpdate`, and per
container the `preStop` hook and the pod's `terminationGracePeriodSeconds`. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from tools.local.manifests import pod_spec
from tools.local.processes import LocalPlatformError

SURGE_FIRST = "surge-first"    # maxSurge >= 1, maxUnavailable 0: new pod ready, then the old one goes
REMOVE_FIRST = "remove-first"  # maxSurge 0: the old pod goes first (capacity drops for a while)
DEFAULT_GRACE_SECONDS = 30     # Kubernetes' default terminationGracePeriodSeconds


@dataclass(frozen=True)
class Termination:
    grace_seconds: float
    """SIGKILL this long after deletion, whatever the hooks are doing (the kubelet's rule)."""
    pre_stop_seconds: dict[str, float]
    """container name -> seconds its preStop hook keeps it running before SIGTERM."""


def pre_stop_seconds(container: dict) -> float:
    """The preStop hook as a delay: `sleep: {seconds: N}` or `exec: [sleep, N]`; anything else is
    refused (the local platform would not run it as the kubelet does)."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not hook:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = (hook.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    raise LocalPlatformError(f"container {container['name']!r}: preStop {hook} cannot run locally "
                             "(only a sleep, as `sleep: {seconds: N}` or `exec: [sleep, N]`)")


def termination(workload: dict) -> Termination:
    spec = pod_spec(workload)
    return Termination(float(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
                       {c["name"]: pre_stop_seconds(c) for c in spec["containers"]})


def rollout_order(workload: dict) -> str:
    """How one local replica is replaced, from the Deployment's strategy (defaults 25%/25%, which
    round to surge 1 / unavailable 0 for one replica)."""
    strategy = workload["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return REMOVE_FIRST
    rolling = strategy.get("rollingUpdate") or {}
    surge = rolling.get("maxSurge", "25%")
    # A percentage of one replica rounds up: any non-zero one is one pod.
    surge_pods = (1 if int(surge.rstrip("%")) > 0 else 0) if isinstance(surge, str) else int(surge)
    return SURGE_FIRST if surge_pods >= 1 else REMOVE_FIRST
