"""Each call's summary as one OTLP log record, which Grafana Cloud keeps in Loki.

A per-call metric series costs about 200 series per call; a log record costs one
line per call, whatever the fleet's size, and carries every figure of the
summary (``CallSummary.log_attributes``), so a call can be found by its ID, its
cost or its outcome with the ``call_id`` label off. The record has the same
resource as the metrics and, when the call is traced, the trace and span IDs of
its conversation, so Grafana links it to its trace.

The OpenTelemetry SDK's logs pipeline does the work: a ``LoggerProvider`` and
the OTLP/HTTP log exporter. Emitting a record only queues it; the export
pipeline's flush thread sends the queue at the call's end, so logs add no thread
of their own (the SDK's batch processor would add one per process). A batch the endpoint did not accept is kept (bounded) and
sent again with the next one, so an outage of the logs endpoint loses no summary
that ends within it, and never touches the metrics.
"""

import threading
import time
from collections import deque
from collections.abc import Sequence

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

from pipecat_grafana import __version__
from pipecat_grafana.config import MAX_PENDING, PENDING_RETENTION_S, ExportConfig
from pipecat_grafana.instruments import METER_NAME
from pipecat_grafana.otlp import ExportHealth, OutcomeSession, build_log_client
from pipecat_grafana.summary import EVENT_NAME, CallSummary

# Records queued between two flushes, at most (a flush follows every call's end).
MAX_QUEUED_RECORDS = 2048
MAX_BATCH = 512


class SummaryLogs:
    """Sends call summaries as OTLP log records to ``config.logs_endpoint``."""

    def __init__(self, config: ExportConfig, resource: Resource):
        """Create the logs pipeline (no thread: the export pipeline's flush thread sends).

        Args:
            config: Where logs go (``logs_endpoint``) and with which credentials.
            resource: The resource the metrics carry.
        """
        self.session = session = OutcomeSession()
        self.endpoint = str(config.logs_endpoint)
        self._exporter = _KeepingExporter(
            build_log_client(self.endpoint, config, session),
            ExportHealth(self.endpoint, session, signal="logs"),
        )
        self._queue = _Queue(self._exporter)
        self._sending = threading.Lock()  # held while the queue is sent
        self._provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_log_record_processor(self._queue)
        self._logger = self._provider.get_logger(METER_NAME, __version__)

    def emit(self, summary: CallSummary, span: SpanContext | None = None) -> None:
        """Queue the record of one call's summary (no I/O here).

        Args:
            summary: The call's final summary.
            span: The call's conversation span, when it was traced.
        """
        context = set_span_in_context(NonRecordingSpan(span)) if span is not None else None
        self._logger.emit(
            timestamp=time.time_ns(),
            context=context,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=summary.log_body(),
            attributes=summary.log_attributes(),
            event_name=EVENT_NAME,
        )

    def flush(self, timeout_s: float) -> bool:
        """Send what is queued and what is pending; whether all of it was accepted.

        The flush thread and the exit path may both flush: the queue has one consumer at
        a time.
        """
        with self._sending:
            return self._queue.send() and self._exporter.retry()

    def shutdown(self, timeout_s: float) -> bool:
        """Send what is left, then stop; whether all of it was accepted."""
        sent = self.flush(timeout_s)
        self._provider.shutdown()
        return sent


class _Queue(LogRecordProcessor):
    """Keeps emitted records until the flush thread sends them: ``on_emit`` does no I/O."""

    def __init__(self, exporter: LogRecordExporter):
        self._exporter = exporter
        self._records: deque[ReadableLogRecord] = deque(maxlen=MAX_QUEUED_RECORDS)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._records.append(log_record)  # deque.append is atomic: no lock on the loop

    def send(self) -> bool:
        """Export every queued record, in batches; whether all were accepted.

        One consumer at a time (``SummaryLogs.flush``): ``popleft`` on an empty deque raises.
        """
        ok = True
        while self._records:
            batch = []
            while self._records and len(batch) < MAX_BATCH:
                batch.append(self._records.popleft())
            ok = self._exporter.export(batch) is LogRecordExportResult.SUCCESS and ok
        return ok

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.send()


class _KeepingExporter(LogRecordExporter):
    """The OTLP client, with health said once and the records of a failed batch kept."""

    def __init__(self, client: LogRecordExporter, health: ExportHealth):
        self._client = client
        self._health = health
        self._lock = threading.Lock()
        self._pending: list[tuple[float, ReadableLogRecord]] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self._lock:
            if self._health.unserved:
                return LogRecordExportResult.SUCCESS  # no logs here: records off, said once
            now = time.monotonic()
            kept = [(at, r) for at, r in self._pending if now - at < PENDING_RETENTION_S]
            records = [r for _, r in kept] + list(batch)
            if not records:
                return LogRecordExportResult.SUCCESS
            with self._health as health:
                result = self._client.export(records)
            if health.report(result is LogRecordExportResult.SUCCESS) or health.unserved:
                self._pending = []
                return LogRecordExportResult.SUCCESS
            self._pending = (kept + [(now, r) for r in batch])[-MAX_PENDING:]
            return LogRecordExportResult.FAILURE

    def retry(self) -> bool:
        """Send the kept records again, if any; whether none is left."""
        if not self._pending:
            return True
        return self.export([]) is LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self._client.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
