"""One export pipeline: the SDK's reader and one flush thread for every call's series.

Why not one ``MeterProvider`` with a ``call_id`` attribute? The SDK keeps every attribute
set it has seen for the life of the provider: a process serving 10,000 calls would export
10,000 calls' series every interval, hold them in memory for ever, and hit the SDK's
cardinality limit. Why not one provider per call? Each periodic reader starts a thread,
and each provider registers an at-fork handler that is never released.

So each call keeps its own running totals and histograms (``aggregation``), registered in
the pipeline's ``PendingCalls``, and one ``PeriodicExportingMetricReader`` per pipeline
exports the fleet-wide series together with the series of every call some reader still
needs, merged into one request that the SDK's OTLP client sends (``_CallMerger``). The
points worth sending are chosen in ``points``. The same aggregates can also be pulled by
the process's Prometheus endpoint (``scrape``), which is then one more reader of the calls.
"""

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from loguru import logger
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext

from pipecat_grafana import __version__, instruments, traces
from pipecat_grafana.aggregation import CallMeters, create_meters
from pipecat_grafana.config import (
    FLUSH_TIMEOUT,
    HISTOGRAMS,
    MAX_PENDING,
    NATIVE,
    PENDING_RETENTION_S,
    ExportConfig,
)
from pipecat_grafana.export.pending import PUSH, SCRAPE, Expired, PendingCall, PendingCalls
from pipecat_grafana.export.points import PointSelection, Sending, Sent, remember
from pipecat_grafana.export_health import ExportHealthSeries
from pipecat_grafana.instruments import METER_NAME
from pipecat_grafana.labels import LabelBounds, LabelBoundsRegistry, UniqueCallIds
from pipecat_grafana.logs import SummaryLogs
from pipecat_grafana.native import HistogramForm
from pipecat_grafana.notices import warn_once
from pipecat_grafana.otlp import (
    ExportHealth,
    Outcome,
    OutcomeSession,
    build_client,
    refuses_native_histograms,
)
from pipecat_grafana.summary import CallSummary

# Exemplars link points to traces; the SDK's instruments here have none, and looking for
# them costs a third of each measurement.
_NO_EXEMPLARS = AlwaysOffExemplarFilter()


@dataclass
class Batch:
    """One export request and what to settle once it is answered.

    Parameters:
        request: The fleet series and the series of every call, as one request.
        ended: The calls that had ended when their values were read.
        sending: Each series the request carries, to remember once it is accepted.
        waiters: The ends of calls without series of their own, whose values this
            request carries in the fleet's series.
    """

    request: MetricsData
    ended: list[PendingCall]
    sending: Sending
    waiters: list[Future]


class ExportPipeline:
    """Exports the fleet-wide series and the series of every call some reader still needs.

    One pipeline serves every call of a process that shares its configuration. Nothing
    here runs on the caller's thread except recording, which only updates in-memory
    aggregations: collection and HTTP happen on the reader's thread and on one flush
    thread, whatever the number of calls.

    Attributes:
        calls: The calls with series of their own, and who still needs each one.
        fleet: The process-wide meters.
        logs: The summary records' pipeline, when logs are on.
        traced: Whether this pipeline installed tracing.
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
            config: Where and how often to export, and whether the scrape endpoint reads it.
            resource: The resource (``service.name``, ...) every series carries.
            meter_provider: The application's provider: record into it instead of
                exporting, and leave its lifetime to the application.
        """
        self.config = config
        self.resource = resource
        self._lock = threading.Lock()  # guards _log_waiters
        self._log_waiters: list[Future] = []
        self._fleet_sent: Sent = {}  # the export thread's
        self._call_ids = UniqueCallIds()
        self._bounds = LabelBoundsRegistry()
        self._flush_requested = threading.Event()
        self._closed = False
        self._inherited = False
        self._reader: PeriodicExportingMetricReader | None = None
        self._last_sends: threading.Thread | None = None
        self._session: OutcomeSession | None = None
        self._last_export: tuple[Outcome | None, bool] = (None, True)  # the export thread's
        self._provider: SdkMeterProvider | None = None
        self.logs: SummaryLogs | None = None
        self.traced = False
        pulled = config.pull and meter_provider is None
        if meter_provider is not None:
            meter = meter_provider.get_meter(METER_NAME, __version__)
        elif config.enabled:
            self._session = session = OutcomeSession()
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
        else:
            meter = NoOpMeter(METER_NAME, __version__)
        readers = ([PUSH] if self._reader is not None else []) + ([SCRAPE] if pulled else [])
        self.calls = PendingCalls(readers)
        own = bool(readers)
        self._calls_of_their_own = own and config.call_id_label
        # Native only where pushed: a scrape reads explicit buckets.
        self.form = HistogramForm(config.histograms == NATIVE and self._reader is not None)
        # Aggregated here when we export or serve the series ourselves: a tenth of the SDK's
        # cost a measurement, exemplars, and read at the moment of the export.
        self.fleet = create_meters(meter, own=own, new_histogram=self.form.histogram)
        # Start the process-wide series at zero, so the first call is counted by rate().
        self.fleet.record(instruments.CALLS, 0, {})
        self.fleet.record(instruments.CALLS_ACTIVE, 0, {})
        # The export pipeline's own health: exports by outcome, dropped calls, age.
        self.health = ExportHealthSeries(self.fleet, meter) if self._reader is not None else None
        if self._reader is not None:
            threading.Thread(
                target=self._flush_loop, name="pipecat-grafana-flush", daemon=True
            ).start()

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
        return SCRAPE in self.calls.readers

    @property
    def pushed(self) -> bool:
        """Whether this pipeline exports over OTLP."""
        return PUSH in self.calls.readers

    def label_bounds(self, *, max_function_names: int, max_label_values: int) -> LabelBounds:
        """The bounds on the pipeline's open-ended labels, set by its first exporter.

        Raises:
            ValueError: A bound differs from the one already in force.
        """
        return self._bounds.get(
            max_function_names=max_function_names, max_label_values=max_label_values
        )

    def open_call(self, call_id: str) -> tuple[CallMeters, PendingCall | None]:
        """Return the meters a new call records into, and its registration if it has series.

        A call ID that another call of this process already used gets a suffix for its
        series (``room-7~2``), so that no call's series is overwritten, or reset by a later
        call's.
        """
        if not self.config.call_id_label:
            return self.fleet.shares({}), None
        attributes = {instruments.CALL_ID: self._call_ids.unique(call_id)}
        if not self._calls_of_their_own:
            return self.fleet.shares(attributes, call_histograms=self.config.call_histograms), None
        meters = self.fleet.own(attributes, call_histograms=self.config.call_histograms)
        return meters, self.calls.open(meters)

    def close_call(
        self,
        call: PendingCall | None,
        summary: CallSummary | None = None,
        span: SpanContext | None = None,
    ) -> list[Future]:
        """Mark a call ended and export its final values soon, off the caller's thread.

        Args:
            call: The call's registration (``None`` for a call without series of its own).
            summary: Its final summary, sent as a log record when logs are on.
            span: Its conversation span, when it was traced (the record links to it).

        Returns:
            Futures to wait for, each ``True`` once sent: the call's final values
            (``False`` if that first attempt failed: they go with the following
            exports until accepted, or are dropped with a warning after
            ``PENDING_RETENTION_S``), and its log record when logs are on. A
            future is already ``True`` when nothing is pushed.
        """
        final: Future = call.final if call is not None else Future()
        if call is not None:
            overflow = self.calls.end(call)
            if overflow:
                self._report_expired(overflow)
        if self._inherited:
            self.calls.complete_all([final], False)  # a call the parent opened: the parent's
            return [final]
        if not self.pushed:
            # Nothing to send: a scrape serves its final values, or nobody reads them.
            self.calls.complete_all([final], True)
            return [final]
        waiting = [final]
        if self.logs is not None and summary is not None:
            self.logs.emit(summary, span)
            sent: Future = Future()
            with self._lock:
                self._log_waiters.append(sent)
            waiting.append(sent)
        if call is None:
            self.calls.wait_for_fleet(final)  # the next export of the fleet's series has it
        self._flush_requested.set()
        return waiting

    def assemble(self, collected: MetricsData | None) -> Batch:
        """One request: what the SDK collected, the fleet's series and every call's."""
        self.expire()  # retention, on the export's thread
        calls = self.calls.unread(PUSH)
        # Read before their values: a call that ends while they are read may have values
        # this read does not hold, and its final values go with the next export.
        ended = [call for call in calls if self.calls.ended(call)]
        # Likewise for calls whose values are in the fleet's series, read below.
        waiters = self.calls.fleet_waiters()
        selection = PointSelection(
            heartbeat_s=self.config.heartbeat_s,
            histogram_interval_s=self.config.histogram_interval_s,
            # The export that carries a call's final values carries all it changed,
            # in the process-wide series too.
            final=bool(ended) or bool(waiters) or self._closed,
        )
        sending: Sending = []
        selection.add_collected(collected, self._fleet_sent, sending)
        selection.add(self.fleet.metrics(), self._fleet_sent, sending)
        for call in calls:
            selection.add(
                call.meters.metrics(),
                call.cursors[PUSH].series,
                sending,
                final=call in ended,
            )
        return Batch(selection.metrics_data(self.resource), ended, sending, waiters)

    def settle(self, batch: Batch, accepted: bool) -> None:
        """Settle what a request carried, once the endpoint answered (or did not)."""
        if accepted:
            remember(batch.sending)
            for call in batch.ended:
                self.calls.read(call, PUSH)
        # A call's end waits for the first attempt only; a failed one is retried with the
        # following exports, in the background, until retention ends it.
        self.calls.complete_all([call.final for call in batch.ended], accepted)
        self.calls.complete_all(batch.waiters, accepted)

    def expire(self) -> None:
        """Let go of ended calls that a reader could not read in time, with one warning.

        Runs on one thread per pipeline: the export's when it pushes, else the scrape
        endpoint's.
        """
        expired = self.calls.expire()
        if expired:
            self._report_expired(expired)

    def refused_native(self, outcome: Outcome) -> None:
        """The endpoint refused exponential histograms: push the classic form from now on.

        Every histogram kept both forms since it started, so nothing recorded is lost:
        the next export sends the classic series, from their first measurement.
        """
        if not self.form.native:
            return
        self.form.native = False
        warn_once(
            f"native-refused:{self.config.endpoint}",
            f"{self.config.endpoint} refused native (exponential) histograms "
            f"({outcome.status}: {outcome.detail[:200]}); this process sends classic "
            f"histograms from now on, nothing lost. Set {HISTOGRAMS}=classic to start so.",
        )

    def _report_expired(self, expired: Expired) -> None:
        for kind, counts in (("expired", expired.late), ("overflow", expired.overflow)):
            pushed, scraped = counts.get(PUSH, 0), counts.get(SCRAPE, 0)
            if pushed and self.health is not None:
                self.health.dropped(pushed, kind)  # goes with the next accepted export
            why = (
                f"waited more than {PENDING_RETENTION_S:g}s"
                if kind == "expired"
                else f"were beyond the {MAX_PENDING} ended calls kept"
            )
            if pushed:
                warn_once(
                    f"dropped:push:{kind}",
                    f"dropped the final metrics of {pushed} ended call(s) that {why} for the "
                    f"OTLP endpoint to accept them (logged once)",
                )
            if scraped:
                warn_once(
                    f"dropped:scrape:{kind}",
                    f"dropped the final metrics of {scraped} ended call(s) from the "
                    f"Prometheus endpoint that {why} for a scrape to read them: is "
                    "Prometheus scraping it? (logged once)",
                )

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is left and stop the threads, waiting at most ``timeout_s``."""
        timeout_s = self.config.flush_timeout_s if timeout_s is None else timeout_s
        self.begin_shutdown()
        self.finish_shutdown(time.monotonic() + timeout_s)

    def begin_shutdown(self) -> None:
        """Start sending what is left (metrics, summary records, spans) on a thread of its own.

        The exit waits for it in ``finish_shutdown``, at most until its deadline, whatever
        the endpoint does: a thread still waiting for an answer then is left behind.
        """
        if self._closed:
            return
        self._closed = True
        if self._provider is not None:
            self._flush_requested.set()  # the flush thread sees _closed and ends
            self._last_sends = threading.Thread(
                target=self._send_the_rest, name="pipecat-grafana-exit", daemon=True
            )
            self._last_sends.start()

    def _send_the_rest(self) -> None:
        timeout_s = self.config.flush_timeout_s
        try:
            self._provider.shutdown(timeout_millis=timeout_s * 1000)
            if self.logs is not None:
                self._send_logs(lambda: self.logs.shutdown(timeout_s))
            if self.traced:
                traces.shutdown(timeout_s)
        except Exception as e:  # the SDK contains export failures; this is a bug of ours
            logger.error(f"pipecat-grafana: the last export failed: {type(e).__name__}: {e}")

    def finish_shutdown(self, deadline: float) -> None:
        """Wait for the last sends until ``deadline`` (monotonic seconds), then let go of the rest.

        What is dropped is said in one warning: how many calls' final values each reader
        missed and why, and how many summary records went unsent.
        """
        sends = self._last_sends
        if sends is not None:
            sends.join(max(deadline - time.monotonic(), 0.0))
        cut_short = sends is not None and sends.is_alive()
        if cut_short:  # what is dropped is said below; the late answers say nothing more
            for session in (self._session, self.logs.session if self.logs else None):
                if session is not None:
                    session.abandoned = True
        unread = self.calls.drain()
        with self._lock:
            records, self._log_waiters = self._log_waiters, []
        self.calls.complete_all(records, False)
        lost = [
            f"the final metrics of {n} ended call(s): {self._why_unread(r, cut_short)}"
            for r, n in unread.items()
        ]
        if records:
            lost.append(f"{len(records)} call summary record(s), not sent in time")
        if lost:
            logger.warning(f"pipecat-grafana: at exit, dropped {'; and '.join(lost)}")

    def _why_unread(self, reader: str, cut_short: bool) -> str:
        if reader == SCRAPE:
            return (
                "no scrape of the Prometheus endpoint read them in time (at exit it waits "
                f"{self.config.flush_timeout_s:g}s at most for a scrape; scrape it every "
                "15 s or so)"
            )
        if cut_short:
            return (
                f"the OTLP endpoint did not answer within the flush timeout "
                f"({self.config.flush_timeout_s:g}s, {FLUSH_TIMEOUT})"
            )
        outcome, accepted = self._last_export
        if not accepted and outcome is not None:
            # The export's failure was explained when it began: say which, not it again.
            if outcome.status is not None:
                return f"the OTLP endpoint refused the last export ({outcome.status})"
            return "the OTLP endpoint could not be reached (see the error above)"
        return "the exporter shut down before they could be exported"

    def forget_after_fork(self) -> None:
        """Stop this copy of the parent's pipeline exporting from a forked child, without I/O.

        Runs in the child right after the fork, when only the forking thread exists: it
        takes no lock and touches no connection. The flush thread did not survive the fork;
        the SDK restarts the reader's thread in the child, and the reader is stopped here so
        that thread ends at once, its last export sending nothing (see ``_CallMerger``). If
        the parent was exporting at the fork, that thread instead waits, idle, for ever, on
        the reader's export lock: the thread that held it does not exist in the child.
        """
        was_closed, self._closed, self._inherited = self._closed, True, True
        if self._reader is not None and not was_closed:
            self._reader.shutdown(timeout_millis=0)

    def _send_logs(self, send) -> None:
        # The flush thread and the exit path both send summary records; one at a time.
        with self._lock:
            waiters, self._log_waiters = self._log_waiters, []
        sent = send()
        self.calls.complete_all(waiters, bool(sent))

    def _flush_loop(self) -> None:
        # Requests arriving while an export runs are served by one more export: a hundred
        # calls ending together cost two exports, not a hundred. Between requests it wakes
        # once an interval to send call summaries still pending.
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
                    self._send_logs(lambda: self.logs.flush(timeout_s))
                if requested:
                    # A call's end: the collection sees it ended and sends all it changed.
                    self._reader.force_flush(timeout_millis=timeout_s * 1000)
                    if self.traced:
                        traces.flush(timeout_s)
            except Exception as e:  # the SDK contains export failures; this is a bug of ours
                # No traceback: with loguru's diagnose its frames would show the headers.
                logger.error(f"pipecat-grafana: flush failed: {type(e).__name__}: {e}")


class _CallMerger(MetricExporter):
    """The reader's exporter: adds every call's series to the fleet's, sends, settles.

    The SDK's reader collects its own instruments (the export's age) and hands them
    here; the pipeline adds the fleet's series and the calls', the OTLP client sends
    the request, and ``ExportHealth`` says in plain words when that starts or stops
    failing.
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
        if (
            result is not MetricExportResult.SUCCESS
            and self._pipeline.form.native
            and refuses_native_histograms(health.last)
        ):
            # Said once, and sent again at once in the classic form (a failed request
            # changed nothing: what it held is still to send).
            self._pipeline.refused_native(health.last)
            batch = self._pipeline.assemble(metrics_data)
            with self._health as health:
                result = self._client.export(batch.request, timeout_millis=timeout_millis)
        accepted = health.report(result is MetricExportResult.SUCCESS)
        self._pipeline._last_export = (health.last, accepted)
        self._pipeline.health.exported(health.last, accepted=accepted)  # the next one sends it
        self._pipeline.settle(batch, accepted)
        return MetricExportResult.SUCCESS if accepted else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._client.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if not self._pipeline.inherited:  # the connections are the parent's too
            self._client.shutdown(timeout_millis=timeout_millis)
