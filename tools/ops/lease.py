"""Who may change the serving split: one promotion or challenger command at a time. Each takes the
route's lease before its first change and gives it back after its last; a second one is refused,
naming the holder and since when (`make challenger-abort` needs no lease: stopping always works).

The lease is where the split lives: an annotation on the HTTPRoute written with a resourceVersion
precondition (tools/ops/traffic.py), or a file created exclusively next to `make local`'s split map
(tools/ops/local.py)."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

from tools.ops.interfaces import RolloutError, TrafficRouter


class LeaseHeld(RolloutError):
    """Another command holds the split."""


@dataclass(frozen=True)
class Lease:
    holder: str
    """user@host pid N: the command"""
    since: str
    """UTC, ISO 8601"""

    @classmethod
    def mine(cls) -> "Lease":
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
        return cls(f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}: {command}",
                   datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> "Lease":
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return cls(text, "an unknown time")

    def refusal(self, where: str, release: str) -> LeaseHeld:
        return LeaseHeld(f"the serving split is held by {self.holder} since {self.since} ({where}): wait for it to "
                         f"finish; if that command is gone, {release}")


@contextmanager
def holding(router: TrafficRouter, log: Callable[[str], None]) -> Iterator[None]:
    """The router's lease for the block; released however the block ends (a failed release is said,
    never raised over the block's own outcome)."""
    router.acquire(Lease.mine())
    try:
        yield
    finally:
        try:
            router.release()
        except RolloutError as err:
            log(f"the serving split's lease was not released: {err}")
