"""What an exponential (native) histogram costs to record, and how many buckets it bills.

``NativeHistogram.record`` runs on the event loop for every latency Pipecat reports,
as ``CallHistogram.record`` does today. This script measures, in the same run and in
alternated rounds, the CPU time of one ``record`` for:

- ``CallHistogram`` (explicit buckets, the 11 latency bounds of the contract);
- ``NativeHistogram`` (scale 3, 160 buckets), without and with an exemplar;
- the SDK's own ``Histogram.record`` aggregated by ``ExponentialBucketHistogramAggregation``
  (the same scale and size) in a real ``MeterProvider``: what recording through the
  SDK would cost instead.

It also prints, for latency distributions a voice bot sees, how many buckets one
series uses once Mimir has turned the point into a native histogram (Grafana Cloud
bills native histograms by their buckets). Not part of the test suite; run by hand::

    .venv/bin/python benchmarks/bench_native.py
"""

import math
import random
import statistics
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from pipecat_grafana import instruments
from pipecat_grafana.aggregation import CallHistogram, ExemplarContext
from pipecat_grafana.native import MAX_SCALE, MAX_SIZE, NativeHistogram

SPEC = instruments.TTFB
ROUNDS = 15
PER_ROUND = 20_000


def latencies(rng: random.Random, count: int, median_ms: float, spread: float) -> list[float]:
    """Log-normal latencies in ms, as a service's TTFB or a turn's latency spreads."""
    return [min(60_000.0, rng.lognormvariate(math.log(median_ms), spread)) for _ in range(count)]


def cpu_per_record(record, values: list[float], attributes: list[dict[str, str]]) -> float:
    """µs of CPU per call of ``record(value, attributes)`` over ``values``."""
    start = time.thread_time()
    for value, attrs in zip(values, attributes, strict=True):
        record(value, attrs)
    return (time.thread_time() - start) / len(values) * 1e6


def sdk_record():
    reader = InMemoryMetricReader()
    view = View(
        instrument_name=SPEC.name,
        aggregation=ExponentialBucketHistogramAggregation(max_size=MAX_SIZE, max_scale=MAX_SCALE),
    )
    provider = MeterProvider(metric_readers=[reader], views=[view])
    histogram = provider.get_meter("bench").create_histogram(SPEC.name, unit=SPEC.unit)
    return provider, histogram.record


def native_buckets(histogram: NativeHistogram) -> list[int]:
    """Buckets per series as a native histogram: populated ones and gaps of up to 2.

    Mimir's OTLP translator starts a new span over a gap of more than two empty
    buckets and keeps shorter gaps as empty buckets.
    """
    counts = []
    for _, series in histogram.snapshot():
        kept = 0
        for sign in (1, -1):
            buckets = list(series.buckets(sign).bucket_counts)
            used = [i for i, count in enumerate(buckets) if count]
            kept += len(used) + sum(
                b - a - 1 for a, b in zip(used, used[1:], strict=False) if b - a - 1 <= 2
            )
        counts.append(kept)
    return counts


def main() -> None:
    rng = random.Random(18)
    processors = [f"{name}#0" for name in ("OpenAILLMService", "CartesiaTTSService", "STT")]
    values = latencies(rng, PER_ROUND, 450.0, 0.6)
    attributes = [{"processor": rng.choice(processors), "model": "gpt-4o"} for _ in values]
    link = ExemplarContext("call-1", trace_id=0xABC, span_id=0xDEF)

    provider, sdk = sdk_record()
    linked = NativeHistogram(SPEC)
    lanes = {
        "CallHistogram.record (11 bounds)": CallHistogram(SPEC).record,
        "NativeHistogram.record": NativeHistogram(SPEC).record,
        "NativeHistogram.record + exemplar": lambda v, a: linked.record(v, a, link),
        "SDK Histogram.record (exponential view)": sdk,
    }
    times: dict[str, list[float]] = {name: [] for name in lanes}
    for _ in range(ROUNDS):  # alternated rounds: the machine's noise falls on every lane
        for name, record in lanes.items():
            times[name].append(cpu_per_record(record, values, attributes))
    provider.shutdown()

    classic = statistics.median(times["CallHistogram.record (11 bounds)"])
    print(f"record() CPU per call, median of {ROUNDS} alternated rounds of {PER_ROUND:,}:")
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = f"{min(samples):.2f}-{max(samples):.2f}"
        print(f"  {name:<42} {median:6.2f} µs  ({spread})  {median / classic:4.1f}x classic")

    print(f"\nBuckets per series as a native histogram (at most {MAX_SIZE}), by scale:")
    print(f"  {'':<40} {'values':>13}  scale {MAX_SCALE - 1}  scale {MAX_SCALE}")
    shapes = {
        "TTFB, median 450 ms, sigma 0.6": (450.0, 0.6),
        "turn latency, median 1.2 s, sigma 0.5": (1200.0, 0.5),
        "tool call, median 300 ms, sigma 1.2": (300.0, 1.2),
    }
    for label, (median_ms, spread) in shapes.items():
        for count in (10, 100, 10_000):
            values = latencies(rng, count, median_ms, spread)
            buckets = []
            for scale in (MAX_SCALE - 1, MAX_SCALE):
                histogram = NativeHistogram(SPEC, max_scale=scale)
                for value in values:
                    histogram.record(value, {})
                buckets += native_buckets(histogram)
            print(f"  {label:<40} {count:>6,} values  {buckets[0]:>7}  {buckets[1]:>7}")
    whole = NativeHistogram(SPEC)
    for value in (1.0, 60_000.0):
        whole.record(value, {})
    ((_, series),) = whole.snapshot()
    span = len(series.buckets(1).bucket_counts)
    print(f"  1 ms to 60 s spans {span} buckets at scale {series.scale} (cap {MAX_SIZE})")


if __name__ == "__main__":
    main()
