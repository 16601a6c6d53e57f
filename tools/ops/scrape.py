"""Each track's numbers from its pods' Prometheus metrics (mlflow_image/mlflow_serving/metrics.py), as
a Prometheus server scraping them computes `increase` and `histogram_quantile`: counters read at
two instants, per pod, then subtracted (a pod that started in between counts from zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from tools.ops.interfaces import TrackStats

REQUESTS = "mlflow_serving_requests"
LATENCY = "mlflow_serving_request_duration_seconds"
SCORING_PATH = "/invocations"
# An error is any answer >= 400: MLflow's scoring answers 400 when the model itself raises an ordinary
# exception, so a version failing on part of its inputs shows as 4xx, not 5xx. The split is random, so
# callers' own bad requests reach both tracks alike and the comparison of rates stays fair.
ERROR_STATUS_MIN = 400


@dataclass(frozen=True)
class Counts:
    """One pod's cumulative /invocations counters."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = field(default=())
    """(upper bound, cumulative count), ascending, the last +Inf."""

    def minus(self, earlier: Optional["Counts"]) -> "Counts":
        """What happened since `earlier`; all of it when the counters went back (a new process)."""
        if earlier is None or self.requests < earlier.requests:
            return self
        before = dict(earlier.buckets)
        return Counts(self.requests - earlier.requests, self.errors - earlier.errors,
                      tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets))

    def plus(self, other: "Counts") -> "Counts":
        mine = dict(self.buckets)
        merged = {le: mine.get(le, 0.0) + count for le, count in other.buckets}
        merged.update({le: count for le, count in mine.items() if le not in merged})
        return Counts(self.requests + other.requests, self.errors + other.errors, tuple(sorted(merged.items())))


def is_error(status: str) -> bool:
    return status.isdigit() and int(status) >= ERROR_STATUS_MIN


def parse(exposition: str) -> Counts:
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get("path") != SCORING_PATH:
                continue
            if sample.name == f"{REQUESTS}_total":
                requests += sample.value
                errors += sample.value if is_error(sample.labels.get("status", "")) else 0.0
            elif sample.name == f"{LATENCY}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Counts(requests, errors, tuple(sorted(buckets.items())))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> Optional[float]:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation; the
    highest finite bound when it falls in +Inf; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower_bound
            width = count - lower_count
            return upper if width <= 0 else lower_bound + (upper - lower_bound) * (rank - lower_count) / width
        lower_bound, lower_count = upper, count
    return lower_bound


def stats(counts: Counts) -> TrackStats:
    return TrackStats(counts.requests, counts.errors, quantile(0.99, counts.buckets))
