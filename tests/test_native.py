"""The exponential (native) histogram aggregate against the real SDK and a real receiver.

Expected points are never written here: they come from the SDK's own
``ExponentialBucketHistogramAggregation`` fed the same values through a real
``MeterProvider``. The bucket maths alone is held to the SDK in test_exponential.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipecat_grafana import instruments
from pipecat_grafana.aggregation import ExemplarContext
from pipecat_grafana.native import MAX_SCALE, MAX_SIZE, NativeHistogram
from tests.otlp_receiver import OtlpReceiver

SPEC = instruments.TTFB  # milliseconds, like every latency of the contract


def latencies(rng: random.Random) -> list[float]:
    """A voice bot's latencies in ms: log-uniform over 1 ms to 60 s, now and then exactly 0."""
    values = [math.exp(rng.uniform(0, math.log(60_000))) for _ in range(rng.randint(1, 300))]
    values += [0.0] * rng.choice((0, 0, 0, 1, 5))
    rng.shuffle(values)
    return values


def wide(rng: random.Random) -> list[float]:
    """Values far outside the sized range (microseconds to days, and negatives)."""
    values = [math.exp(rng.uniform(math.log(1e-6), math.log(1e11))) for _ in range(200)]
    return [-v if rng.random() < 0.2 else v for v in values]


def sdk_points(sets: list[list[float]], *, max_size: int, max_scale: int) -> dict[str, object]:
    """The SDK's cumulative exponential point for each set, recorded as series ``set=i``."""
    reader = InMemoryMetricReader()
    view = View(
        instrument_name=SPEC.name,
        aggregation=ExponentialBucketHistogramAggregation(max_size=max_size, max_scale=max_scale),
    )
    provider = MeterProvider(metric_readers=[reader], views=[view])
    try:
        meter = provider.get_meter("test")
        if any(value < 0 for values in sets for value in values):
            # The histogram API refuses negative values; the aggregation takes them.
            record = meter.create_up_down_counter(SPEC.name, unit=SPEC.unit).add
        else:
            record = meter.create_histogram(SPEC.name, unit=SPEC.unit).record
        for i, values in enumerate(sets):
            for value in values:
                record(value, {"set": str(i)})
        (metric,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    finally:
        provider.shutdown()
    return {point.attributes["set"]: point for point in metric.data.data_points}


def our_points(sets: list[list[float]], **sizing) -> dict[str, object]:
    histogram = NativeHistogram(SPEC, **sizing)
    for i, values in enumerate(sets):
        for value in values:
            histogram.record(value, {"set": str(i)})
    metric = histogram.metric(1, 2, {})
    assert metric is not None
    assert isinstance(metric.data, ExponentialHistogram)
    return {point.attributes["set"]: point for point in metric.data.data_points}


def buckets(b) -> tuple[int, list[int]]:
    """Offset and counts without empty buckets at either end.

    The SDK sends its whole bucket array, empty capacity included (an unused sign as
    one empty bucket); we send none of those. The histogram is the same.
    """
    counts = list(b.bucket_counts)
    if not any(counts):
        return (0, [])
    first = next(i for i, count in enumerate(counts) if count)
    last = max(i for i, count in enumerate(counts) if count)
    return (b.offset + first, counts[first : last + 1])


def as_compared(point) -> tuple:
    return (
        point.scale,
        point.zero_count,
        buckets(point.positive),
        buckets(point.negative),
        point.count,
        point.sum,
        point.min,
        point.max,
    )


@pytest.mark.parametrize(
    ("sizing", "make"),
    [
        ({}, latencies),  # the shipped sizing on a voice bot's range: never downscales
        ({"max_size": 20, "max_scale": 3}, latencies),  # downscales often
        ({"max_size": 160, "max_scale": 20}, latencies),  # the SDK's default sizing
        ({}, wide),  # far outside the sized range, negatives too
        ({"max_size": 7, "max_scale": -2}, wide),  # exponent mapping (scale <= 0)
    ],
)
def test_points_equal_the_sdk_aggregation(sizing, make) -> None:
    rng = random.Random(f"{sizing}{make.__name__}")
    sets = [make(rng) for _ in range(60)]
    sdk_sizing = {"max_size": MAX_SIZE, "max_scale": MAX_SCALE, **sizing}
    expected = sdk_points(sets, **sdk_sizing)
    ours = our_points(sets, **sizing)
    assert ours.keys() == expected.keys() == {str(i) for i in range(len(sets))}
    for key, point in expected.items():
        assert as_compared(ours[key]) == as_compared(point), f"set {key}: {sets[int(key)]}"
        for side in (ours[key].positive, ours[key].negative):  # nothing sent for nothing
            assert (side.offset, list(side.bucket_counts)) == buckets(side)


def test_points_equal_the_sdk_aggregation_export_after_export() -> None:
    """Cumulative across collections, as the SDK merges each interval into the last."""
    rng = random.Random(3)
    reader = InMemoryMetricReader()
    view = View(
        instrument_name=SPEC.name,
        aggregation=ExponentialBucketHistogramAggregation(max_size=MAX_SIZE, max_scale=MAX_SCALE),
    )
    provider = MeterProvider(metric_readers=[reader], views=[view])
    sdk = provider.get_meter("test").create_histogram(SPEC.name, unit=SPEC.unit)
    ours = NativeHistogram(SPEC)
    try:
        for _ in range(4):  # four export intervals, each with new values in every series
            for i in range(20):
                for value in latencies(rng) + [rng.choice((0.5, 90_000.0, 300.0))]:
                    sdk.record(value, {"set": str(i)})
                    ours.record(value, {"set": str(i)})
            (metric,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
            expected = {p.attributes["set"]: p for p in metric.data.data_points}
            got = {p.attributes["set"]: p for p in ours.metric(1, 2, {}).data.data_points}
            assert got.keys() == expected.keys()
            for key, point in expected.items():
                # The SDK adds each interval's sum to the last: equal but for rounding.
                assert math.isclose(got[key].sum, point.sum, rel_tol=1e-12)
                assert as_compared(replace(got[key], sum=0)) == as_compared(replace(point, sum=0))
    finally:
        provider.shutdown()


def test_a_voice_bots_range_fits_at_the_shipped_scale_and_not_finer() -> None:
    """1 ms to 60 s stays at scale 3 within Grafana Cloud's 160 buckets; scale 4 would not."""
    histogram = NativeHistogram(SPEC)
    for value in (1.0, 60_000.0):
        histogram.record(value, {})
    (point,) = histogram.metric(1, 2, {}).data.data_points
    assert point.scale == MAX_SCALE
    assert len(point.positive.bucket_counts) <= MAX_SIZE

    finer = NativeHistogram(SPEC, max_scale=MAX_SCALE + 1)
    for value in (1.0, 60_000.0):
        finer.record(value, {})
    (point,) = finer.metric(1, 2, {}).data.data_points
    assert point.scale == MAX_SCALE  # had to halve its resolution to fit


def exemplars(histogram: NativeHistogram) -> list[tuple[float, str]]:
    (point,) = histogram.metric(1, 2, {}).data.data_points
    return [(e.value, e.filtered_attributes[instruments.CALL_ID]) for e in point.exemplars]


def test_exemplars_are_the_latest_per_bucket() -> None:
    histogram = NativeHistogram(SPEC)
    for value, call in ((100.0, "a"), (101.0, "b"), (5.0, "c")):
        histogram.record(value, {}, ExemplarContext(call, trace_id=7, span_id=9))
    assert exemplars(histogram) == [(101.0, "b"), (5.0, "c")]  # 100 and 101 share a bucket
    (point,) = histogram.metric(1, 2, {}).data.data_points
    assert {(e.trace_id, e.span_id) for e in point.exemplars} == {(7, 9)}


def test_a_downscale_merges_exemplars_keeping_the_latest() -> None:
    histogram = NativeHistogram(SPEC, max_size=4)
    histogram.record(100.0, {}, ExemplarContext("a"))
    histogram.record(120.0, {}, ExemplarContext("b"))
    assert exemplars(histogram) == [(100.0, "a"), (120.0, "b")]  # two buckets at scale 3
    histogram.record(1000.0, {})  # 100 to 1000 does not fit in 4 buckets at scale 3
    (point,) = histogram.metric(1, 2, {}).data.data_points
    assert point.scale < MAX_SCALE and len(point.positive.bucket_counts) <= 4
    assert exemplars(histogram) == [(120.0, "b")]  # 100 and 120 now share a bucket


def test_values_that_are_not_finite_are_left_out_once_said(log_lines) -> None:
    histogram = NativeHistogram(SPEC)
    for value in (math.nan, math.inf, -math.inf, 250.0, math.nan):
        histogram.record(value, {})
    (point,) = histogram.metric(1, 2, {}).data.data_points
    assert (point.count, point.sum, point.scale) == (1, 250.0, MAX_SCALE)
    warnings = [line for line in log_lines if "finite" in line]
    assert len(warnings) == 1 and SPEC.name in warnings[0]


def test_an_empty_histogram_has_no_metric() -> None:
    assert NativeHistogram(SPEC).metric(1, 2, {}) is None


def test_the_real_exporter_delivers_the_same_counts() -> None:
    rng = random.Random(18)
    histogram = NativeHistogram(SPEC)
    recorded: dict[str, list[float]] = {}
    for processor in ("OpenAILLMService#0", "CartesiaTTSService#0"):
        recorded[processor] = latencies(rng) + [90_000.0]  # past 60 s: still kept
        for value in recorded[processor]:
            histogram.record(
                value, {"processor": processor}, ExemplarContext("call-1", 0xABC, 0xDEF)
            )
    metric = histogram.metric(1_000, 2_000, {instruments.CALL_ID: "call-1"})
    scope = ScopeMetrics(InstrumentationScope(instruments.METER_NAME), [metric], "")
    data = MetricsData([ResourceMetrics(Resource.create({}), [scope], "")])
    with OtlpReceiver() as receiver:
        exporter = OTLPMetricExporter(endpoint=receiver.metrics_url, timeout=5)
        assert exporter.export(data) is MetricExportResult.SUCCESS
        exporter.shutdown()
        got = receiver.latest(SPEC.name)
    sent = {p.attributes["processor"]: p for p in metric.data.data_points}
    assert {dict(k)["processor"] for k in got} == set(recorded)
    for point in got.values():
        processor = point.attributes["processor"]
        values, ours = recorded[processor], sent[processor]
        assert point.kind == "exponential_histogram" and point.temporality == 2
        assert point.attributes[instruments.CALL_ID] == "call-1"
        assert point.value == len(values) == point.zero_count + sum(point.positive[1])
        assert point.zero_count == values.count(0.0)
        assert (point.sum, point.min, point.max) == (sum(values), min(values), max(values))
        assert point.scale == ours.scale
        assert point.positive == (ours.positive.offset, tuple(ours.positive.bucket_counts))
        assert point.negative == (0, ())
        assert point.exemplars and {e.attributes[instruments.CALL_ID] for e in point.exemplars} == {
            "call-1"
        }
        assert {(e.trace_id, e.span_id) for e in point.exemplars} == {
            (f"{0xABC:032x}", f"{0xDEF:016x}")
        }
