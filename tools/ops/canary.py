"""The canary controller of `make promote STRATEGY=canary`: shift traffic to the challenger step by
step, judge each step on the two tracks' numbers, and send everything back to the champion at once
on a breach.

Each step sets the challenger's share, then observes both tracks from the step's start, one window
(`serving.canary.windowSeconds`) at a time, until the challenger has answered `minRequests` (at most
MAX_WINDOWS windows: then it fails as "not enough traffic"). A step breaches when the challenger's
error rate (answers >= 400: a model raising answers 400, see tools.ops.scrape) exceeds the champion's by more than `maxErrorRateIncrease` points, or its p99 exceeds
`maxP99Ratio` × the champion's and P99_FLOOR_SECONDS. At 100% the champion answers nothing: it is
judged against the champion's numbers of the last step where the champion had traffic.
The numbers come from a TrackMetrics (tools.ops.interfaces): the pods' /metrics locally, Managed
Prometheus on GKE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from pydantic import ValidationError

from infra.config import ConfigError, settings_from_values
from infra.settings import CanarySettings
from tools.offline.stack import read_stack_config
from tools.ops.interfaces import TargetError, TrackMetrics, TrackStats, TrafficRouter

MAX_WINDOWS = 5
# Below this a p99 difference is scheduling noise, never a regression worth a rollback.
P99_FLOOR_SECONDS = 0.010
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Thresholds:
    """`serving.canary` of the stack's settings."""

    steps: tuple[int, ...]
    window_seconds: float
    min_requests: int
    max_error_rate_increase: float
    """Percentage points of errors (answers >= 400) the challenger may add to the champion's rate."""
    max_p99_ratio: float

    @classmethod
    def from_settings(cls, canary: CanarySettings) -> "Thresholds":
        return cls(tuple(canary.steps), float(canary.window_seconds), canary.min_requests,
                   canary.max_error_rate_increase, canary.max_p99_ratio)

    def with_steps(self, steps: Sequence[int]) -> "Thresholds":
        return Thresholds(tuple(steps), self.window_seconds, self.min_requests, self.max_error_rate_increase,
                          self.max_p99_ratio)


def canary_thresholds(stack: str) -> Thresholds:
    """`serving.canary` of Pulumi.<stack>.yaml (what the stack's `pulumi up` was given)."""
    try:
        return Thresholds.from_settings(settings_from_values(read_stack_config(stack)[0]).serving.canary)
    except (OSError, ConfigError) as err:
        raise TargetError(f"reading stack {stack}'s serving.canary: {err}") from None


def parse_steps(text: str) -> tuple[int, ...]:
    """`10,50,100`, checked as serving.canary.steps is."""
    try:
        return CanarySettings(steps=[int(part) for part in text.split(",")]).steps
    except (ValueError, ValidationError) as err:
        detail = err.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(err, ValidationError) else \
            "expected comma-separated whole percentages, e.g. 10,50,100"
        raise ValueError(f"STEPS={text!r}: {detail}") from None


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "wait" or "breach"
    reason: str


def describe(track: str, stats: TrackStats) -> str:
    p99 = "n/a" if stats.p99_seconds is None else f"{stats.p99_seconds * 1000:.1f} ms"
    return (f"{track} {stats.requests:.0f} requests, {stats.errors:.0f} errors ({stats.error_percent:.2f}%), "
            f"p99 {p99}")


def judge(champion: TrackStats, challenger: TrackStats, thresholds: Thresholds, last_window: bool) -> Verdict:
    """One step's verdict on the numbers since the step began (`champion`: the baseline to compare
    with). Errors are judged as soon as the challenger has min_requests; before, a wait (or, on the
    last window, a failure)."""
    numbers = f"{describe(CHALLENGER, challenger)}; {describe(CHAMPION, champion)}"
    if challenger.requests < thresholds.min_requests:
        if last_window:
            return Verdict("breach", f"not enough traffic: the challenger answered {challenger.requests:.0f} requests "
                                     f"in {MAX_WINDOWS} windows, fewer than serving.canary.minRequests "
                                     f"({thresholds.min_requests}); {numbers}")
        return Verdict("wait", f"{challenger.requests:.0f} of {thresholds.min_requests} requests so far")
    increase = challenger.error_percent - champion.error_percent
    if increase > thresholds.max_error_rate_increase:
        return Verdict("breach", f"error rate {increase:+.2f} points over the champion's, more than "
                                 f"serving.canary.maxErrorRateIncrease ({thresholds.max_error_rate_increase:g}); "
                                 f"{numbers}")
    if (challenger.p99_seconds is not None and champion.p99_seconds is not None
            and challenger.p99_seconds > max(thresholds.max_p99_ratio * champion.p99_seconds, P99_FLOOR_SECONDS)):
        return Verdict("breach", f"p99 {challenger.p99_seconds / champion.p99_seconds:.2f} × the champion's, more "
                                 f"than serving.canary.maxP99Ratio ({thresholds.max_p99_ratio:g}); {numbers}")
    return Verdict("pass", numbers)


class CanaryBreach(RuntimeError):
    """A step breached; all traffic is back on the champion."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"step {step}%: {reason}")
        self.step = step


def run_steps(router: TrafficRouter, metrics: TrackMetrics, thresholds: Thresholds, *,
              log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Every step in order; a summary of each passed step. On a breach the router sends all traffic to
    the champion before CanaryBreach is raised."""
    baseline: Optional[TrackStats] = None
    passed = []
    for step in thresholds.steps:
        log(router.route(step, mirror=False))
        mark = metrics.mark()
        for window in range(1, MAX_WINDOWS + 1):
            sleep(thresholds.window_seconds)
            stats = metrics.since(mark)
            champion = stats[CHAMPION]
            if champion.requests >= thresholds.min_requests or baseline is None:
                baseline = champion
            verdict = judge(baseline, stats[CHALLENGER], thresholds, last_window=window == MAX_WINDOWS)
            if verdict.outcome == "wait":
                log(f"step {step}%: waiting another window ({verdict.reason})")
                continue
            if verdict.outcome == "breach":
                log(router.abort())
                raise CanaryBreach(step, verdict.reason)
            passed.append(f"step {step}%: {verdict.reason}")
            log(f"step {step}% passed: {verdict.reason}")
            break
    return passed
