# -*- test-case-name: tests.test_bench -*-
"""
Latency histograms that merge across processes and serialise to small JSON:
logarithmic buckets 1 % wide from 1 µs up, so a percentile is exact to 1 %.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

_BASE = 1.01
_LOG_BASE = math.log(_BASE)
_FLOOR = 1e-6  # seconds: everything below lands in bucket 0


class Histogram:
    __slots__ = ("buckets", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, seconds: float) -> None:
        if seconds < _FLOOR:
            index = 0
        else:
            index = int(math.log(seconds / _FLOOR) / _LOG_BASE)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: "Histogram") -> "Histogram":
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def percentile(self, p: float) -> float | None:
        """The value below which C{p} percent of the samples lie (seconds)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                # The bucket's geometric middle, kept inside the observed range.
                value = _FLOOR * _BASE ** (index + 0.5)
                return min(max(value, self.min), self.max)
        return self.max

    def summary(self, scale: float = 1000.0) -> dict[str, Any]:
        """count, mean, p50, p95, p99, max (in ms by default)."""
        if not self.count:
            return {"count": 0}

        def r(v: float | None) -> float | None:
            return None if v is None else round(v * scale, 3)

        return {
            "count": self.count,
            "mean": r(self.total / self.count),
            "p50": r(self.percentile(50)),
            "p95": r(self.percentile(95)),
            "p99": r(self.percentile(99)),
            "max": r(self.max),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "b": [[i, n] for i, n in self.buckets.items()],
            "count": self.count,
            "total": self.total,
            "min": None if self.min == math.inf else self.min,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Histogram":
        h = cls()
        h.buckets = {int(i): int(n) for i, n in data.get("b", [])}
        h.count = int(data.get("count", 0))
        h.total = float(data.get("total", 0.0))
        h.min = math.inf if data.get("min") is None else float(data["min"])
        h.max = float(data.get("max", 0.0))
        return h

    @classmethod
    def merged(cls, parts: Iterable[dict[str, Any] | "Histogram"]) -> "Histogram":
        h = cls()
        for part in parts:
            h.merge(part if isinstance(part, Histogram) else cls.from_json(part))
        return h


def median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
