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
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
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
        """Every counter as a cumulative sum (a recorded gauge as a gauge), with ``labels`` added."""
        with self._lock:
            snapshot = [(spec, list(series.items())) for spec, series in self._values.items()]
        metrics = []
        for spec, series in snapshot:
            points = [
                NumberDataPoint(
                    attributes={**dict(key), **labels},
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    value=value,
                )
                for key, value in series
            ]
            data: Gauge | Sum
            if spec.kind is instruments.Kind.GAUGE:  # one of RECORDED_GAUGES: the value set
                data = Gauge(data_points=points)
            else:
                data = Sum(
                    data_points=points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=spec.kind is instruments.Kind.COUNTER,
                )
            metrics.append(
                Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)
            )
        return metrics


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
        return histogram_metric(self._spec, Histogram, points)


def histogram_metric(spec: InstrumentSpec, data: type, points: list) -> Metric:
    """``points`` as the cumulative ``data`` (``Histogram``, ``ExponentialHistogram``) of ``spec``."""
    return Metric(
        name=spec.name,
        description=spec.description,
        unit=spec.unit,
        data=data(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
    )


class SdkHistogram:
    """An SDK histogram of an application's own provider, behind the interface of ours.

    The application's provider aggregates and exports it; nothing here reads it back.
    """

    def __init__(self, spec: InstrumentSpec, instrument: Any):
        self._spec = spec
        self._instrument = instrument

    @property
    def spec(self) -> InstrumentSpec:
        """The instrument this histogram records."""
        return self._spec

    def record(
        self, value: float, attributes: dict[str, str], exemplar: ExemplarContext | None = None
    ) -> None:
        """Record one measurement in the SDK (which picks its own exemplars)."""
        self._instrument.record(value, attributes)

    def snapshot(self) -> list[tuple[Attributes, HistogramSeries]]:
        """Nothing: the application's provider holds the series."""
        return []

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """Nothing: the application's provider exports the series."""
        return None


class HistogramAggregate(Protocol):
    """A histogram a call records into: aggregated here, or by an application's provider."""

    @property
    def spec(self) -> InstrumentSpec:
        """The instrument it aggregates."""

    def record(
        self, value: float, attributes: dict[str, str], exemplar: ExemplarContext | None = None
    ) -> None:
        """Add one measurement."""

    def snapshot(self) -> list[tuple[Attributes, HistogramSeries]]:
        """Every series with explicit buckets, for the scrape endpoint."""

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """The series as the push sends them, ``None`` when there is nothing to send."""


HistogramFactory = Callable[[InstrumentSpec], HistogramAggregate]


class Mode(Enum):
    """Whose series a ``CallMeters`` records into."""

    FLEET = "fleet"
    """The process-wide series."""
    SHARED = "shared"
    """A call's measurements in the process-wide series, with ``call_id`` added where the
    contract carries it (an application's own provider), or nothing (the label off)."""
    OWN = "own"
    """A call's series of its own, exported with ``call_id`` added; its latencies may go to
    the process-wide histograms."""


@dataclass(eq=False)
class CallMeters:
    """What one call, or the fleet, records into: counters' totals and histograms.

    Recording only updates memory; who reads the series and when is the export's business
    (``export.pending``). Compared by identity: two calls never share one.

    Parameters:
        mode: Whose series these are.
        histograms: The histogram of each histogram spec of the contract.
        totals: The running totals the counters report.
        attributes: ``SHARED``: added to each measurement of the specs in ``labelled``.
        labels: ``OWN``: added to every point of the call's own series, at export.
        fleet_histograms: ``OWN``: the specs whose histogram is the process-wide one,
            which the fleet's series carry.
        labelled: ``SHARED``: the specs whose measurements get ``attributes``.
        new_histogram: Makes the histograms of a call with series of its own.
        started_ns: When the series start.
    """

    mode: Mode
    histograms: dict[InstrumentSpec, HistogramAggregate]
    totals: Totals
    attributes: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    fleet_histograms: frozenset[InstrumentSpec] = frozenset()
    labelled: frozenset[InstrumentSpec] = frozenset()
    new_histogram: HistogramFactory = CallHistogram
    started_ns: int = field(default_factory=time.time_ns)

    def own(self, labels: dict[str, str], *, call_histograms: bool) -> "CallMeters":
        """A call's meters with series of their own, exported with ``labels`` added.

        Args:
            labels: Added to every point at export (``call_id``).
            call_histograms: Give the call latency histograms of its own; otherwise its
                latencies go to these (the process-wide) histograms, and only those that
                always belong to one call (its duration) are its own.
        """
        histograms: dict[InstrumentSpec, HistogramAggregate] = {}
        for spec, fleet in self.histograms.items():
            mine = call_histograms or spec in instruments.CALL_HISTOGRAMS
            histograms[spec] = self.new_histogram(spec) if mine else fleet
        shared = frozenset(s for s, h in histograms.items() if h is self.histograms[s])
        return CallMeters(
            Mode.OWN,
            histograms,
            Totals(),
            labels=labels,
            fleet_histograms=shared,
            new_histogram=self.new_histogram,
        )

    def shares(self, attributes: dict[str, str], *, call_histograms: bool = False) -> "CallMeters":
        """A call's meters recording into these (the process-wide) series.

        Args:
            attributes: Added to the points of the instruments that carry ``call_id``
                (nothing when the label is off).
            call_histograms: Whether latency histograms carry it too.
        """
        labelled = frozenset(
            spec
            for spec in instruments.ALL
            if attributes and instruments.carries_call_id(spec, call_histograms=call_histograms)
        )
        return CallMeters(
            Mode.SHARED,
            self.histograms,
            self.totals,
            attributes=attributes,
            labelled=labelled,
            started_ns=self.started_ns,
        )

    def record(
        self,
        spec: InstrumentSpec,
        value: float,
        attributes: dict[str, str],
        exemplar: ExemplarContext | None = None,
    ) -> None:
        """Add ``value`` to a counter or record it in a histogram, with the call's attributes.

        ``exemplar`` is kept for the instruments of the contract that carry exemplars, on
        histograms aggregated here (an application's own provider picks its own).
        """
        if spec in self.labelled:
            attributes = {**attributes, **self.attributes}
        if spec.kind is not instruments.Kind.HISTOGRAM:
            self.totals.add(spec, value, attributes)
        elif exemplar is not None and spec.exemplars:
            self.histograms[spec].record(value, attributes, exemplar)
        else:
            self.histograms[spec].record(value, attributes)

    def series(self) -> list[tuple[InstrumentSpec, HistogramAggregate]]:
        """The histograms whose series are these meters' own (not the fleet's they share)."""
        return [(s, h) for s, h in self.histograms.items() if s not in self.fleet_histograms]

    def set(self, spec: InstrumentSpec, value: float, attributes: dict[str, str], *, per: str):
        """Set a gauge of ``instruments.RECORDED_GAUGES``: one series per value of ``per``."""
        self.totals.set(spec, value, attributes, per=per)

    def metrics(self) -> list[Metric]:
        """These meters' own series, as cumulative metrics carrying ``labels``."""
        now = time.time_ns()
        metrics = self.totals.metrics(self.started_ns, now, self.labels)
        for _, histogram in self.series():
            metric = histogram.metric(self.started_ns, now, self.labels)
            if metric is not None:
                metrics.append(metric)
        return metrics


def create_meters(
    meter: Meter, *, own: bool = False, new_histogram: HistogramFactory = CallHistogram
) -> CallMeters:
    """Create the process-wide series of the contract, and the meters recording into them.

    Args:
        meter: Where the instruments are created, unless ``own``.
        own: Aggregate here, for the package's own export or scrape, which read the
            totals and histograms directly (cheaper per measurement than the SDK's, with
            exemplars, and read at the moment of the export). Otherwise the counters
            are observed by the application's provider and the histograms are its own.
        new_histogram: Makes each histogram aggregated here (explicit buckets, or
            exponential ones as well: ``native``).
    """
    totals = Totals()
    histograms: dict[InstrumentSpec, HistogramAggregate] = {}
    for spec in instruments.ALL:
        if spec.kind is instruments.Kind.HISTOGRAM:
            histograms[spec] = (
                new_histogram(spec) if own else SdkHistogram(spec, instruments.create(meter, spec))
            )
        elif not own and (
            spec.kind is not instruments.Kind.GAUGE or spec in instruments.RECORDED_GAUGES
        ):
            # Other gauges are observed by their value's owner.
            instruments.create(meter, spec, callback=functools.partial(_observe, totals, spec))
    return CallMeters(Mode.FLEET, histograms, totals, new_histogram=new_histogram)


def _observe(totals: Totals, spec: InstrumentSpec, options: CallbackOptions) -> list[Observation]:
    return totals.observations(spec)
