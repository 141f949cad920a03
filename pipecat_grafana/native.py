"""Per-call exponential histograms, which Grafana Cloud stores as native histograms.

Mimir's OTLP endpoint turns an OTLP exponential histogram into a Prometheus native
histogram: one series per attribute set, whatever its number of buckets, where an
explicit-bucket histogram costs a series per bucket plus ``_sum`` and ``_count``.
``NativeHistogram`` aggregates one instrument's measurements that way, with the same
interface as ``aggregation.CallHistogram``: recording updates a dictionary under a
lock on the event loop, and the export thread reads the aggregate as an SDK
``Metric`` that the SDK's exporter encodes.

Bucket indices follow the OpenTelemetry SDK's mapping (``exponential``), so that a
point here is the point the SDK's ``ExponentialBucketHistogramAggregation`` would make
of the same values (tests hold it to that).

Resolution. A bucket's upper bound is ``2 ** (2 ** -scale)`` times its lower one.
Scale 3 (buckets 9 % wide, a quantile within about 4 % of the truth) spans a voice
bot's whole range, 1 ms to 60 s, in 128 buckets, under the 160 Grafana Cloud keeps in
a native histogram; scale 4 would need 255 and be merged down at ingestion. Grafana
Cloud bills a native histogram by the buckets it uses, so a finer scale than the
dashboard needs is paid for on every send. Values outside that range are kept: as
the SDK does, the histogram halves its resolution until its buckets fit in 160 again,
so what is sent is never merged further by Grafana Cloud.
"""

import math
import threading
import time
from dataclasses import dataclass, field

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Metric,
)

from pipecat_grafana import instruments
from pipecat_grafana.aggregation import (
    Attributes,
    CallHistogram,
    ExemplarContext,
    HistogramSeries,
    histogram_metric,
)
from pipecat_grafana.exponential import BucketMapping
from pipecat_grafana.instruments import InstrumentSpec
from pipecat_grafana.notices import warn_once

MAX_SCALE = 3
"""The finest resolution: buckets ``2 ** (1/8)`` (9 %) wide, 128 of them from 1 ms to 60 s."""

MAX_SIZE = 160
"""Buckets per sign at most: Grafana Cloud's cap on a native histogram, so it never merges."""

BucketKey = tuple[int, int]
"""A bucket: its sign (1, -1, or 0 for the zero bucket) and its index at the series' scale."""


def _scale_change(low: int, high: int, max_size: int) -> int:
    """How many times to halve the resolution for indices ``low..high`` to fit ``max_size``."""
    change = 0
    while high - low >= max_size:
        low >>= 1
        high >>= 1
        change += 1
    return change


@dataclass(slots=True)
class NativeSeries:
    """The cumulative state of one exponential histogram series (one attribute set).

    Parameters:
        mapping: Which bucket holds a value, at the current scale.
        count: Values recorded.
        sum: Their sum.
        min: The smallest.
        max: The largest.
        zero_count: Values exactly 0.
        positive: Count per bucket index of the positive values.
        negative: Count per bucket index of the negative values' magnitudes.
        bounds: The lowest and highest index used, per sign (1 and -1), when used.
        exemplars: The latest measurement per bucket, with when and what it links to;
            ``None`` until the first. An export sends those newer than its last send.
    """

    mapping: BucketMapping
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    zero_count: int = 0
    positive: dict[int, int] = field(default_factory=dict)
    negative: dict[int, int] = field(default_factory=dict)
    bounds: dict[int, tuple[int, int]] = field(default_factory=dict)
    exemplars: dict[BucketKey, tuple[float, int, ExemplarContext]] | None = None

    @property
    def scale(self) -> int:
        """The resolution the buckets are at now."""
        return self.mapping.scale

    def add(self, value: float, max_size: int) -> BucketKey:
        """Count ``value`` (finite), halving the resolution first if it would not fit.

        Returns:
            The bucket it went into.
        """
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value == 0:
            self.zero_count += 1
            return (0, 0)
        sign, magnitude = (1, value) if value > 0 else (-1, -value)
        index = self.mapping.index(magnitude)
        bounds = self.bounds.get(sign)
        if bounds is None:
            self.bounds[sign] = (index, index)
        elif not bounds[0] <= index <= bounds[1]:  # a bucket further out: does it fit?
            low, high = min(bounds[0], index), max(bounds[1], index)
            if high - low >= max_size:
                self._downscale(_scale_change(low, high, max_size))
                index = self.mapping.index(magnitude)
                low, high = self.bounds[sign]
                low, high = min(low, index), max(high, index)
            self.bounds[sign] = (low, high)
        buckets = self.positive if sign > 0 else self.negative
        buckets[index] = buckets.get(index, 0) + 1
        return (sign, index)

    def _downscale(self, change: int) -> None:
        """Merge every ``2 ** change`` neighbouring buckets into one, exemplars too."""
        self.mapping = BucketMapping(self.mapping.scale - change)
        for buckets in (self.positive, self.negative):
            merged: dict[int, int] = {}
            for index, count in buckets.items():
                merged[index >> change] = merged.get(index >> change, 0) + count
            buckets.clear()
            buckets.update(merged)
        self.bounds = {s: (low >> change, high >> change) for s, (low, high) in self.bounds.items()}
        if self.exemplars:
            kept: dict[BucketKey, tuple[float, int, ExemplarContext]] = {}
            for (sign, index), exemplar in self.exemplars.items():
                key = (sign, index >> change)
                if key not in kept or exemplar[1] >= kept[key][1]:
                    kept[key] = exemplar
            self.exemplars = kept

    def buckets(self, sign: int) -> Buckets:
        """The dense buckets of one sign, from the lowest index used to the highest.

        A sign without values has no buckets at all (the SDK sends one empty bucket,
        which a native histogram would keep and count).
        """
        if sign not in self.bounds:
            return Buckets(offset=0, bucket_counts=[])
        counts = self.positive if sign > 0 else self.negative
        low, high = self.bounds[sign]
        return Buckets(offset=low, bucket_counts=[counts.get(i, 0) for i in range(low, high + 1)])

    def copy(self) -> "NativeSeries":
        """A snapshot that later records do not change."""
        return NativeSeries(
            self.mapping,
            self.count,
            self.sum,
            self.min,
            self.max,
            self.zero_count,
            dict(self.positive),
            dict(self.negative),
            dict(self.bounds),
            dict(self.exemplars) if self.exemplars is not None else None,
        )

    def otlp_exemplars(self) -> list[Exemplar]:
        """The exemplars as the SDK's, one per bucket at most, oldest first."""
        return [
            Exemplar(
                filtered_attributes={instruments.CALL_ID: context.call_id},
                value=value,
                time_unix_nano=at,
                span_id=context.span_id or None,
                trace_id=context.trace_id or None,
            )
            for value, at, context in sorted((self.exemplars or {}).values(), key=_at)
        ]


def _at(exemplar: tuple[float, int, ExemplarContext]) -> int:
    return exemplar[1]


class NativeHistogram:
    """One call's exponential histogram of one instrument, by attribute set.

    Example::

        histogram = NativeHistogram(instruments.TTFB)
        histogram.record(412.0, {"processor": "OpenAILLMService#0"})
        metric = histogram.metric(start_ns, time.time_ns(), {})
    """

    def __init__(
        self, spec: InstrumentSpec, *, max_scale: int = MAX_SCALE, max_size: int = MAX_SIZE
    ):
        """Create an empty histogram.

        Args:
            spec: The instrument it aggregates.
            max_scale: The finest resolution, used until values need more buckets.
            max_size: The most buckets per sign; more halve the resolution.
        """
        if max_size < 2:
            # At the coarsest scale every float fits in two buckets, never in one.
            raise ValueError(f"max_size must be at least 2, got {max_size}")
        self._spec = spec
        self._mapping = BucketMapping(max_scale)  # raises ValueError outside -10..20
        self._max_size = max_size
        self._lock = threading.Lock()  # guards _series
        self._series: dict[Attributes, NativeSeries] = {}

    def record(
        self, value: float, attributes: dict[str, str], exemplar: ExemplarContext | None = None
    ) -> None:
        """Add one measurement, and keep it as its bucket's exemplar when given one.

        A value that is not finite is left out (a NaN has no bucket; an infinity would
        collapse the histogram to its coarsest resolution) and said once.
        """
        if not math.isfinite(value):
            self._skip(value)
            return
        key = tuple(sorted(attributes.items()))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = NativeSeries(self._mapping)
            bucket = series.add(value, self._max_size)
            if exemplar is not None:
                if series.exemplars is None:
                    series.exemplars = {}
                series.exemplars[bucket] = (value, time.time_ns(), exemplar)

    def _skip(self, value: float) -> None:
        warn_once(
            f"native:not-finite:{self._spec.name}",
            f"{self._spec.name}: left out a value of {value} (a histogram keeps finite "
            "values only; logged once)",
        )

    @property
    def spec(self) -> InstrumentSpec:
        """The instrument this histogram aggregates."""
        return self._spec

    def snapshot(self) -> list[tuple[Attributes, NativeSeries]]:
        """Every series as it is now, as sorted attribute pairs; exemplars are left in place."""
        with self._lock:
            return [(key, series.copy()) for key, series in self._series.items()]

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """The cumulative exponential histogram, each point with ``labels`` added; None if empty."""
        snapshot = self.snapshot()
        if not snapshot:
            return None
        points = [
            ExponentialHistogramDataPoint(
                attributes={**dict(key), **labels},
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=series.count,
                sum=series.sum,
                scale=series.scale,
                zero_count=series.zero_count,
                positive=series.buckets(1),
                negative=series.buckets(-1),
                flags=0,
                min=series.min,
                max=series.max,
                exemplars=series.otlp_exemplars(),
            )
            for key, series in snapshot
        ]
        return histogram_metric(self._spec, ExponentialHistogram, points)


class HistogramForm:
    """The form one export pipeline pushes its histograms in: native, until refused.

    Attributes:
        native: Whether histograms are pushed as exponential histograms now. It turns
            off, for the process, when the endpoint refuses them; never on again.
    """

    def __init__(self, native: bool):
        self.native = native

    def histogram(self, spec: InstrumentSpec) -> "CallHistogram | DualHistogram":
        """A new histogram of ``spec`` in this form."""
        return DualHistogram(spec, self) if self.native else CallHistogram(spec)


class DualHistogram:
    """One histogram kept in both forms: exponential for the push, explicit for the rest.

    The scrape endpoint serves explicit buckets (the exposition library has no native
    histograms), and an endpoint that refuses exponential histograms gets the explicit
    ones from then on, with every measurement since the start: so both are kept. A
    measurement costs the two records (a few microseconds, on the event loop).
    """

    def __init__(self, spec: InstrumentSpec, form: HistogramForm):
        self._form = form
        self.native = NativeHistogram(spec)
        self.classic = CallHistogram(spec)

    @property
    def spec(self) -> InstrumentSpec:
        """The instrument this histogram aggregates."""
        return self.classic.spec

    def record(
        self, value: float, attributes: dict[str, str], exemplar: ExemplarContext | None = None
    ) -> None:
        """Add one measurement to both forms."""
        self.classic.record(value, attributes, exemplar)
        self.native.record(value, attributes, exemplar)

    def snapshot(self) -> list[tuple[Attributes, HistogramSeries]]:
        """The explicit-bucket series, as the scrape endpoint serves them."""
        return self.classic.snapshot()

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """The series in the form pushed now."""
        form = self.native if self._form.native else self.classic
        return form.metric(start_ns, now_ns, labels)
