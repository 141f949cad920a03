"""One export pipeline: one thread that sends the fleet's series and every call's over OTLP.

Why not one ``MeterProvider`` with a ``call_id`` attribute? The SDK keeps every attribute
set it has seen for the life of the provider: a process serving 10,000 calls would export
10,000 calls' series every interval, hold them in memory for ever, and hit the SDK's
cardinality limit. Why not one provider per call? Each periodic reader starts a thread,
and each provider registers an at-fork handler that is never released.

So each call keeps its own running totals and histograms (``aggregation``), registered in
the pipeline's ``PendingCalls``, and one thread per pipeline reads the fleet's series and
those of every call some reader still needs, chooses the points worth sending (``points``)
and hands one request to the SDK's OTLP client, every export interval and soon after a
call ends. The same aggregates can also be pulled by the process's Prometheus endpoint
(``scrape``), which is then one more reader of the calls. Call summaries go on a thread of
their own (``logs``), and spans on the SDK's (``traces``): a slow endpoint of one signal
never holds up another.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from loguru import logger
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext

from pipecat_grafana import __version__, instruments, otlp, traces
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
    FailureLog,
    Outcome,
    OutcomeSession,
    build_client,
    refuses_native_histograms,
)
from pipecat_grafana.summary import CallSummary
from pipecat_grafana.turns import TurnRecord


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
    aggregations: reading, encoding and HTTP happen on the pipeline's one sending thread
    (``pipecat-grafana-metrics``), whatever the number of calls.

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
        time_source: Callable[[], float] = time.monotonic,
    ):
        """Create the pipeline.

        Args:
            config: Where and how often to export, and whether the scrape endpoint reads it.
            resource: The resource (``service.name``, ...) every series carries.
            meter_provider: The application's provider: record into it instead of
                exporting, and leave its lifetime to the application.
            time_source: Monotonic clock in seconds (tests pass a controlled one).
        """
        self.config = config
        self.resource = resource
        self._clock = time_source
        self._wake = threading.Event()  # an export is wanted now (a call ended)
        self._export_lock = threading.Lock()  # one export at a time: the loop's or the exit's
        self._fleet_sent: Sent = {}  # under _export_lock
        self._last_export: tuple[Outcome | None, bool] = (None, True)  # under _export_lock
        self._call_ids = UniqueCallIds()
        self._bounds = LabelBoundsRegistry()
        self._closed = False
        self._inherited = False
        self._session: OutcomeSession | None = None
        self._client = None
        self._failures: FailureLog | None = None
        self._exit: threading.Thread | None = None
        self.logs: SummaryLogs | None = None
        self.traced = False
        self.provided = meter_provider is not None
        if meter_provider is not None:
            meter = meter_provider.get_meter(METER_NAME, __version__)
        else:
            meter = NoOpMeter(METER_NAME, __version__)
            if config.enabled:
                self._session = session = OutcomeSession()
                self._client = build_client(config, session)
                self._failures = FailureLog(str(config.endpoint), session)
        pulled = config.pull and meter_provider is None
        readers = ([PUSH] if self._client is not None else []) + ([SCRAPE] if pulled else [])
        self.calls = PendingCalls(readers, time_source=time_source)
        own = bool(readers)
        # Native only where pushed: a scrape reads explicit buckets.
        self.form = HistogramForm(config.histograms == NATIVE and self.pushed)
        # Aggregated here when we export or serve the series ourselves: a tenth of the SDK's
        # cost a measurement, exemplars, and read at the moment of the export.
        self.fleet = create_meters(meter, own=own, new_histogram=self.form.histogram)
        # Start the process-wide series at zero, so the first call is counted by rate().
        self.fleet.record(instruments.CALLS, 0, {})
        self.fleet.record(instruments.CALLS_ACTIVE, 0, {})
        # The export pipeline's own health: exports by outcome, dropped calls, age.
        self.health = ExportHealthSeries(self.fleet, clock=time_source) if self.pushed else None
        if self.pushed:
            if config.logs_endpoint is not None:
                self.logs = SummaryLogs(config, resource, on_dropped=self._summaries_dropped)
            if config.traces_endpoint is not None:
                traces.ensure_tracing(config, resource)
                self.traced = True
            threading.Thread(
                target=self._export_loop, name="pipecat-grafana-metrics", daemon=True
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

    @property
    def failing(self) -> bool:
        """Whether the endpoint is known to fail; a call that ends then waits for nothing.

        Known: the last export failed, or the one in flight outlived a call's wait for it.
        """
        return self._failures is not None and self._failures.failing

    def waits_timed_out(self, *, metrics: bool, logs: bool) -> None:
        """A call's end waited its flush timeout in vain: the next calls do not wait.

        Until the export (or the summaries' send) in flight ends: that one proved the
        endpoint slow or down, and a call ending meanwhile has nothing else to wait for.
        """
        if metrics and self._failures is not None:
            self._failures.stalled()
        if logs and self.logs is not None:
            self.logs.stalled()

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

        A call keeps series of its own only while some reader needs them: with nobody
        reading (summaries only), it records into the process-wide series without its ID,
        and leaves nothing behind but its summary. A call ID that another call of this
        process already used gets a suffix for its series (``room-7~2``), so that no call's
        series is overwritten, or reset by a later call's.
        """
        if not self.config.call_id_label or not (self.calls.readers or self.provided):
            return self.fleet.shares({}), None
        attributes = {instruments.CALL_ID: self._call_ids.unique(call_id)}
        if self.provided:
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
            Futures to wait for, each ``True`` once sent: the call's final values, and its
            log record when logs are on. ``False`` if that first attempt failed, or at once
            while the endpoint is known to fail (its last export failed): a call's end then
            waits for nothing, and its values go with the first export the endpoint
            accepts, or are dropped with a warning after ``PENDING_RETENTION_S``. A future
            is already ``True`` when nothing is pushed.
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
            waiting.append(self.logs.emit(summary, span))
        if self.traced:
            traces.request_flush()
        if self.failing:
            # Its values go with the next export that succeeds; waiting for this one
            # would hold the call's end as long as the last failure did.
            self.calls.complete_all([final], False)
            return waiting
        if call is None:
            self.calls.wait_for_fleet(final)  # the next export of the fleet's series has it
        self._wake.set()
        return waiting

    def emit_turn(self, record: TurnRecord, span: SpanContext | None = None) -> None:
        """Queue one turn's record for the logs endpoint, when logs are on (no I/O here).

        Nothing waits for it: it goes with the next send of the summaries' thread.
        """
        if self.logs is not None and self.pushed and not self._inherited:
            self.logs.emit_turn(record, span)

    def export(self, timeout_s: float | None = None) -> bool:
        """Send one request now: the fleet's series and every unread call's; settle it.

        Runs on the sending thread, and once more at exit; one at a time. A request the
        endpoint refuses for its exponential histograms is sent again at once in the
        classic form, with the same waiters.

        Args:
            timeout_s: The whole export's deadline, retries included (default: the
                exporter's timeout, ``OTEL_EXPORTER_OTLP_TIMEOUT``).

        Returns:
            Whether the endpoint accepted it.
        """
        timeout_s = self.config.export_timeout_s if timeout_s is None else timeout_s
        if self._inherited or self._failures is None:
            return False  # in a forked child, the lock may be held by a thread that is gone
        with self._export_lock:
            batch = self.assemble()
            accepted, outcome = self._send(batch, timeout_s)
            if not accepted and self.form.native and refuses_native_histograms(outcome):
                # Said once; a failed request changed nothing, so what it held is still to
                # send, and its waiters follow it.
                self.refused_native(outcome)
                batch = self.assemble(carrying=batch)
                accepted, outcome = self._send(batch, timeout_s)
            accepted = self._failures.report(accepted)
            self._last_export = (outcome, accepted)
            if self.health is not None:
                self.health.exported(outcome, accepted=accepted)  # the next one sends it
            self.settle(batch, accepted)
            return accepted

    def _send(self, batch: Batch, timeout_s: float) -> tuple[bool, Outcome | None]:
        assert self._failures is not None and self._client is not None
        with self._failures as failures, otlp.deadline(timeout_s):
            result = self._client.export(batch.request, timeout_millis=timeout_s * 1000)
        return result is MetricExportResult.SUCCESS, failures.last

    def assemble(self, carrying: Batch | None = None) -> Batch:
        """One request: the fleet's series and every unread call's.

        Args:
            carrying: A request that failed and is replaced by this one: its waiters and
                ended calls are this one's too.
        """
        self.expire()  # retention: on this thread only, for a pipeline that pushes
        calls = self.calls.unread(PUSH)
        # Read before their values: a call that ends while they are read may have values
        # this read does not hold, and its final values go with the next export.
        ended = [call for call in calls if self.calls.ended(call)]
        # Likewise for calls whose values are in the fleet's series, read below.
        waiters = self.calls.fleet_waiters()
        if carrying is not None:
            waiters = carrying.waiters + waiters
        final = set(ended)
        selection = PointSelection(
            heartbeat_s=self.config.heartbeat_s,
            histogram_interval_s=self.config.histogram_interval_s,
            # The export that carries a call's final values carries all it changed,
            # in the process-wide series too.
            final=bool(ended) or bool(waiters) or self._closed,
            now=self._clock(),
        )
        sending: Sending = []
        selection.add(self.fleet.metrics(), self._fleet_sent, sending)
        if self.health is not None:
            selection.add(self.health.metrics(), self._fleet_sent, sending)
        for call in calls:
            selection.add(
                call.meters.metrics(),
                call.push.sent,
                sending,
                final=call in final,
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

        The one driver of retention, on one thread per pipeline: the sending thread's when
        it pushes, else the scrape endpoint's.
        """
        expired = self.calls.expire()
        if expired:
            self._report_expired(expired)

    def refused_native(self, outcome: Outcome | None) -> None:
        """The endpoint refused exponential histograms: push the classic form from now on.

        Every histogram kept both forms since it started, so nothing recorded is lost:
        the next export sends the classic series, from their first measurement.
        """
        if not self.form.native or outcome is None:
            return
        self.form.native = False
        warn_once(
            f"native-refused:{self.config.endpoint}",
            f"{self.config.endpoint} refused native (exponential) histograms "
            f"({outcome.status}: {outcome.detail[:200]}); this process sends classic "
            f"histograms from now on, nothing lost. Set {HISTOGRAMS}=classic to start so.",
        )

    def _summaries_dropped(self, records: int, reason: str) -> None:
        if self.health is not None:
            self.health.summaries_dropped(records, reason)

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

    def _export_loop(self) -> None:
        # Requests arriving while an export runs are served by one more export: a hundred
        # calls ending together cost two exports, not a hundred.
        while True:
            self._wake.wait(timeout=self.config.export_interval_s)
            self._wake.clear()
            if self._closed:
                return  # the exit sends what is left
            try:
                self.export()
            except Exception as e:  # the SDK contains export failures; this is a bug of ours
                # No traceback: with loguru's diagnose its frames would show the headers.
                logger.error(f"pipecat-grafana: export failed: {type(e).__name__}: {e}")

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is left and stop the threads, waiting at most ``timeout_s``."""
        timeout_s = self.config.flush_timeout_s if timeout_s is None else timeout_s
        self.begin_shutdown()
        self.finish_shutdown(time.monotonic() + timeout_s)

    def begin_shutdown(self) -> None:
        """Start sending what is left (metrics, summary records, spans), each on its own thread.

        The exit waits for them in ``finish_shutdown``, at most until its deadline, whatever
        the endpoints do: a thread still waiting for an answer then is left behind.
        """
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # the sending thread sees _closed and ends
        if self.pushed and not self._inherited:
            self._exit = threading.Thread(
                target=self._send_the_rest, name="pipecat-grafana-exit", daemon=True
            )
            self._exit.start()
            if self.logs is not None:
                self.logs.begin_shutdown(self.config.flush_timeout_s)

    def _send_the_rest(self) -> None:
        timeout_s = self.config.flush_timeout_s
        try:
            self.export(timeout_s)
            if self.traced:
                traces.shutdown(timeout_s)
        except Exception as e:  # the SDK contains export failures; this is a bug of ours
            logger.error(f"pipecat-grafana: the last export failed: {type(e).__name__}: {e}")

    def finish_shutdown(self, deadline: float) -> None:
        """Wait for the last sends until ``deadline`` (monotonic seconds), then let go of the rest.

        What is dropped is said in one warning: how many calls' final values each reader
        missed and why, and how many summary records went unsent.
        """
        exit_thread = self._exit
        if exit_thread is not None:
            exit_thread.join(max(deadline - time.monotonic(), 0.0))
        cut_short = exit_thread is not None and exit_thread.is_alive()
        if cut_short and self._session is not None:
            # What is dropped is said below; the late answers say nothing more.
            self._session.abandoned = True
        unread = self.calls.drain()
        lost = [
            f"the final metrics of {n} ended call(s): {self._why_unread(r, cut_short)}"
            for r, n in unread.items()
        ]
        if self.logs is not None:
            lost.extend(self.logs.finish_shutdown(deadline))
        if lost:
            logger.warning(f"pipecat-grafana: at exit, dropped {'; and '.join(lost)}")

    def _why_unread(self, reader: str, cut_short: bool) -> str:
        if reader == SCRAPE:
            return (
                "no scrape of the Prometheus endpoint read them in time (at exit it waits "
                f"{self.config.flush_timeout_s:g}s at most for a scrape; scrape it every "
                "15 s or so)"
            )
        endpoint = self.config.endpoint or ""
        if otlp.interrupted_at_exit():
            return "the exit was interrupted (Ctrl-C) before the OTLP endpoint answered"
        outcome, accepted = self._last_export
        last = self._session.last if self._session is not None else None
        if cut_short and last is not None and not last.ok:
            outcome, accepted = last, False  # the attempt the exit cut short
        if accepted or outcome is None:
            if cut_short:
                return (
                    f"the OTLP endpoint did not answer within the flush timeout "
                    f"({self.config.flush_timeout_s:g}s, {FLUSH_TIMEOUT})"
                )
            return "the exporter shut down before they could be exported"
        said = self._failures is not None and self._failures.failing
        if said:
            # Explained in full when it began: name it, not the advice again.
            what = f"{outcome.status}" + (f": {outcome.detail[:120]}" if outcome.detail else "")
            if outcome.status is not None:
                return f"the OTLP endpoint refused the last export ({what}; see the error above)"
            return "the OTLP endpoint could not be reached (see the error above)"
        # A short process may never have said why: the exporter was still retrying when the
        # wait ended. Its last attempt says why.
        return otlp.explain(
            outcome,
            endpoint,
            source=self.config.endpoint_source,
            auth_source=self.config.auth_source,
        )
        return "the exporter shut down before they could be exported"

    def forget_after_fork(self) -> None:
        """Stop this copy of the parent's pipeline exporting from a forked child, without I/O.

        Runs in the child right after the fork, when only the forking thread exists: it
        takes no lock and touches no connection. The sending threads did not survive the
        fork; nothing of this copy sends again.
        """
        self._closed = self._inherited = True
