"""Per-call aggregation: running totals and explicit-bucket histograms, kept in memory.

A call's measurements are aggregated here rather than in an SDK ``MeterProvider``
of its own: the SDK costs 12-25 µs a measurement on the event loop, and every
provider it creates registers an at-fork handler that is never released, which
would leak with every call a process serves. Recording only updates a dictionary
under a lock; the export thread reads the aggregates as SDK data points
(``Metric``), and the SDK encodes and sends them.

Counters are summed here also for the fleet-wide series, and reported through
observable instruments whose callbacks run on the export thread: the SDK's
synchronous counters cost 10-20 µs a measurement, a dictionary update a fraction
of one.
"""

import bisect
import functools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from pipecat_grafana import instruments
from pipecat_grafana.instruments import InstrumentSpec

SeriesKey = tuple[str, frozenset]
"""A series: its metric name and attribute set."""

Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ExemplarContext:
    """What an exemplar links a measurement to: its call and, when traced, its span.

    Parameters:
        call_id: The call's ID as its series carry it (also with the ``call_id`` label off).
        trace_id: The trace's ID, 0 when the call is not traced.
        span_id: The span's ID (the turn's, else the conversation's), 0 when not traced.
    """

    call_id: str
    trace_id: int = 0
    span_id: int = 0


def _key(attributes: dict[str, str]) -> Attributes:
    return tuple(sorted(attributes.items()))


class Totals:
    """Running totals of counters, by instrument and attribute set, read at each export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[InstrumentSpec, dict[Attributes, float]] = {}

    def add(self, spec: InstrumentSpec, value: float, attributes: dict[str, str]) -> None:
        """Add ``value`` to the series of ``spec`` with ``attributes``."""
        key = _key(attributes)
        with self._lock:
            series = self._values.setdefault(spec, {})
            series[key] = series.get(key, 0) + value

    def set(
        self, spec: InstrumentSpec, value: float, attributes: dict[str, str], *, per: str
    ) -> None:
        """Make ``value`` the value of ``spec``'s one series for ``attributes[per]``.

        A gauge holding one series per value of ``per``: a series of the same ``per``
        with other attributes is dropped, so that the process sends it no more.
        """
        key = _key(attributes)
        with self._lock:
            series = self._values.setdefault(spec, {})
            for other in [k for k in series if dict(k).get(per) == attributes.get(per)]:
                del series[other]
            series[key] = value

    def observations(self, spec: InstrumentSpec) -> list[Observation]:
        """The current total of every series of ``spec``."""
        with self._lock:
            items = list(self._values.get(spec, {}).items())
        return [Observation(value, dict(key)) for key, value in items]

    def snapshot(self) -> list[tuple[InstrumentSpec, list[tuple[Attributes, float]]]]:
        """Every series of every counter with its current total, as sorted attribute pairs."""
        with self._lock:
            return [(spec, list(series.items())) for spec, series in self._values.items()]

    def metrics(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> list[Metric]:
        """Every counter as a cumulative sum, each point with ``labels`` added."""
        with self._lock:
            snapshot = [(spec, list(series.items())) for spec, series in self._values.items()]
        return [
            Metric(
                name=spec.name,
                description=spec.description,
                unit=spec.unit,
                data=Sum(
                    data_points=[
                        NumberDataPoint(
                            attributes={**dict(key), **labels},
                            start_time_unix_nano=start_ns,
                            time_unix_nano=now_ns,
                            value=value,
                        )
                        for key, value in series
                    ],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=spec.kind is instruments.Kind.COUNTER,
                ),
            )
            for spec, series in snapshot
        ]


@dataclass(slots=True)
class HistogramSeries:
    """The cumulative state of one histogram series (one attribute set).

    Parameters:
        bucket_counts: Values per bucket; the last bucket is above every bound.
        count: Values recorded.
        sum: Their sum.
        min: The smallest.
        max: The largest.
        exemplars: The latest measurement per bucket, with when and what it links to
            (``None`` for a bucket without one); ``None`` until the first. An export
            sends those newer than the series' last accepted send.
    """

    bucket_counts: list[int]
    count: int
    sum: float
    min: float
    max: float
    exemplars: list[tuple[float, int, ExemplarContext] | None] | None = None

    def copy(self) -> "HistogramSeries":
        """A snapshot that later records do not change."""
        exemplars = list(self.exemplars) if self.exemplars is not None else None
        return HistogramSeries(
            list(self.bucket_counts), self.count, self.sum, self.min, self.max, exemplars
        )

    def otlp_exemplars(self) -> list[Exemplar]:
        """The exemplars as the SDK's, one per bucket at most."""
        return [
            Exemplar(
                filtered_attributes={instruments.CALL_ID: context.call_id},
                value=value,
                time_unix_nano=at,
                span_id=context.span_id or None,
                trace_id=context.trace_id or None,
            )
            for value, at, context in filter(None, self.exemplars or ())
        ]


class CallHistogram:
    """One call's explicit-bucket histogram of one instrument, by attribute set."""

    def __init__(self, spec: InstrumentSpec):
        self._spec = spec
        self._bounds = list(spec.buckets or ())
        self._lock = threading.Lock()
        self._series: dict[Attributes, HistogramSeries] = {}

    def record(
        self, value: float, attributes: dict[str, str], exemplar: ExemplarContext | None = None
    ) -> None:
        """Add one measurement, and keep it as its bucket's exemplar when given one."""
        key = _key(attributes)
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                buckets = [0] * (len(self._bounds) + 1)
                series = self._series[key] = HistogramSeries(buckets, 0, 0.0, value, value)
            series.bucket_counts[index] += 1
            series.count += 1
            series.sum += value
            series.min = min(series.min, value)
            series.max = max(series.max, value)
            if exemplar is not None:
                if series.exemplars is None:
                    series.exemplars = [None] * len(series.bucket_counts)
                series.exemplars[index] = (value, time.time_ns(), exemplar)

    @property
    def spec(self) -> InstrumentSpec:
        """The instrument this histogram aggregates."""
        return self._spec

    def snapshot(self) -> list[tuple[Attributes, HistogramSeries]]:
        """Every series as it is now, as sorted attribute pairs; exemplars are left in place."""
        with self._lock:
            return [(key, series.copy()) for key, series in self._series.items()]

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """The cumulative histogram, each point with ``labels`` added; None if empty."""
        with self._lock:
            snapshot = [(key, series.copy()) for key, series in self._series.items()]
        if not snapshot:
            return None
        points = [
            HistogramDataPoint(
                attributes={**dict(key), **labels},
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=series.count,
                sum=series.sum,
                bucket_counts=series.bucket_counts,
                explicit_bounds=self._bounds,
                min=series.min,
                max=series.max,
                exemplars=series.otlp_exemplars(),
            )
            for key, series in snapshot
        ]
        spec = self._spec
        return Metric(
            name=spec.name,
            description=spec.description,
            unit=spec.unit,
            data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
            ),
        )


@dataclass(eq=False)
class CallMeters:
    """Where one call's points go, with the attributes they carry.

    Parameters:
        histograms: The histogram for each histogram spec of the contract.
        totals: The running totals the counters report.
        attributes: Attributes added to every per-call measurement (``call_id`` when the
            call shares instruments with others, else nothing).
        labels: Attributes added to every point of a call exported on its own, at export
            (``call_id``); empty for meters that share the fleet's instruments.
        started_ns: When the call's own series start.
        exported: What the endpoint accepted of the call's series (value and when), so
            that an unchanged series is not sent again and none gets a second zero.
        ended_at: ``time.monotonic()`` at the call's end, ``None`` while in progress.
        final_export: Settled once an export carried the call's final values (or gave up).
        own_histograms: Whether the histograms are aggregated here (not an SDK's).
        shared: The histograms the call records into but does not export: the
            process-wide ones, which the fleet's series carry.
        labelled: The instruments whose points get ``attributes`` (meters sharing the
            fleet's instruments: ``call_id`` on those that carry it).
    """

    histograms: dict[InstrumentSpec, Any]
    totals: Totals
    attributes: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    started_ns: int = field(default_factory=time.time_ns)
    exported: dict[SeriesKey, tuple[object, float, int]] = field(default_factory=dict)
    ended_at: float | None = None
    final_export: Future = field(default_factory=Future)
    own_histograms: bool = False
    shared: frozenset[InstrumentSpec] = frozenset()
    labelled: frozenset[InstrumentSpec] = frozenset()

    @classmethod
    def own(
        cls, labels: dict[str, str], fleet: dict[InstrumentSpec, Any] | None = None
    ) -> "CallMeters":
        """Meters with instruments of their own, exported with ``labels`` added.

        Args:
            labels: Added to every point at export (``call_id``).
            fleet: The process-wide histograms: the call's latencies go there
                rather than into histograms of its own (all but those that always
                belong to one call, such as its duration).
        """
        histograms = {
            spec: CallHistogram(spec)
            if fleet is None or spec in instruments.CALL_HISTOGRAMS
            else fleet[spec]
            for spec in instruments.ALL
            if spec.kind is instruments.Kind.HISTOGRAM
        }
        shared = frozenset(
            spec for spec, histogram in histograms.items() if fleet and histogram is fleet[spec]
        )
        return cls(histograms, Totals(), {}, labels=labels, own_histograms=True, shared=shared)

    def record(
        self,
        spec: InstrumentSpec,
        value: float,
        attributes: dict[str, str],
        exemplar: ExemplarContext | None = None,
    ) -> None:
        """Add ``value`` to a counter or record it in a histogram, with the call's attributes.

        ``exemplar`` is kept for the instruments of the contract that carry exemplars,
        on histograms aggregated here (an application's own provider decides its own).
        """
        if self.attributes and spec in self.labelled:
            attributes = {**attributes, **self.attributes}
        if spec.kind is not instruments.Kind.HISTOGRAM:
            self.totals.add(spec, value, attributes)
        elif exemplar is not None and spec.exemplars and self.own_histograms:
            self.histograms[spec].record(value, attributes, exemplar)
        else:
            self.histograms[spec].record(value, attributes)

    def set(self, spec: InstrumentSpec, value: float, attributes: dict[str, str], *, per: str):
        """Set a gauge of ``instruments.RECORDED_GAUGES``: one series per value of ``per``."""
        self.totals.set(spec, value, attributes, per=per)

    def shares(self, attributes: dict[str, str], *, call_histograms: bool = False) -> "CallMeters":
        """Meters recording into the same instruments, with ``attributes`` added.

        Args:
            attributes: Added to the points of the instruments that carry ``call_id``.
            call_histograms: Whether latency histograms carry it too.
        """
        labelled = frozenset(
            spec
            for spec in instruments.ALL
            if instruments.carries_call_id(spec, call_histograms=call_histograms)
        )
        return CallMeters(
            self.histograms,
            self.totals,
            attributes,
            started_ns=self.started_ns,
            own_histograms=self.own_histograms,
            labelled=labelled,
        )

    def metrics(self, *, totals: bool = True) -> list[Metric]:
        """A call's own series, as cumulative metrics carrying its labels.

        Args:
            totals: Include the counters (the fleet's are read by the SDK's observable
                instruments instead).
        """
        now = time.time_ns()
        metrics = self.totals.metrics(self.started_ns, now, self.labels) if totals else []
        for spec, histogram in self.histograms.items():
            if spec in self.shared:
                continue  # the fleet's series carry it
            metric = histogram.metric(self.started_ns, now, self.labels)
            if metric is not None:
                metrics.append(metric)
        return metrics

    def settle(self, exported: bool) -> None:
        """Say whether the call's final values were exported, once."""
        if not self.final_export.done():
            self.final_export.set_result(exported)


def create_meters(meter: Meter, *, own_histograms: bool = False) -> CallMeters:
    """Create the instruments of the contract on ``meter``, and meters recording into them.

    Args:
        meter: Where the counters are observed, and the histograms created unless
            ``own_histograms``.
        own_histograms: Aggregate histograms here (cheaper per measurement than the
            SDK's, and with exemplars); the export pipeline then sends them itself.
    """
    totals = Totals()
    histograms = {}
    for spec in instruments.ALL:
        if spec.kind is instruments.Kind.HISTOGRAM:
            histograms[spec] = (
                CallHistogram(spec) if own_histograms else instruments.create(meter, spec)
            )
        elif spec.kind is not instruments.Kind.GAUGE or spec in instruments.RECORDED_GAUGES:
            # Other gauges are observed by their value's owner.
            instruments.create(meter, spec, callback=functools.partial(_observe, totals, spec))
    return CallMeters(histograms, totals, {}, own_histograms=own_histograms)


def _observe(totals: Totals, spec: InstrumentSpec, options: CallbackOptions) -> list[Observation]:
    return totals.observations(spec)
