"""Each call's summary, and each of its turns, as OTLP log records, which Grafana Cloud keeps in Loki.

A per-call metric series costs about 200 series per call; a log record costs one
line per call, whatever the fleet's size, and carries every figure of the
summary (``CallSummary.log_attributes``), so a call can be found by its ID, its
cost or its outcome with the ``call_id`` label off. The record has the same
resource as the metrics and, when the call is traced, the trace and span IDs of
its conversation, so Grafana links it to its trace.

The OpenTelemetry SDK's logs pipeline does the work: a ``LoggerProvider`` and the
OTLP/HTTP log exporter. Emitting a record only queues it; one thread of its own
(``pipecat-grafana-logs``) sends the queue soon after each call's end, within its own
deadline, so a logs endpoint that hangs never holds up the metrics, nor they it. A
batch the endpoint did not accept is kept (bounded) and sent again with the next one,
so an outage of the logs endpoint loses no summary that ends within it. What is given up
(the queue full, kept too long, too many kept) is counted by reason and said at exit.

Turn records (``turns``) go the same way, with two differences: a turn's end wakes no send
(its record goes with the next one: a call's end, or the interval), and nothing waits for it.
They are queued apart from the summaries, up to ``MAX_QUEUED_TURNS``, so a flood of turns
never pushes a summary out; past the bound the oldest turn record goes, and among records kept
after a failed send the turn records go first. Their drops are counted with the reason
prefixed ``turn_``.
"""

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from loguru import logger
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

from pipecat_grafana import __version__, otlp
from pipecat_grafana.config import FLUSH_TIMEOUT, MAX_PENDING, PENDING_RETENTION_S, ExportConfig
from pipecat_grafana.instruments import METER_NAME
from pipecat_grafana.notices import error_once
from pipecat_grafana.otlp import FailureLog, OutcomeSession, build_log_client
from pipecat_grafana.summary import EVENT_NAME, CallSummary
from pipecat_grafana.turns import TURN_EVENT_NAME, TurnRecord

# Records queued between two flushes, at most (a flush follows every call's end).
MAX_QUEUED_RECORDS = 2048
MAX_QUEUED_TURNS = 4096
"""Turn records queued between two sends, at most (one send an export interval at least):
400 turns a second at the default 10 s interval; past it, the oldest is dropped (``turn_queue``)."""
MAX_BATCH = 512
TURN_DROP_PREFIX = "turn_"
"""Prefixed to the reason a turn record was dropped (``turn_queue``, ``turn_overflow``, ...)."""


def _is_turn(record: Any) -> bool:  # a ReadWriteLogRecord, or a ReadableLogRecord
    return record.log_record.event_name == TURN_EVENT_NAME


class SummaryLogs:
    """Sends call summaries as OTLP log records to ``config.logs_endpoint``, on its own thread."""

    def __init__(
        self,
        config: ExportConfig,
        resource: Resource,
        *,
        on_dropped: Callable[[int, str], None] | None = None,
    ):
        """Create the logs pipeline and start its sending thread.

        Args:
            config: Where logs go (``logs_endpoint``), with which credentials, how often
                kept records are sent again (``export_interval_s``), and each send's
                deadline (``export_timeout_s``).
            resource: The resource the metrics carry.
            on_dropped: Called with a number of records given up and the reason
                (``instruments.SUMMARY_DROP_REASONS``), from the sending thread.
        """
        self.session = session = OutcomeSession()
        self.endpoint = str(config.logs_endpoint)
        self._interval_s = config.export_interval_s
        self._timeout_s = config.export_timeout_s
        self._dropped: Counter[str] = Counter()  # under _lock
        self._on_dropped = on_dropped
        self._exporter = _KeepingExporter(
            build_log_client(self.endpoint, config, session),
            FailureLog(self.endpoint, session, signal="logs"),
            self._drop,
        )
        self._queue = _Queue(self._exporter, self._drop)
        self._sending = threading.Lock()  # held while the queue is sent
        self._lock = threading.Lock()  # guards _waiters and _dropped
        self._waiters: list[Future] = []
        self._wake = threading.Event()
        self._closed = False
        self._provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_log_record_processor(self._queue)
        self._logger = self._provider.get_logger(METER_NAME, __version__)
        self._thread = threading.Thread(
            target=self._send_loop, name="pipecat-grafana-logs", daemon=True
        )
        self._thread.start()

    @property
    def failing(self) -> bool:
        """Whether the logs endpoint is known to fail (see ``FailureLog.failing``).

        A call's end then does not wait for the next send.
        """
        return self._exporter.failing

    def stalled(self) -> None:
        """A call's wait for the send in flight ran out: see ``FailureLog.stalled``."""
        self._exporter.stalled()

    def emit(self, summary: CallSummary, span: SpanContext | None = None) -> Future:
        """Queue the record of one call's summary and wake the sending thread (no I/O here).

        Args:
            summary: The call's final summary.
            span: The call's conversation span, when it was traced.

        Returns:
            ``True`` once the record was sent; ``False`` if that send failed, or at once
            while the endpoint is known to fail (the record is kept and sent again).
        """
        self._emit(summary.log_body(), summary.log_attributes(), EVENT_NAME, span)
        return self._waiter()

    def emit_turn(self, record: TurnRecord, span: SpanContext | None = None) -> None:
        """Queue one turn's record (no I/O, no wake): it goes with the next send.

        Args:
            record: The turn's record.
            span: The turn's span, when the call is traced.
        """
        self._emit(record.log_body(), record.log_attributes(), TURN_EVENT_NAME, span)

    def _emit(
        self,
        body: str,
        attributes: Mapping[str, str | int | float | bool],
        event_name: str,
        span: SpanContext | None,
    ) -> None:
        # Queued by _Queue.on_emit: no I/O on the caller's thread.
        context = set_span_in_context(NonRecordingSpan(span)) if span is not None else None
        self._logger.emit(
            timestamp=time.time_ns(),
            context=context,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=body,
            attributes=attributes,
            event_name=event_name,
        )

    def _waiter(self) -> Future:
        sent: Future = Future()
        if self.failing:
            sent.set_result(False)
        else:
            with self._lock:
                self._waiters.append(sent)
        self._wake.set()
        return sent

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is queued and what is kept, within ``timeout_s``; whether all was accepted.

        The sending thread and the exit may both flush: the queue has one consumer at a time.
        """
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        with self._sending:
            with self._lock:
                waiters, self._waiters = self._waiters, []
            deadline = time.monotonic() + timeout_s
            with otlp.deadline(timeout_s):
                sent = self._queue.send() and self._exporter.retry()
            # A call's end waits for its summary, not for the turn records queued after it.
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(sent)
            remaining = deadline - time.monotonic()
            if remaining > 0 and not self._exporter.failing:
                with otlp.deadline(remaining):
                    sent = self._queue.send_turns() and sent
            else:
                sent = sent and self._queue.pending() == 0  # left for the next send
        return sent

    def begin_shutdown(self, timeout_s: float) -> None:
        """Send what is left, on the sending thread, within ``timeout_s``; then it ends."""
        self._closed = True
        self._timeout_s = timeout_s
        self._wake.set()

    def finish_shutdown(self, deadline: float) -> list[str]:
        """Wait for the last send until ``deadline`` (monotonic seconds); what was dropped.

        Returns:
            What the process drops of the summaries, in words, for the exit's one line.
        """
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        cut_short = self._thread.is_alive()
        if cut_short:
            self.session.abandoned = True  # said below; the late answer says nothing more
        unsent = self._queue.pending() + self._exporter.unsent()
        last = self.session.last
        if last is not None and last.status is not None and not last.ok:
            reason = f"the logs endpoint refused them ({last.status}"
            reason += f": {last.detail[:200]})" if last.detail else ")"
        elif cut_short:
            reason = (
                f"the logs endpoint did not answer within the flush timeout "
                f"({self._timeout_s:g}s, {FLUSH_TIMEOUT})"
            )
        else:
            reason = "the logs endpoint could not be reached (see the error above)"
        with self._lock:
            waiters, self._waiters = self._waiters, []
            dropped = dict(self._dropped)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(False)
        lost = [f"{unsent} call summary or turn record(s): {reason}"] if unsent else []
        if dropped:
            said = ", ".join(f"{n} {_DROPPED[reason]}" for reason, n in sorted(dropped.items()))
            lost.append(f"earlier, {sum(dropped.values())} call summary or turn record(s) ({said})")
        self._provider.shutdown()
        return lost

    def shutdown(self, timeout_s: float) -> bool:
        """Send what is left, then stop; whether all of it was accepted."""
        self.begin_shutdown(timeout_s)
        self._thread.join(timeout_s)
        sent = not self._thread.is_alive() and self._exporter.unsent() == 0
        self.finish_shutdown(time.monotonic())
        return sent

    def _send_loop(self) -> None:
        # Woken by each call's end; between them, once an interval to send kept records.
        while True:
            self._wake.wait(timeout=self._interval_s)
            self._wake.clear()
            closing = self._closed
            try:
                self.flush()
            except Exception as e:  # the SDK contains export failures; this is a bug of ours
                logger.error(
                    f"pipecat-grafana: sending call summaries failed: {type(e).__name__}: {e}"
                )
            if closing:
                return

    def _drop(self, records: int, reason: str) -> None:
        if not records:
            return
        with self._lock:
            self._dropped[reason] += records
        if self._on_dropped is not None:
            self._on_dropped(records, reason)


_DROPPED = {
    "queue": "beyond the queue's bound",
    "unencodable": "that could not be encoded",
    "expired": "kept longer than the retention time",
    "overflow": "beyond the records kept",
}
_DROPPED.update({TURN_DROP_PREFIX + k: f"turn records {v}" for k, v in list(_DROPPED.items())})


def _drop_by_kind(
    drop: Callable[[int, str], None], records: Sequence[ReadableLogRecord], reason: str
) -> None:
    """Count ``records`` dropped for ``reason``, the turn records apart."""
    turns = sum(1 for record in records if _is_turn(record))
    drop(len(records) - turns, reason)
    drop(turns, TURN_DROP_PREFIX + reason)


class _Queue(LogRecordProcessor):
    """Keeps emitted records until the sending thread sends them: ``on_emit`` does no I/O."""

    def __init__(self, exporter: LogRecordExporter, drop: Callable[[int, str], None]):
        self._exporter = exporter
        self._drop = drop
        # What the SDK hands on_emit, which its exporters take (ReadWriteLogRecord, itself
        # not typed as the ReadableLogRecord they are annotated to take).
        self._records: deque[Any] = deque(maxlen=MAX_QUEUED_RECORDS)
        self._turns: deque[Any] = deque(maxlen=MAX_QUEUED_TURNS)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if _is_turn(log_record):
            records, bound, reason = self._turns, MAX_QUEUED_TURNS, TURN_DROP_PREFIX + "queue"
        else:
            records, bound, reason = self._records, MAX_QUEUED_RECORDS, "queue"
        if len(records) == bound:
            self._drop(1, reason)  # the oldest goes
        records.append(log_record)  # deque.append is atomic: no lock on the loop

    def pending(self) -> int:
        """Records queued, not yet sent."""
        return len(self._records) + len(self._turns)

    def send(self) -> bool:
        """Export every queued summary, in batches, turn records filling the room left.

        Returns whether all were accepted. One consumer at a time (``SummaryLogs.flush``):
        ``popleft`` on an empty deque raises.
        """
        ok = True
        while self._records:
            batch: list[Any] = []
            for records in (self._records, self._turns):  # summaries first
                while records and len(batch) < MAX_BATCH:
                    batch.append(records.popleft())
            ok = self._exporter.export(batch) is LogRecordExportResult.SUCCESS and ok
        return ok

    def send_turns(self) -> bool:
        """Export the turn records still queued, in batches; whether all were accepted."""
        ok = True
        while self._turns:
            batch: list[Any] = []
            while self._turns and len(batch) < MAX_BATCH:
                batch.append(self._turns.popleft())
            ok = self._exporter.export(batch) is LogRecordExportResult.SUCCESS and ok
        return ok

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.send() and self.send_turns()


class _KeepingExporter(LogRecordExporter):
    """The OTLP client, with health said once and the records of a failed batch kept."""

    def __init__(
        self, client: LogRecordExporter, health: FailureLog, drop: Callable[[int, str], None]
    ):
        self._client = client
        self._health = health
        self._drop = drop
        self._lock = threading.Lock()
        self._pending: list[tuple[float, ReadableLogRecord]] = []  # under _lock
        self._in_flight = 0  # records of the send in flight (kept ones included)

    @property
    def failing(self) -> bool:
        """Whether the logs endpoint is known to fail."""
        return self._health.failing

    def stalled(self) -> None:
        """A call's wait for the send in flight ran out."""
        self._health.stalled()

    def unsent(self) -> int:
        """Records not accepted yet: those of the send in flight, else those kept.

        Read without the lock, which a send that hangs holds: the exit must not wait for it.
        """
        return self._in_flight or len(self._pending)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self._lock:
            if self._health.unserved:
                return LogRecordExportResult.SUCCESS  # no logs here: records off, said once
            now = time.monotonic()
            kept = [(at, r) for at, r in self._pending if now - at < PENDING_RETENTION_S]
            expired = [r for at, r in self._pending if now - at >= PENDING_RETENTION_S]
            _drop_by_kind(self._drop, expired, "expired")
            records = [r for _, r in kept] + list(batch)
            if not records:
                return LogRecordExportResult.SUCCESS
            self._in_flight = len(records)
            try:
                with self._health as health:
                    result = self._send(records)
                if health.report(result is LogRecordExportResult.SUCCESS) or health.unserved:
                    self._pending = []
                    return LogRecordExportResult.SUCCESS
                self._pending = self._bounded(kept + [(now, r) for r in batch])
                return LogRecordExportResult.FAILURE
            finally:
                self._in_flight = 0  # after _pending holds what is left

    def _bounded(
        self, keep: list[tuple[float, ReadableLogRecord]]
    ) -> list[tuple[float, ReadableLogRecord]]:
        """At most ``MAX_PENDING`` records, the oldest turn records given up first."""
        excess = len(keep) - MAX_PENDING
        if excess <= 0:
            return keep
        turns = [i for i, (_, r) in enumerate(keep) if _is_turn(r)][:excess]
        gone = set(turns)
        if len(gone) < excess:  # then the oldest summaries
            rest = [i for i in range(len(keep)) if i not in gone]
            gone.update(rest[: excess - len(gone)])
        _drop_by_kind(self._drop, [keep[i][1] for i in sorted(gone)], "overflow")
        return [item for i, item in enumerate(keep) if i not in gone]

    def _send(self, records: list[ReadableLogRecord]) -> LogRecordExportResult:
        """Send ``records``; one that cannot be encoded is dropped, not kept with the rest.

        Every value is made valid before it is emitted; should one still fail to encode,
        halving the batch finds it, so that it never holds back every later summary.
        """
        try:
            return self._client.export(records)
        except (ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
            if len(records) == 1:
                error_once(
                    f"logs-unencodable:{type(e).__name__}",
                    f"dropped a log record that cannot be encoded ({type(e).__name__});"
                    " the other records are sent (logged once)",
                )
                _drop_by_kind(self._drop, records, "unencodable")
                return LogRecordExportResult.SUCCESS
            half = len(records) // 2
            first, second = self._send(records[:half]), self._send(records[half:])
            ok = LogRecordExportResult.SUCCESS
            return ok if first is ok and second is ok else LogRecordExportResult.FAILURE

    def retry(self) -> bool:
        """Send the kept records again, if any; whether none is left."""
        if not self._pending:
            return True
        return self.export([]) is LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self._client.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
