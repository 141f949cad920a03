"""The process-wide export pipeline: one reader and one flush thread for every call's series.

Why not one ``MeterProvider`` with a ``call_id`` attribute? The SDK keeps every
attribute set it has seen for the life of the provider: a process serving
10,000 calls would export 10,000 calls' series every interval, hold them in
memory for ever, and hit the SDK's cardinality limit. Why not one provider per
call? Each periodic reader starts a thread, and each provider registers an
at-fork handler that is never released.

So each call keeps its own running totals and histograms (``aggregation``), and
one ``PeriodicExportingMetricReader`` per process exports the fleet-wide series
(SDK instruments) together with the series of every call in progress, merged into
one request (``ExportPipeline.assemble``) that the SDK's OTLP client sends. A call that has
ended stays until its final values were exported once; then it is dropped, and
its series are never sent again.

The same aggregates can also be pulled: the process's Prometheus scrape endpoint
(``scrape``) serves the pipelines whose configuration asks for it (``pull``),
from the same objects, with no second recording path. Such a pipeline aggregates
in memory even when nothing is pushed (no thread runs then), and keeps an ended
call until both the export and a scrape have read its final values.

Prometheus-style backends start a new series at its first sample, so
``rate()``/``increase()`` never count the value of that first sample: a 3-second
call, exported once, would count as nothing. Each cumulative series is therefore
sent the first time with a zero point at its start time before its value (what
Prometheus calls created-timestamp zero injection).

A process forked after export started (gunicorn's pre-fork workers,
``multiprocessing``'s ``fork`` start method) inherits the parent's pipelines but
not their threads. The child forgets them without a word on the wire, and builds
its own on first use, with its own threads and ``service.instance.id``: the
child's series start from zero, as a new process's would, and nothing of the
parent's is sent again.
"""

import atexit
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, replace

from loguru import logger
from opentelemetry.metrics import MeterProvider, NoOpMeter
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
from opentelemetry.trace import SpanContext

from pipecat_grafana import __version__, instruments, traces
from pipecat_grafana.aggregation import CallMeters, SeriesKey, create_meters

Sent = dict[SeriesKey, tuple[object, float, int]]
"""What the endpoint accepted of each series: its value (histograms: count and sum), when
(monotonic seconds), and the wall time of the points sent (exemplars after it are new)."""
Sending = list[tuple[Sent, SeriesKey, tuple[object, float, int]]]
from pipecat_grafana.config import MAX_LABEL_VALUES, ExportConfig
from pipecat_grafana.export_health import ExportHealthSeries
from pipecat_grafana.instruments import METER_NAME
from pipecat_grafana.labels import BoundedLabel, LabelBounds, once
from pipecat_grafana.logs import SummaryLogs
from pipecat_grafana.otlp import ExportHealth, OutcomeSession, build_client
from pipecat_grafana.summary import CallSummary

# An ended call whose final values could not be exported (endpoint down) is
# retried with the following exports for this long, then dropped.
PENDING_RETENTION_S = 300.0
MAX_PENDING_CALLS = 1000
# Call IDs a process remembers, to give a repeated one series of its own.
REMEMBERED_CALL_IDS = 10_000
# Who reads an ended call's final values before it is let go.
_OTLP = "otlp"
_SCRAPE = "scrape"

# Exemplars link points to traces; there are none here, and looking for them costs
# a third of each measurement.
_NO_EXEMPLARS = AlwaysOffExemplarFilter()


@dataclass
class Batch:
    """One export request and what to settle once it is answered.

    Parameters:
        request: The fleet series and the series of every call, as one request.
        ended: The calls that had ended when their values were collected.
        sending: Each series the request carries, with the record of what was sent
            that remembers it once the request is accepted.
        waiters: The ends of calls without series of their own that this request
            carries in the fleet's series.
    """

    request: MetricsData
    ended: list[CallMeters]
    sending: "Sending"
    waiters: list[Future]


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
        self.resource = resource
        self._lock = threading.Lock()
        self._calls: dict[str, CallMeters] = {}
        self._read_by: dict[CallMeters, set[str]] = {}  # ended calls, by who read them
        self._pulled = config.pull and meter_provider is None
        self._call_ids: OrderedDict[str, int] = OrderedDict()
        self._bounds: LabelBounds | None = None
        self._fleet_exported: Sent = {}
        self._fleet_waiters: list[Future] = []
        self._log_waiters: list[Future] = []
        self._flush_requested = threading.Event()
        self._closed = False
        self._inherited = False
        self._reader: PeriodicExportingMetricReader | None = None
        self._provider: SdkMeterProvider | None = None
        self.logs: SummaryLogs | None = None
        self.traced = False
        if meter_provider is not None:
            meter = meter_provider.get_meter(METER_NAME, __version__)
        elif config.enabled:
            session = OutcomeSession()
            self._reader = PeriodicExportingMetricReader(
                _CallMerger(
                    self, build_client(config, session), ExportHealth(config.endpoint, session)
                ),
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
            if config.logs_endpoint is not None:
                self.logs = SummaryLogs(config, resource)
            if config.traces_endpoint is not None:
                traces.ensure_tracing(config, resource)
                self.traced = True
            threading.Thread(
                target=self._flush_loop, name="pipecat-grafana-flush", daemon=True
            ).start()
        else:
            meter = NoOpMeter(METER_NAME, __version__)
        self._readers = {_OTLP} if self._reader is not None else set()
        if self._pulled:
            self._readers.add(_SCRAPE)
        own = self._provider is not None or self._pulled
        self._calls_of_their_own = own and config.call_id_label
        # The fleet's histograms are aggregated here when we export or serve them ourselves:
        # a tenth of the SDK's cost a measurement, and with exemplars.
        self.fleet = create_meters(meter, own_histograms=own)
        # Start the process-wide series at zero, so the first call is counted by rate().
        self.fleet.record(instruments.CALLS, 0, {})
        self.fleet.record(instruments.CALLS_ACTIVE, 0, {})
        # The export pipeline's own health: exports by outcome, dropped calls, age.
        self.health = ExportHealthSeries(self.fleet, meter) if self._reader is not None else None

    @property
    def closed(self) -> bool:
        """Whether the pipeline was shut down."""
        return self._closed

    @property
    def inherited(self) -> bool:
        """Whether this is a copy a fork left in a child process: it exports nothing there."""
        return self._inherited

    @property
    def pulled(self) -> bool:
        """Whether the process's Prometheus endpoint serves this pipeline's series."""
        return self._pulled

    def calls(self) -> list[CallMeters]:
        """The calls whose own series are exported: in progress, or ended and not yet sent."""
        return self._unread(_OTLP)

    def scrape_calls(self) -> list[CallMeters]:
        """The calls whose own series are served: in progress, or ended and not yet scraped."""
        return self._unread(_SCRAPE)

    def scraped(self, calls: Iterable[CallMeters]) -> None:
        """Let go of ended calls whose final values a scrape has served (once exported too)."""
        self._let_go(calls, _SCRAPE)

    def _unread(self, reader: str) -> list[CallMeters]:
        with self._lock:
            return [c for c in self._calls.values() if reader not in self._read_by.get(c, ())]

    def _let_go(self, calls: Iterable[CallMeters], reader: str) -> None:
        with self._lock:
            for call in calls:
                read = self._read_by.setdefault(call, set())
                read.add(reader)
                if read >= self._readers:
                    self._forget(call)

    def _forget(self, call: CallMeters) -> None:
        # Under the lock.
        self._calls.pop(call.labels[instruments.CALL_ID], None)
        self._read_by.pop(call, None)

    def _expire(self) -> None:
        """Drop ended calls no scrape read: after ``PENDING_RETENTION_S``, or beyond the bound.

        Without a scraper they would pile up for ever; the export's own retry of a call it
        could not send is bounded in ``settle``.
        """
        now = time.monotonic()
        with self._lock:
            ended = sorted(
                (c for c in self._calls.values() if c.ended_at is not None),
                key=lambda c: c.ended_at,
            )
            recent = [c for c in ended if now - c.ended_at <= PENDING_RETENTION_S]
            expired = [c for c in ended if now - c.ended_at > PENDING_RETENTION_S]
            expired += recent[: max(0, len(recent) - MAX_PENDING_CALLS)]
            for call in expired:
                self._forget(call)
        for call in expired:
            call.settle(False)
        if expired:
            once.warning(
                "scrape:expired",
                f"pipecat-grafana: dropped the final metrics of {len(expired)} ended call(s) "
                f"from the Prometheus endpoint before a scrape read them (an ended call is kept "
                f"{PENDING_RETENTION_S:g}s at most, {MAX_PENDING_CALLS} calls at most): is "
                "Prometheus scraping it? (logged once)",
            )

    def label_bounds(self, *, max_function_names: int, max_label_values: int) -> LabelBounds:
        """The bounds on the pipeline's open-ended labels, set by its first exporter.

        Series are the pipeline's, not one exporter's, so every exporter sharing it
        must agree on them.

        Raises:
            ValueError: A bound differs from the one already in force.
        """
        with self._lock:
            if self._bounds is None:
                values = f"or set {MAX_LABEL_VALUES}"
                self._bounds = LabelBounds(
                    function=BoundedLabel(
                        instruments.FUNCTION, max_function_names, "Raise max_function_names."
                    ),
                    model=BoundedLabel(
                        instruments.MODEL, max_label_values, f"Raise max_label_values {values}."
                    ),
                    processor=BoundedLabel(
                        instruments.PROCESSOR, max_label_values, f"Raise max_label_values {values}."
                    ),
                )
            bounds = self._bounds
        for name, wanted, bound in (
            ("max_function_names", max_function_names, bounds.function),
            ("max_label_values", max_label_values, bounds.model),
        ):
            if wanted != bound.limit:
                raise ValueError(
                    f"{name}={wanted} conflicts with {name}={bound.limit} of an exporter already "
                    "exporting to the same endpoint in this process: the bound is on the "
                    "process's series, so give every GrafanaMetricsExporter the same value"
                )
        return bounds

    def open_call(self, call_id: str) -> CallMeters:
        """Return the meters a new call records into.

        A call ID that another call of this process already used (in progress, or
        ended recently) gets a suffix for its series (``room-7~2``), so that no
        call's series is overwritten, or reset by a later call's.
        """
        if not self.config.call_id_label:
            return self.fleet.shares({})
        attributes = {instruments.CALL_ID: self._unique(call_id)}
        if not self._calls_of_their_own:
            return self.fleet.shares(attributes, call_histograms=self.config.call_histograms)
        fleet = None if self.config.call_histograms else self.fleet.histograms
        meters = CallMeters.own(labels=attributes, fleet=fleet)
        with self._lock:
            self._calls[attributes[instruments.CALL_ID]] = meters
        return meters

    def _unique(self, call_id: str) -> str:
        with self._lock:
            uses = self._call_ids.pop(call_id, 0) + 1
            self._call_ids[call_id] = uses
            while len(self._call_ids) > REMEMBERED_CALL_IDS:
                self._call_ids.popitem(last=False)
            while uses > 1 and f"{call_id}~{uses}" in self._call_ids:
                uses += 1  # an application's own ID that looks like one of ours
            unique = f"{call_id}~{uses}" if uses > 1 else call_id
            if uses > 1:
                self._call_ids[unique] = 1
        if uses > 1:
            once.warning(
                f"call_id:{call_id}",
                f"call ID {call_id!r} was already used by another call of this process; this "
                f"call's series are labelled call_id={unique!r} so that neither call's series "
                "is overwritten or reset (its summary keeps the ID given). Give every call its "
                "own ID: PipelineWorker(conversation_id=...) or GrafanaMetricsExporter(call_id=...)"
                " (logged once per ID)",
            )
        return unique

    def close_call(
        self,
        meters: CallMeters,
        summary: CallSummary | None = None,
        span: SpanContext | None = None,
    ) -> list[Future]:
        """Mark a call ended and export its final values soon, off the caller's thread.

        Args:
            meters: The call's meters.
            summary: Its final summary, sent as a log record when logs are on.
            span: Its conversation span, when it was traced (the record links to it).

        Returns:
            Futures to wait for, each ``True`` once sent: the call's final values
            (``False`` if that first attempt failed: they go with the following
            exports until accepted, or are dropped with a warning after
            ``PENDING_RETENTION_S``), and its log record when logs are on. A
            future is already ``True`` when export is off.
        """
        if self._inherited:
            meters.settle(False)  # a call the parent opened: the parent exports it
            return [meters.final_export]
        if self._reader is None:
            if self._pulled and meters.labels:
                meters.ended_at = time.monotonic()  # served until a scrape has read it
                self._expire()
            meters.settle(True)  # nothing to send: the endpoint serves its final values
            return [meters.final_export]
        waiting = [meters.final_export]
        if self.logs is not None and summary is not None:
            self.logs.emit(summary, span)
            sent: Future = Future()
            with self._lock:
                self._log_waiters.append(sent)
            waiting.append(sent)
        if not meters.labels:
            # The call's values live in the fleet series: the next export carries them.
            with self._lock:
                self._fleet_waiters.append(meters.final_export)
        else:
            meters.ended_at = time.monotonic()
            if self._pulled:
                self._expire()
        self._flush_requested.set()
        return waiting

    def assemble(self, fleet: MetricsData) -> Batch:
        """Merge the fleet series the SDK collected with the series of every call."""
        calls = self.calls()
        # Read before collecting: a call that ends while this export is under way
        # recorded values this collection may not hold, so it must be sent again.
        ended = [call for call in calls if call.ended_at is not None]
        with self._lock:
            # Calls without series of their own (the call_id label off) whose end waits
            # for the fleet's series: this collection holds their final values.
            waiters, self._fleet_waiters = self._fleet_waiters, []
        merged = _Merged(
            heartbeat_s=self.config.heartbeat_s,
            histogram_interval_s=self.config.histogram_interval_s,
            # The export that carries a call's final values carries all it changed,
            # in the process-wide series too.
            flush=bool(ended) or bool(waiters) or self._closed,
        )
        sending: Sending = []
        merged.add(fleet, self._fleet_exported, sending)
        merged.add_metrics(self.fleet.metrics(totals=False), self._fleet_exported, sending)
        for call in calls:
            merged.add_metrics(
                call.metrics(), call.exported, sending, flush=call.ended_at is not None
            )
        return Batch(merged.metrics_data(self.resource), ended, sending, waiters)

    def settle(self, batch: Batch, success: bool) -> None:
        """Settle what a request carried, once the endpoint answered (or did not)."""
        if success:
            for sent, key, what in batch.sending:
                sent[key] = what
        now = time.monotonic()
        for call in batch.ended:
            # The call's end waits for the first attempt only; a failed one is retried
            # with the following exports, in the background.
            call.settle(success)
        expired: list[CallMeters] = []
        overflow: list[CallMeters] = []
        if success:
            done = []
            self._let_go(batch.ended, _OTLP)  # and kept while the endpoint has yet to serve it
        else:
            expired = [c for c in batch.ended if now - c.ended_at > PENDING_RETENTION_S]
            with self._lock:
                pending = sum(c.ended_at is not None for c in self._calls.values()) - len(expired)
            if pending > MAX_PENDING_CALLS:
                overflow = sorted(set(batch.ended) - set(expired), key=lambda c: c.ended_at)[
                    : pending - MAX_PENDING_CALLS
                ]
            done = expired + overflow
        with self._lock:
            for call in done:
                self._forget(call)
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(success)
        if not success:
            self._drop(
                expired,
                reason=f"the endpoint did not accept them within {PENDING_RETENTION_S:g}s",
                counted_as="expired",
            )
            self._drop(
                overflow,
                reason=f"more than {MAX_PENDING_CALLS} ended calls were waiting for the endpoint",
                counted_as="overflow",
            )

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is left and stop the threads, waiting at most ``timeout_s``."""
        if self._closed:
            return
        self._closed = True
        self._flush_requested.set()
        if self._provider is not None:
            timeout_s = self.config.flush_timeout_s if timeout_s is None else timeout_s
            self._provider.shutdown(timeout_millis=timeout_s * 1000)
            if self.logs is not None:
                self.logs.shutdown(timeout_s)
            if self.traced:
                traces.shutdown(timeout_s)
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            self._read_by = {}
            waiters, self._fleet_waiters = self._fleet_waiters, []
            waiters += self._log_waiters
            self._log_waiters = []
        self._drop(
            [c for c in calls if c.ended_at is not None],
            reason="the exporter shut down before they could be exported",
        )
        for call in calls:
            call.settle(False)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)

    def forget_after_fork(self) -> None:
        """Stop this copy of the parent's pipeline exporting from a forked child, without I/O.

        Runs in the child right after the fork, when only the forking thread exists:
        it takes no lock and touches no connection. The flush thread did not survive
        the fork; the SDK restarts the reader's thread in the child, and the reader
        is stopped here so that thread ends at once, its last export sending nothing
        (see ``_CallMerger``). If the parent was exporting at the fork, that thread
        instead waits, idle, for ever, on the reader's export lock: the thread that
        held it does not exist in the child.
        """
        was_closed, self._closed, self._inherited = self._closed, True, True
        if self._reader is not None and not was_closed:
            self._reader.shutdown(timeout_millis=0)

    def _flush_loop(self) -> None:
        # Requests arriving while an export runs are served by one more export:
        # a hundred calls ending together cost two exports, not a hundred. Between
        # requests it wakes once an interval to send call summaries still pending.
        timeout_s = self.config.flush_timeout_s
        while True:
            requested = self._flush_requested.wait(timeout=self.config.export_interval_s)
            if self._closed:
                return
            self._flush_requested.clear()
            try:
                # Summaries first: one small request per call's end, which a slow metrics
                # export (the reader holds its lock while it retries) must not hold up.
                if self.logs is not None:
                    with self._lock:
                        waiters, self._log_waiters = self._log_waiters, []
                    sent = self.logs.flush(timeout_s)
                    for waiter in waiters:
                        waiter.set_result(sent)
                if requested:
                    # A call's end: the collection sees it ended and sends all it changed.
                    self._reader.force_flush(timeout_millis=timeout_s * 1000)
                    if self.traced:
                        traces.flush(timeout_s)
            except Exception as e:  # the SDK contains export failures; this is a bug of ours
                # No traceback: with loguru's diagnose its frames would show the headers.
                logger.error(f"pipecat-grafana: flush failed: {type(e).__name__}: {e}")

    def _drop(self, calls: list[CallMeters], *, reason: str, counted_as: str | None = None) -> None:
        if calls:
            logger.warning(
                f"pipecat-grafana: dropped the final metrics of {len(calls)} ended call(s): {reason}"
            )
        if counted_as is not None and self.health is not None:
            self.health.dropped(len(calls), counted_as)  # goes with the next accepted export
        for call in calls:
            call.settle(False)


class _CallMerger(MetricExporter):
    """The reader's exporter: adds every call's series to the fleet's, sends, settles.

    The SDK's reader collects the fleet-wide instruments and hands them here; the
    pipeline merges in the calls' series, the OTLP client sends the request, and
    ``ExportHealth`` says in plain words when that starts or stops failing.
    """

    def __init__(self, pipeline: ExportPipeline, client: MetricExporter, health: ExportHealth):
        super().__init__()
        self._pipeline = pipeline
        self._client = client
        self._health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs
    ) -> MetricExportResult:
        if self._pipeline.inherited:
            # The parent's series, copied by a fork: the parent sends them, not the child.
            return MetricExportResult.SUCCESS
        batch = self._pipeline.assemble(metrics_data)
        with self._health as health:
            result = self._client.export(batch.request, timeout_millis=timeout_millis)
        success = health.report(result is MetricExportResult.SUCCESS)
        self._pipeline.health.exported(health.last, accepted=success)  # the next export sends it
        self._pipeline.settle(batch, success)
        return MetricExportResult.SUCCESS if success else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._client.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if not self._pipeline.inherited:  # the connections are the parent's too
            self._client.shutdown(timeout_millis=timeout_millis)


class _Merged:
    """The points of several providers as one metric per name, under one scope.

    The OTLP encoder keeps one entry per instrumentation scope, so the calls'
    metrics (all from this package's scope) must be merged, not appended.

    Grafana Cloud bills every data point: a series is sent only when it changed
    since the endpoint last accepted it, or when ``heartbeat_s`` has passed since
    (well inside the 5-minute lookback of Prometheus-style queries, so it never
    looks stale); a changed histogram, whose every bucket is a billed series, at
    most once per ``histogram_interval_s`` except on a flush (a call's end sends
    everything it changed).
    """

    def __init__(self, *, heartbeat_s: float, histogram_interval_s: float, flush: bool):
        self._scope = None
        self._metrics: dict[str, Metric] = {}
        self._points: dict[str, list] = {}
        self._heartbeat_s = heartbeat_s
        self._histogram_interval_s = histogram_interval_s
        self._flush = flush
        self._now = time.monotonic()

    def add(self, data: MetricsData | None, sent: Sent, sending: Sending) -> None:
        """Add every metric the SDK collected."""
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                self._scope = self._scope or scope.scope
                self.add_metrics(scope.metrics, sent, sending)

    def add_metrics(
        self, metrics: Iterable[Metric], sent: Sent, sending: Sending, *, flush: bool = False
    ) -> None:
        """Add the points worth sending, preceding the first of each new series with a zero.

        Args:
            metrics: The metrics to add.
            sent: What the endpoint accepted of these series: signature and when.
            sending: Where to note what this request carries, to remember on success.
            flush: Send every changed series now (an ended call's final values).
        """
        flush = flush or self._flush
        for metric in metrics:
            histogram = isinstance(metric.data, Histogram)
            sparse = metric.name in instruments.SPARSE
            starts_at_zero = _starts_at_zero(metric)
            for point in metric.data.data_points:
                key = (metric.name, frozenset(point.attributes.items()))
                signature = (point.count, point.sum) if histogram else point.value
                last = sent.get(key)
                if last is not None:
                    age = self._now - last[1]
                    if last[0] == signature:
                        if age < self._heartbeat_s:
                            continue  # unchanged and recently sent
                    elif sparse and not flush and age < self._histogram_interval_s:
                        continue  # changed, but sent not long ago
                points = self._points.setdefault(metric.name, [])
                self._metrics.setdefault(metric.name, metric)
                if last is None and starts_at_zero:
                    points.append(_zero(point))
                    if sparse and not flush:
                        # The zero starts the series; its value waits like any change.
                        zero = (0, 0) if histogram else 0
                        sending.append((sent, key, (zero, self._now, 0)))
                        continue
                if histogram and point.exemplars and last is not None:
                    # Exemplars already accepted are not sent again.
                    fresh = [e for e in point.exemplars if e.time_unix_nano > last[2]]
                    point = replace(point, exemplars=fresh)
                points.append(point)
                sending.append((sent, key, (signature, self._now, point.time_unix_nano)))

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


_pipelines: dict[tuple, ExportPipeline] = {}
_pipelines_lock = threading.Lock()
# Set in a forked child whose parent was exporting, until the child exports too.
_forked_from: int | None = None


def shared_pipeline(config: ExportConfig, resource: Resource) -> tuple[ExportPipeline, bool]:
    """The process's pipeline for ``config`` and ``resource``, created on first use.

    Returns:
        The pipeline, and whether this call created it.
    """
    global _forked_from
    key = (config.key, tuple(sorted(resource.attributes.items())))
    with _pipelines_lock:
        pipeline = _pipelines.get(key)
        if pipeline is not None and not pipeline.closed:
            return pipeline, False
        pipeline = _pipelines[key] = ExportPipeline(config, resource)
        parent = _forked_from if config.enabled else None
        if parent is not None:
            _forked_from = None
    if parent is not None:
        logger.info(
            f"pipecat-grafana: metrics export restarted after fork from process {parent}, "
            f"with this process's own threads and service.instance.id "
            f"{resource.attributes.get('service.instance.id')}"
        )
    return pipeline, True


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

    Registered to run at exit; applications and tests may call it earlier. The Prometheus
    endpoint, if one runs, first waits as long for a scrape to read the calls that ended.
    """
    scrape = sys.modules.get("pipecat_grafana.scrape")  # loaded only once pull was asked for
    if scrape is not None:
        scrape.stop(timeout_s)  # it reads these pipelines, so it stops first
    with _pipelines_lock:
        pipelines = list(_pipelines.values())
        _pipelines.clear()
    for pipeline in pipelines:
        pipeline.shutdown(timeout_s)


def _forget_after_fork() -> None:
    """In a forked child: leave the parent's pipelines to the parent; build new ones on use."""
    global _pipelines_lock, _forked_from
    # Only the forking thread exists here: a lock another thread held would never be
    # released, so the child gets a new one.
    _pipelines_lock = threading.Lock()
    inherited = list(_pipelines.values())
    _pipelines.clear()
    if any(p.config.enabled and not p.closed for p in inherited):
        _forked_from = os.getppid()
    for pipeline in inherited:
        pipeline.forget_after_fork()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    # Registered before any reader is created, so it runs before the SDK restarts
    # the readers' threads in the child.
    os.register_at_fork(after_in_child=_forget_after_fork)
