"""Waits until CustomResourceDefinitions are Established: the gate before the serving Gateway's objects.

GKE installs the Gateway API's CRDs (and its HealthCheckPolicy) minutes after the cluster's Gateway
API setting is turned on, also on an existing cluster, where that is an in-place update. Pulumi's
Kubernetes provider retries an unknown kind for only about a minute, so the Gateway, HTTPRoute and
HealthCheckPolicy wait for this Job, which polls each CRD until its Established condition is True.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

POLL_SECONDS = 5.0


class NotEstablished(RuntimeError):
    """A CRD was still missing or not Established when the budget was spent."""


def established(crd: Optional[dict]) -> bool:
    """True once the API server serves the CRD's kind (condition Established=True); None = no such CRD yet."""
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def wait_established(names: Sequence[str], fetch: Callable[[str], Optional[dict]], budget: float, *,
                     clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                     log: Callable[[str], None] = print) -> None:
    """Poll `fetch(name)` (the CRD, or None while it does not exist) every POLL_SECONDS until every name is
    Established; NotEstablished naming those still waiting once the next poll would pass `budget` seconds."""
    deadline = clock() + budget
    waiting = list(names)
    while True:
        waiting = [name for name in waiting if not established(fetch(name))]
        if not waiting:
            log(f"established: {', '.join(names)}")
            return
        if clock() + POLL_SECONDS > deadline:
            raise NotEstablished(f"not established after {budget:.0f}s: {', '.join(waiting)}")
        log(f"waiting for {', '.join(waiting)}")
        sleep(POLL_SECONDS)
