"""Latency statistics in constant memory per call.

A long call reports thousands of latencies; keeping them all to compute a
percentile would grow without bound. ``LatencySketch`` keeps exact count, sum,
min and max, and a log-bucketed histogram whose percentiles are within 1 % of
the true value (the DDSketch idea): at most ``_MAX_BUCKETS`` buckets, whatever
the number of values.
"""

import math

from pipecat_grafana.instruments import MAX_LATENCY_MS

_RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + _RELATIVE_ACCURACY) / (1 - _RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Values below this (in ms) share the lowest bucket: 1 µs is below anything a
# pipeline can measure. With the 1 h cap on latencies this bounds the buckets.
_MIN_VALUE = 0.001
_MAX_BUCKETS = math.ceil(math.log(MAX_LATENCY_MS / _MIN_VALUE) / _LOG_GAMMA) + 1


class LatencySketch:
    """Count, sum, min, max and approximate percentiles of non-negative values."""

    __slots__ = ("count", "total", "min", "max", "_buckets")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        """Add one value (callers pass finite, non-negative values)."""
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        index = self._index(value)
        self._buckets[index] = self._buckets.get(index, 0) + 1

    @property
    def average(self) -> float:
        """Mean of the values added (0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Value at quantile ``q`` (0..1) by nearest rank, within 1 %, clamped to [min, max]."""
        if not self.count:
            return 0.0
        rank = max(math.ceil(q * self.count), 1)
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                estimate = 2 * _GAMMA**index / (_GAMMA + 1)
                return min(max(estimate, self.min), self.max)
        return self.max

    @staticmethod
    def _index(value: float) -> int:
        return math.ceil(math.log(max(value, _MIN_VALUE)) / _LOG_GAMMA)
