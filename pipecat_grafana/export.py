"""The process-wide export pipeline: one reader and one flush thread for every call's series.

Why not one ``MeterProvider`` with a ``call_id`` attribute? The SDK keeps every
attribute set it has seen for the life of the provider: a process serving
10,000 calls would export 10,000 calls' series every interval, hold them in
memory for ever, and hit the SDK's cardinality limit. Why not one provider per
call? Each periodic reader starts a thread, and each provider registers an
at-fork handler that is never released.

So each call keeps its own running totals and histograms (``Totals``,
``CallHistogram``: plain cumulative aggregation, also a tenth of the SDK's cost
per measurement), and one ``PeriodicExportingMetricReader`` per process exports
the fleet-wide series (SDK instruments) together with the series of every call
in progress, merged into one request by ``_MergingExporter``. A call that has
ended stays until its final values were exported once; then it is dropped, and
its series are never sent again.

Prometheus-style backends start a new series at its first sample, so
``rate()``/``increase()`` never count the value of that first sample: a 3-second
call, exported once, would count as nothing. Each cumulative series is therefore
sent the first time with a zero point at its start time before its value (what
Prometheus calls created-timestamp zero injection), and every process has its own
``service.instance.id``, so a restart starts new series instead of resetting one.
"""

import atexit
import bisect
import functools
import os
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, NoOpMeter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipecat_grafana import __version__, instruments
from pipecat_grafana.config import ExportConfig
from pipecat_grafana.instruments import InstrumentSpec
from pipecat_grafana.transport import ExportHealth, OutcomeSession, build_exporter

METER_NAME = "pipecat_grafana"

# An ended call whose final values could not be exported (endpoint down) is
# retried with the following exports for this long, then dropped.
PENDING_RETENTION_S = 300.0
MAX_PENDING_CALLS = 1000

SeriesKey = tuple[str, frozenset]

# Exemplars link points to traces; there are none here, and looking for them costs
# a third of each measurement.
_NO_EXEMPLARS = AlwaysOffExemplarFilter()
_HISTOGRAM = instruments.Kind.HISTOGRAM


class Totals:
    """Running totals of counters, by instrument and attribute set, read at each export.

    The SDK's synchronous counters cost 10-20 µs a measurement; a dictionary update
    costs a fraction of one. Counters are therefore summed here and reported through
    observable instruments, whose callbacks run on the export thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[InstrumentSpec, dict[tuple, float]] = {}

    def add(self, spec: InstrumentSpec, value: float, attributes: dict[str, str]) -> None:
        """Add ``value`` to the series of ``spec`` with ``attributes``."""
        key = tuple(sorted(attributes.items()))
        with self._lock:
            series = self._values.setdefault(spec, {})
            series[key] = series.get(key, 0) + value

    def observations(self, spec: InstrumentSpec) -> list[Observation]:
        """The current total of every series of ``spec``."""
        with self._lock:
            items = list(self._values.get(spec, {}).items())
        return [Observation(value, dict(key)) for key, value in items]

    def metrics(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> list[Metric]:
        """Every counter as a cumulative sum, each point with ``labels`` added."""
        with self._lock:
            snapshot = [(spec, list(series.items())) for spec, series in self._values.items()]
        return [
            Metric(
                spec.name,
                spec.description,
                spec.unit,
                Sum(
                    [
                        NumberDataPoint({**dict(key), **labels}, start_ns, now_ns, value)
                        for key, value in series
                    ],
                    AggregationTemporality.CUMULATIVE,
                    is_monotonic=spec.kind is instruments.Kind.COUNTER,
                ),
            )
            for spec, series in snapshot
        ]


class CallHistogram:
    """One call's explicit-bucket histogram of one instrument, by attribute set.

    A call's histograms are aggregated here rather than in an SDK ``MeterProvider``
    of its own: the SDK costs 12-25 µs a measurement on the event loop, and every
    provider it creates registers an at-fork handler that is never released, which
    would leak with every call a process serves.
    """

    def __init__(self, spec: InstrumentSpec):
        self._spec = spec
        self._bounds = list(spec.buckets or ())
        self._lock = threading.Lock()
        # attributes -> [bucket counts, count, sum, min, max]
        self._series: dict[tuple, list] = {}

    def record(self, value: float, attributes: dict[str, str]) -> None:
        """Add one measurement."""
        key = tuple(sorted(attributes.items()))
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [[0] * (len(self._bounds) + 1), 0, 0.0, value, value]
            series[0][index] += 1
            series[1] += 1
            series[2] += value
            series[3] = min(series[3], value)
            series[4] = max(series[4], value)

    def metric(self, start_ns: int, now_ns: int, labels: dict[str, str]) -> Metric | None:
        """The cumulative histogram, each point with ``labels`` added; None if empty."""
        with self._lock:
            snapshot = [
                (key, list(buckets), *rest) for key, (buckets, *rest) in self._series.items()
            ]
        if not snapshot:
            return None
        points = [
            HistogramDataPoint(
                {**dict(key), **labels},
                start_ns,
                now_ns,
                count,
                total,
                buckets,
                self._bounds,
                low,
                high,
            )
            for key, buckets, count, total, low, high in snapshot
        ]
        spec = self._spec
        return Metric(
            spec.name,
            spec.description,
            spec.unit,
            Histogram(points, AggregationTemporality.CUMULATIVE),
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
    """

    histograms: dict[InstrumentSpec, Any]
    totals: Totals
    attributes: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    started_ns: int = field(default_factory=time.time_ns)
    exported: set[SeriesKey] = field(default_factory=set)
    ended_at: float | None = None
    final_export: Future = field(default_factory=Future)

    def record(self, spec: InstrumentSpec, value: float, attributes: dict[str, str]) -> None:
        """Add ``value`` to a counter or record it in a histogram, with the call's attributes."""
        if spec.per_call and self.attributes:
            attributes = {**attributes, **self.attributes}
        if spec.kind is instruments.Kind.HISTOGRAM:
            self.histograms[spec].record(value, attributes)
        else:
            self.totals.add(spec, value, attributes)

    def shares(self, attributes: dict[str, str]) -> "CallMeters":
        """Meters recording into the same instruments, with ``attributes`` added."""
        return CallMeters(self.histograms, self.totals, attributes)

    def metrics(self) -> list[Metric]:
        """A call's own series, as cumulative metrics carrying its labels."""
        now = time.time_ns()
        metrics = self.totals.metrics(self.started_ns, now, self.labels)
        for histogram in self.histograms.values():
            metric = histogram.metric(self.started_ns, now, self.labels)
            if metric is not None:
                metrics.append(metric)
        return metrics


def create_meters(meter: Meter) -> CallMeters:
    """Create every instrument of the contract on ``meter``, and meters recording into them."""
    totals = Totals()
    histograms = {}
    for spec in instruments.ALL:
        if spec.kind is instruments.Kind.HISTOGRAM:
            histograms[spec] = instruments.create(meter, spec)
        else:
            instruments.create(meter, spec, callback=functools.partial(_observe, totals, spec))
    return CallMeters(histograms, totals, {})


def _observe(totals: Totals, spec: InstrumentSpec, options: CallbackOptions) -> list[Observation]:
    return totals.observations(spec)


class ExportPipeline:
    """Exports the fleet-wide series and the series of every call in progress.

    One pipeline serves every call of a process that shares its configuration.
    Nothing here runs on the caller's thread except recording, which only updates
    in-memory aggregations: collection and HTTP happen on the reader's thread and
    on one flush thread, whatever the number of calls.
    """

    def __init__(
        self,
        config: ExportConfig,
        resource: Resource,
        *,
        meter_provider: MeterProvider | None = None,
    ):
        """Create the pipeline.

        Args:
            config: Where and how often to export.
            resource: The resource (``service.name``, ...) every series carries.
            meter_provider: The application's provider: record into it instead of
                exporting, and leave its lifetime to the application.
        """
        self.config = config
        self._lock = threading.Lock()
        self._calls: dict[str, CallMeters] = {}
        self._fleet_exported: set[SeriesKey] = set()
        self._fleet_waiters: list[Future] = []
        self._flush_requested = threading.Event()
        self._closed = False
        self._reader: PeriodicExportingMetricReader | None = None
        self._provider: SdkMeterProvider | None = None
        self._resource = resource
        if meter_provider is not None:
            meter = meter_provider.get_meter(METER_NAME, __version__)
        elif config.enabled:
            session = OutcomeSession()
            self._health = ExportHealth(config.endpoint, session)
            exporter = build_exporter(config, session)
            self._reader = PeriodicExportingMetricReader(
                _MergingExporter(exporter, self),
                export_interval_millis=config.export_interval_s * 1000,
                export_timeout_millis=config.flush_timeout_s * 1000,
            )
            self._provider = SdkMeterProvider(
                metric_readers=[self._reader],
                resource=resource,
                shutdown_on_exit=False,
                exemplar_filter=_NO_EXEMPLARS,
            )
            meter = self._provider.get_meter(METER_NAME, __version__)
            threading.Thread(
                target=self._flush_loop, name="pipecat-grafana-flush", daemon=True
            ).start()
        else:
            meter = NoOpMeter(METER_NAME, __version__)
        self._per_call_providers = self._provider is not None and config.call_id_label
        self.fleet = create_meters(meter)
        # Start the process-wide series at zero, so the first call is counted by rate().
        self.fleet.record(instruments.CALLS, 0, {})
        self.fleet.record(instruments.CALLS_ACTIVE, 0, {})

    def open_call(self, call_id: str) -> CallMeters:
        """Return the meters a new call records into."""
        if not self.config.call_id_label:
            return self.fleet.shares({})
        attributes = {instruments.CALL_ID: call_id}
        if not self._per_call_providers:
            return self.fleet.shares(attributes)
        meters = CallMeters(
            {spec: CallHistogram(spec) for spec in instruments.ALL if spec.kind is _HISTOGRAM},
            Totals(),
            {},
            labels=attributes,
        )
        with self._lock:
            self._calls[call_id] = meters
        return meters

    def close_call(self, meters: CallMeters) -> Future:
        """Mark a call ended and export its final values soon, off the caller's thread.

        Returns:
            A future that becomes ``True`` once an export carried the call's final
            values, ``False`` if that first attempt failed (they go with the
            following exports until accepted, or are dropped with a warning after
            ``PENDING_RETENTION_S``). It is already ``True`` when export is off.
        """
        if self._reader is None:
            meters.final_export.set_result(True)
            return meters.final_export
        if not meters.labels:
            # The call's values live in the fleet series: the next export carries them.
            with self._lock:
                self._fleet_waiters.append(meters.final_export)
        else:
            meters.ended_at = time.monotonic()
        self._flush_requested.set()
        return meters.final_export

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is left and stop the threads, waiting at most ``timeout_s``."""
        if self._closed:
            return
        self._closed = True
        self._flush_requested.set()
        if self._provider is not None:
            timeout_s = self.config.flush_timeout_s if timeout_s is None else timeout_s
            self._provider.shutdown(timeout_millis=timeout_s * 1000)
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            waiters, self._fleet_waiters = self._fleet_waiters, []
        self._drop(
            [c for c in calls if c.ended_at is not None],
            reason="the exporter shut down before they could be exported",
        )
        for call in calls:
            _finish(call, False)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)

    def _flush_loop(self) -> None:
        # Requests arriving while an export runs are served by one more export:
        # a hundred calls ending together cost two exports, not a hundred.
        while True:
            self._flush_requested.wait()
            if self._closed:
                return
            self._flush_requested.clear()
            try:
                self._reader.force_flush(timeout_millis=self.config.flush_timeout_s * 1000)
            except Exception as e:  # the SDK contains export failures; this is a bug of ours
                # No traceback: with loguru's diagnose its frames would show the headers.
                logger.error(f"pipecat-grafana: metrics flush failed: {type(e).__name__}: {e}")

    def _snapshot(self) -> list[CallMeters]:
        with self._lock:
            return list(self._calls.values())

    def _exported(self, ended: list[CallMeters], success: bool) -> None:
        """Settle the calls that had ended when their values were collected for an export."""
        now = time.monotonic()
        for call in ended:
            # The call's end waits for the first attempt only; a failed one is retried
            # with the following exports, in the background.
            if not call.final_export.done():
                call.final_export.set_result(success)
        if success:
            done = ended
        else:
            done = [c for c in ended if now - c.ended_at > PENDING_RETENTION_S]
            pending = sum(c.ended_at is not None for c in self._snapshot()) - len(done)
            if pending > MAX_PENDING_CALLS:
                done += sorted(set(ended) - set(done), key=lambda c: c.ended_at)[
                    : pending - MAX_PENDING_CALLS
                ]
        with self._lock:
            for call in done:
                self._calls.pop(call.labels[instruments.CALL_ID], None)
            waiters, self._fleet_waiters = self._fleet_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(success)
        if success:
            for call in done:
                _finish(call, True)
        else:
            self._drop(
                done, reason=f"the endpoint did not accept them within {PENDING_RETENTION_S:g}s"
            )

    def _drop(self, calls: list[CallMeters], *, reason: str) -> None:
        if calls:
            logger.warning(
                f"pipecat-grafana: dropped the final metrics of {len(calls)} ended call(s): {reason}"
            )
        for call in calls:
            _finish(call, False)


def _finish(call: CallMeters, exported: bool) -> None:
    if not call.final_export.done():
        call.final_export.set_result(exported)


class _MergingExporter(MetricExporter):
    """Adds the series of every call in progress to each export of the fleet series."""

    def __init__(self, inner: MetricExporter, pipeline: ExportPipeline):
        super().__init__()
        self._inner = inner
        self._pipeline = pipeline

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs
    ) -> MetricExportResult:
        new_keys: list[tuple[set[SeriesKey], SeriesKey]] = []
        merged = _Merged()
        merged.add(metrics_data, self._pipeline._fleet_exported, new_keys)
        ended = []
        for call in self._pipeline._snapshot():
            # Read before collecting: a call that ends while this export is under way
            # recorded values this collection may not hold, so it must be sent again.
            if call.ended_at is not None:
                ended.append(call)
            merged.add_metrics(call.metrics(), call.exported, new_keys)
        with self._pipeline._health as health:
            result = self._inner.export(
                merged.metrics_data(self._pipeline._resource), timeout_millis=timeout_millis
            )
        success = health.report(result is MetricExportResult.SUCCESS)
        result = MetricExportResult.SUCCESS if success else MetricExportResult.FAILURE
        if success:
            for seen, key in new_keys:
                seen.add(key)
        self._pipeline._exported(ended, success)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


class _Merged:
    """The points of several providers as one metric per name, under one scope.

    The OTLP encoder keeps one entry per instrumentation scope, so the calls'
    metrics (all from this package's scope) must be merged, not appended.
    """

    def __init__(self):
        self._scope = None
        self._metrics: dict[str, Metric] = {}
        self._points: dict[str, list] = {}

    def add(
        self,
        data: MetricsData | None,
        seen: set[SeriesKey],
        new_keys: list[tuple[set[SeriesKey], SeriesKey]],
    ) -> None:
        """Add every metric the SDK collected."""
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                self._scope = self._scope or scope.scope
                self.add_metrics(scope.metrics, seen, new_keys)

    def add_metrics(
        self,
        metrics: Iterable[Metric],
        seen: set[SeriesKey],
        new_keys: list[tuple[set[SeriesKey], SeriesKey]],
    ) -> None:
        """Add every point, preceding the first of each new series with a zero."""
        for metric in metrics:
            self._metrics.setdefault(metric.name, metric)
            points = self._points.setdefault(metric.name, [])
            for point in metric.data.data_points:
                if _starts_at_zero(metric):
                    key = (metric.name, frozenset(point.attributes.items()))
                    if key not in seen:
                        new_keys.append((seen, key))
                        points.append(_zero(point))
                points.append(point)

    def metrics_data(self, resource: Resource) -> MetricsData:
        """One resource, one scope, one metric per name."""
        metrics = [
            replace(metric, data=replace(metric.data, data_points=self._points[name]))
            for name, metric in self._metrics.items()
        ]
        scope = self._scope or InstrumentationScope(METER_NAME, __version__)
        scopes = [ScopeMetrics(scope, metrics, "")] if metrics else []
        return MetricsData(resource_metrics=[ResourceMetrics(resource, scopes, "")])


def _starts_at_zero(metric: Metric) -> bool:
    """Whether backends need a zero point before the first value: cumulative, monotonic."""
    data = metric.data
    if getattr(data, "aggregation_temporality", None) != AggregationTemporality.CUMULATIVE:
        return False
    return isinstance(data, Histogram) or (isinstance(data, Sum) and data.is_monotonic)


def _zero(point: NumberDataPoint | HistogramDataPoint) -> NumberDataPoint | HistogramDataPoint:
    # At least a millisecond earlier: backends keep one sample per millisecond.
    start = min(point.start_time_unix_nano, point.time_unix_nano - 1_000_000)
    if isinstance(point, HistogramDataPoint):
        return replace(
            point,
            time_unix_nano=start,
            count=0,
            sum=0,
            bucket_counts=[0] * len(point.bucket_counts),
            min=0,
            max=0,
            exemplars=[],
        )
    return replace(point, time_unix_nano=start, value=0, exemplars=[])


def default_resource(
    service_name: str | None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
) -> Resource:
    """The resource every series carries.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK;
    arguments win over them; ``voice-rag-bot`` is the service name when neither
    sets one. The SDK gives each process its own ``service.instance.id``, so
    two bot processes never write the same series.
    """
    # The SDK's resource detection takes milliseconds (a thread pool per call):
    # do it once per distinct input, not once per call.
    return _resource(
        service_name,
        service_version,
        environment,
        os.environ.get("OTEL_SERVICE_NAME"),
        os.environ.get("OTEL_RESOURCE_ATTRIBUTES"),
    )


@functools.lru_cache(maxsize=64)
def _resource(
    service_name: str | None,
    service_version: str | None,
    environment: str | None,
    *_environment_inputs: str | None,
) -> Resource:
    attributes: dict[str, str] = {}
    if service_version:
        attributes["service.version"] = service_version
    if environment:
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)
    name = service_name or resource.attributes.get("service.name", "")
    if not name or str(name).startswith("unknown_service"):
        name = "voice-rag-bot"
    return resource.merge(Resource({"service.name": name}))


_pipelines: dict[tuple, ExportPipeline] = {}
_pipelines_lock = threading.Lock()


def shared_pipeline(config: ExportConfig, resource: Resource) -> tuple[ExportPipeline, bool]:
    """The process's pipeline for ``config`` and ``resource``, created on first use.

    Returns:
        The pipeline, and whether this call created it.
    """
    key = (config.key, tuple(sorted(resource.attributes.items())))
    with _pipelines_lock:
        pipeline = _pipelines.get(key)
        if pipeline is None or pipeline._closed:
            pipeline = _pipelines[key] = ExportPipeline(config, resource)
            return pipeline, True
        return pipeline, False


_provider_pipelines: "weakref.WeakKeyDictionary[MeterProvider, ExportPipeline]" = (
    weakref.WeakKeyDictionary()
)


def provider_pipeline(
    meter_provider: MeterProvider, config: ExportConfig, resource: Resource
) -> ExportPipeline:
    """The pipeline recording into an application's provider, one per provider.

    An instrument is created once per provider: a second exporter creating its own
    would get the first one's instrument back, and its callbacks would be ignored.
    """
    with _pipelines_lock:
        pipeline = _provider_pipelines.get(meter_provider)
        if pipeline is None:
            pipeline = ExportPipeline(config, resource, meter_provider=meter_provider)
            _provider_pipelines[meter_provider] = pipeline
        return pipeline


def shutdown(timeout_s: float | None = None) -> None:
    """Export what is left and stop every pipeline of the process.

    Registered to run at exit; applications and tests may call it earlier.
    """
    with _pipelines_lock:
        pipelines = list(_pipelines.values())
        _pipelines.clear()
    for pipeline in pipelines:
        pipeline.shutdown(timeout_s)


atexit.register(shutdown)
