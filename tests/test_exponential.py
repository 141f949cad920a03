"""Our exponential bucket maths against the SDK's public exponential aggregation.

``pipecat_grafana.exponential`` owns the piece of maths the SDK keeps private. Each value
here is recorded alone, as its own series, through a real ``MeterProvider`` with
``ExponentialBucketHistogramAggregation`` at the scale under test: one value never makes
the SDK halve its resolution, so the point's offset is the SDK's index of that value.
Lower bounds are held to the OTLP definition, ``2 ** (index / 2 ** scale)``.
"""

import math
import random
import sys

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ExponentialHistogram, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from pipecat_grafana.exponential import MAX_SCALE, MIN_SCALE, BucketMapping

SCALES = [MIN_SCALE, -4, -1, 0, 1, 3, 8, MAX_SCALE]
SERIES_PER_PROVIDER = 1000  # under the SDK's default cardinality limit of 2000
SMALLEST_NORMAL = sys.float_info.min
LARGEST = sys.float_info.max


def values() -> list[float]:
    """Powers of two and their neighbours, subnormals, the extremes, and a random spread."""
    rng = random.Random(26)
    powers = [2.0**k for k in range(-1074, 1024, 3)]
    around = [
        math.nextafter(2.0**k, toward) for k in range(-1022, 1024, 7) for toward in (0, math.inf)
    ]
    tiny = [5e-324, 1e-320, 1e-310, SMALLEST_NORMAL, math.nextafter(SMALLEST_NORMAL, 1)]
    huge = [LARGEST, math.nextafter(LARGEST, 0), 1e308, 1.5 * 2.0**1023]
    spread = [math.exp(rng.uniform(math.log(5e-324), math.log(LARGEST))) for _ in range(600)]
    bot = [math.exp(rng.uniform(math.log(1e-3), math.log(6e4))) for _ in range(300)]  # ms
    return [v for v in powers + around + tiny + huge + spread + bot if 0 < v < math.inf]


VALUES = values()


def sdk_offsets(magnitudes: list[float], scale: int, sign: int) -> dict[int, tuple]:
    """The SDK's (scale, offset, counts) for each value, recorded alone as series ``i``."""
    found: dict[int, tuple] = {}
    for start in range(0, len(magnitudes), SERIES_PER_PROVIDER):
        reader = InMemoryMetricReader()
        view = View(
            instrument_name="value",
            aggregation=ExponentialBucketHistogramAggregation(max_size=160, max_scale=scale),
        )
        provider = MeterProvider(metric_readers=[reader], views=[view])
        try:
            meter = provider.get_meter("test")
            # The histogram API refuses negative values; the aggregation takes them.
            record = (
                meter.create_histogram("value").record
                if sign > 0
                else meter.create_up_down_counter("value").add
            )
            chunk = magnitudes[start : start + SERIES_PER_PROVIDER]
            for i, magnitude in enumerate(chunk, start):
                record(sign * magnitude, {"i": i})
            (metric,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        finally:
            provider.shutdown()
        assert isinstance(metric.data, ExponentialHistogram)
        assert len(metric.data.data_points) == len(chunk)
        for point in metric.data.data_points:
            buckets = point.positive if sign > 0 else point.negative
            found[point.attributes["i"]] = (
                point.scale,
                buckets.offset,
                list(buckets.bucket_counts),
            )
    return found


@pytest.mark.parametrize("scale", SCALES)
def test_a_values_bucket_is_the_sdks(scale: int) -> None:
    buckets = BucketMapping(scale)
    sdk = sdk_offsets(VALUES, scale, sign=1)
    assert len(sdk) == len(VALUES)
    wrong = [
        (value, buckets.index(value), sdk[i])
        for i, value in enumerate(VALUES)
        if sdk[i] != (scale, buckets.index(value), [1])
    ]
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("scale", [MIN_SCALE, 0, MAX_SCALE])
def test_a_negative_values_bucket_is_its_magnitudes(scale: int) -> None:
    buckets = BucketMapping(scale)
    magnitudes = VALUES[::10]
    sdk = sdk_offsets(magnitudes, scale, sign=-1)
    assert [sdk[i] for i in range(len(magnitudes))] == [
        (scale, buckets.index(m), [1]) for m in magnitudes
    ]


def definition(index: int, scale: int) -> float:
    """``2 ** (index / 2 ** scale)``, split so that neither end overflows nor rounds to 0."""
    if scale <= 0:
        return math.ldexp(1.0, index * 2**-scale)
    whole, part = divmod(index, 2**scale)
    return math.ldexp(2 ** (part / 2**scale), whole)


@pytest.mark.parametrize("scale", SCALES)
def test_a_bucket_holds_what_its_bounds_say(scale: int) -> None:
    buckets = BucketMapping(scale)
    # Exact at scale 0 and below; one rounding of exp() above.
    slack = 0.0 if scale <= 0 else 1e-12
    for value in VALUES:
        if value < SMALLEST_NORMAL:
            continue  # in the lowest bucket, below its bound: see the test after this one
        index = buckets.index(value)
        low = buckets.lower_bound(index)
        assert low == pytest.approx(definition(index, scale), rel=slack), (value, index)
        assert low < value * (1 + slack), (value, index, low)
        if index + 1 <= buckets.index(LARGEST):
            high = buckets.lower_bound(index + 1)
            assert value <= high * (1 + slack), (value, index, high)
    width = 2 ** max(0, -scale)  # a bucket spans this many powers of two
    for k in range(-(1022 // width) * width, 1024, width):
        # Such a power of two is its bucket's upper bound (not its lower one).
        index = buckets.index(2.0**k)
        assert buckets.lower_bound(index + 1) == pytest.approx(2.0**k, rel=slack)


@pytest.mark.parametrize("scale", SCALES)
def test_a_bound_outside_the_floats_raises(scale: int) -> None:
    buckets = BucketMapping(scale)
    lowest, highest = buckets.index(5e-324), buckets.index(LARGEST)
    assert buckets.index(SMALLEST_NORMAL) == lowest  # subnormals share the lowest bucket
    assert buckets.lower_bound(lowest) < SMALLEST_NORMAL <= buckets.lower_bound(lowest + 1)
    assert buckets.lower_bound(highest) < LARGEST
    for outside in (lowest - 1, highest + 1):
        with pytest.raises(ValueError, match=f"bucket {outside} at scale {scale}"):
            buckets.lower_bound(outside)


@pytest.mark.parametrize("scale", [MIN_SCALE - 1, MAX_SCALE + 1])
def test_a_scale_the_sdk_cannot_aggregate_at_raises(scale: int) -> None:
    with pytest.raises(ValueError, match=f"got {scale}"):
        BucketMapping(scale)
    # The SDK's public aggregation refuses it too.
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises a bare Exception
        sdk_offsets([1.0], scale, sign=1)
