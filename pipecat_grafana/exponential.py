"""Which bucket of an OTLP exponential histogram holds a value, and where a bucket starts.

At scale ``s``, bucket ``i`` holds the values ``v`` with ``base**i < v <= base**(i + 1)``,
``base = 2 ** (2 ** -s)`` (the OTLP data model). The maths is the OpenTelemetry SDK's
step for step, so that a point built here is the point its exponential aggregation
builds from the same values: the binary exponent read off the float at scale 0 and
below, a logarithm above, exact at powers of two at every scale, and values below the
smallest normal float in the bucket of that float. The SDK keeps its own in a private
package; tests/test_exponential.py holds this one to the SDK's public aggregation.
"""

import math
import sys

MIN_SCALE = -10
"""The coarsest scale: two buckets, ``2 ** 1024`` wide, hold every positive float."""

MAX_SCALE = 20
"""The finest scale the SDK aggregates at: about a million buckets per power of two."""

_MIN_NORMAL = sys.float_info.min  # 2 ** -1022
_MAX_NORMAL_EXPONENT = sys.float_info.max_exp - 1  # the largest float is under 2 ** 1024


class BucketMapping:
    """The buckets of one scale: which one holds a value, where one starts.

    Example::

        buckets = BucketMapping(3)
        buckets.index(1000.0)  # 79: 2 ** (79 / 8) < 1000 <= 2 ** (80 / 8)
        buckets.lower_bound(79)  # 939.01...
    """

    __slots__ = ("_factor", "_max_index", "_min_index", "scale")

    def __init__(self, scale: int):
        """Create the mapping of ``scale``.

        Raises:
            ValueError: ``scale`` is outside ``MIN_SCALE..MAX_SCALE``.
        """
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise ValueError(f"scale must be from {MIN_SCALE} to {MAX_SCALE}, got {scale}")
        self.scale = scale
        # The bucket of the smallest normal float (subnormals share it) and the last one.
        self._min_index = self._power_of_two(math.frexp(_MIN_NORMAL)[1])
        self._max_index = (
            (((_MAX_NORMAL_EXPONENT + 1) << scale) - 1)
            if scale > 0
            else (_MAX_NORMAL_EXPONENT >> -scale)
        )
        self._factor = math.ldexp(1 / math.log(2), scale)  # buckets per factor e

    def _power_of_two(self, exponent: int) -> int:
        """The index of ``2 ** (exponent - 1)``: the upper bound of its bucket."""
        if self.scale > 0:
            return ((exponent - 1) << self.scale) - 1
        return (exponent - 2) >> -self.scale

    def index(self, value: float) -> int:
        """The index of the bucket holding ``value``, a positive finite float."""
        mantissa, exponent = math.frexp(max(value, _MIN_NORMAL))  # mantissa in [0.5, 1)
        if mantissa == 0.5:
            return self._power_of_two(exponent)
        if self.scale <= 0:
            return (exponent - 1) >> -self.scale
        # Rounding may put a value next to a bound one bucket off, as in the SDK.
        return min(math.floor(math.log(value) * self._factor), self._max_index)

    def lower_bound(self, index: int) -> float:
        """The lower bound of bucket ``index`` (the values it holds are greater).

        Raises:
            ValueError: The bucket lies wholly below the smallest normal float or above
                the largest float.
        """
        if not self._min_index <= index <= self._max_index:
            raise ValueError(f"bucket {index} at scale {self.scale} is outside the floats")
        if self.scale <= 0:
            return math.ldexp(1.0, index << -self.scale)
        # At either end, from a power of two away: exp() alone would overflow at the top and
        # lose precision among the subnormals at the bottom.
        if index == self._max_index:
            return 2 * math.exp((index - (1 << self.scale)) / self._factor)
        if index == self._min_index + 1:
            return _MIN_NORMAL
        if index == self._min_index:
            return math.exp((index + (1 << self.scale)) / self._factor) / 2
        return math.exp(index / self._factor)
