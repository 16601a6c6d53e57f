"""A column profile of training data and the Population Stability Index of served data against it.

Pure Python (no numpy): the profile is a few bins per column, and the suite tests it without the image.

Numeric columns: BINS quantile bins of the training values (edges between them; the outer bins are open),
with the share of training values in each. Categorical columns (text, booleans): the MAX_CATEGORIES most
frequent training values, with an OTHER bucket for the rest, so a value never seen in training lands
somewhere. PSI sums (a - e) * ln(a / e) over the bins of the expected (training) shares e and the actual
(served) shares a, each floored at EPSILON so an empty bin costs a large but finite amount.

Served values are counted into the bins as they are read (BinCounts), so a window of any size costs a few
integers per column. A served value a numeric profile cannot place (text, NaN) counts in one more bin,
which training never filled: a client sending text in a numeric column shows as drift, and stops nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

BINS = 10
MAX_CATEGORIES = 20
OTHER = "__other__"
EPSILON = 1e-4
FORMAT = 1  # the stored profile's version: a reader refuses another


@dataclass(frozen=True)
class ColumnProfile:
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...]
    """Numeric: the inner edges of the bins (bin i holds edges[i-1] < x <= edges[i])."""
    categories: tuple[str, ...]
    """Categorical: the categories with a bin of their own; the last bin is OTHER."""
    shares: tuple[float, ...]
    """Share of the training values in each bin (len(edges) + 1, or len(categories) + 1)."""

    def bin_of(self, value: Any) -> int:
        """The bin of `value`; `width` (one past the last) for a value a numeric profile cannot place."""
        if self.kind == "numeric":
            try:
                number = float(value)
            except (TypeError, ValueError):
                return self.width
            return self.width if math.isnan(number) else sum(1 for edge in self.edges if number > edge)
        text = _category(value)
        return self.categories.index(text) if text in self.categories else len(self.categories)

    @property
    def width(self) -> int:
        return len(self.edges) + 1 if self.kind == "numeric" else len(self.categories) + 1

    def shares_of(self, values: Sequence[Any]) -> tuple[float, ...]:
        counts = Counter(self.bin_of(value) for value in values if not _missing(value))
        total = sum(counts.values())
        return tuple(counts[i] / total if total else 0.0 for i in range(self.width))


@dataclass
class BinCounts:
    """One column's served values counted into its profile's bins, plus the unplaceable bin."""
    profile: ColumnProfile
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (self.profile.width + 1)

    def add(self, value: Any) -> None:
        if not _missing(value):
            self.counts[self.profile.bin_of(value)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    def psi(self) -> float:
        return psi(self.profile.shares + (0.0,), [count / self.total for count in self.counts])


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, float) and math.isnan(value)


def _category(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)


def quantile_edges(values: Sequence[float], bins: int = BINS) -> tuple[float, ...]:
    """The distinct inner quantile edges (1/bins … (bins-1)/bins) of `values`, interpolated linearly."""
    ordered = sorted(float(value) for value in values)
    edges = []
    for step in range(1, bins):
        position = step / bins * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        edges.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return tuple(sorted(set(edges)))


def profile_column(values: Sequence[Any]) -> ColumnProfile:
    present = [value for value in values if not _missing(value)]
    if not present:
        raise ValueError("a column with no values has no profile")
    if _numeric(present):
        bins = ColumnProfile("numeric", quantile_edges(present), (), ())
    else:
        common = Counter(map(_category, present)).most_common(MAX_CATEGORIES)
        bins = ColumnProfile("categorical", (), tuple(category for category, _ in common), ())
    return ColumnProfile(bins.kind, bins.edges, bins.categories, bins.shares_of(present))


def profile_columns(columns: Mapping[str, Sequence[Any]]) -> dict[str, ColumnProfile]:
    """The profile of each column that has values."""
    return {name: profile_column(values) for name, values in columns.items()
            if any(not _missing(value) for value in values)}


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected shares against {len(actual)} actual ones")
    return sum((a - e) * math.log(a / e) for e, a in ((max(e, epsilon), max(a, epsilon))
                                                      for e, a in zip(expected, actual)))


def dumps(profiles: Mapping[str, ColumnProfile]) -> str:
    return json.dumps({"format": FORMAT, "columns": {
        name: {"kind": p.kind, "edges": list(p.edges), "categories": list(p.categories),
               "shares": [round(share, 6) for share in p.shares]}
        for name, p in sorted(profiles.items())}}, separators=(",", ":"))


def loads(text: str) -> dict[str, ColumnProfile]:
    document = json.loads(text)
    if document.get("format") != FORMAT:
        raise ValueError(f"profile format {document.get('format')!r}; this reader knows {FORMAT}")
    return {name: ColumnProfile(column["kind"], tuple(column["edges"]), tuple(column["categories"]),
                                tuple(column["shares"]))
            for name, column in document["columns"].items()}
