"""A local OTLP/HTTP receiver (metrics, logs, traces) for tests.

Tests must prove that metrics really leave the process as Grafana Cloud would see them:
serialized by the real OpenTelemetry SDK exporter and sent over HTTP with the right headers,
compression, names, units and attributes. Mocking the exporter proves none of that.
``OtlpReceiver`` is a tiny in-process OTLP/HTTP endpoint that decodes what it receives into
plain ``Point`` objects and misbehaves on demand (error statuses, ``Retry-After``, hanging),
so retry and shutdown paths can be tested without a network.
"""

from __future__ import annotations

import gzip
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest as ExportRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"
TRACES_PATH = "/v1/traces"
_SIGNALS = {METRICS_PATH: "metrics", LOGS_PATH: "logs", TRACES_PATH: "traces"}
_DECOMPRESS = {"gzip": gzip.decompress, "deflate": zlib.decompress, "": bytes, "identity": bytes}


@dataclass(frozen=True)
class Request:
    """One POST to ``/v1/metrics``.

    ``headers`` has lower-cased keys, ``size`` is the body size on the wire (after any
    compression), ``status`` is the answer (``None``: hung, never answered) and ``message``
    the decoded request (``None`` if it could not be decoded).
    """

    headers: dict[str, str]
    size: int
    status: int | None
    message: ExportRequest | None
    received_at: float = 0.0  # time.monotonic() on arrival


@dataclass(frozen=True)
class Exemplar:
    """One exemplar of a histogram point: a measurement, its attributes, its trace."""

    value: float
    time_unix_nano: int
    attributes: dict[str, Any]
    trace_id: str  # hex, "" when none
    span_id: str


@dataclass(frozen=True)
class LogRecord:
    """One OTLP log record with its scope and resource; IDs in hex, "" when unset."""

    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    severity_text: str
    severity_number: int
    time_unix_nano: int
    trace_id: str
    span_id: str
    size: int  # bytes of the request that carried it, on the wire


@dataclass(frozen=True)
class Span:
    """One OTLP span with its scope and resource; IDs in hex."""

    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    trace_id: str
    span_id: str
    parent_span_id: str


class ExponentialBuckets(NamedTuple):
    """The positive or negative buckets of an exponential histogram point.

    ``counts[i]`` counts the values in bucket ``offset + i``: at scale ``s``, bucket ``k``
    holds the values whose magnitude lies in ``(base**k, base**(k + 1)]``, with
    ``base = 2 ** (2 ** -s)``.
    """

    offset: int
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Point:
    """One data point with its metric, scope and resource.

    ``value`` is the number for sums and gauges and the ``count`` for histograms; ``sum``,
    ``min`` and ``max`` are only set for histograms, ``bucket_counts`` and
    ``explicit_bounds`` for explicit-bucket ones (``kind`` ``histogram``), ``scale``,
    ``zero_count``, ``zero_threshold``, ``positive`` and ``negative`` for exponential ones
    (``kind`` ``exponential_histogram``). ``temporality`` is the OTLP enum (1 = delta,
    2 = cumulative, 0 for gauges).
    """

    name: str
    unit: str
    kind: str
    is_monotonic: bool | None
    temporality: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int
    start_time_unix_nano: int
    value: float
    sum: float | None = None
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    min: float | None = None
    max: float | None = None
    exemplars: tuple[Exemplar, ...] = ()
    scale: int | None = None
    zero_count: int = 0
    zero_threshold: float = 0.0
    positive: ExponentialBuckets | None = None
    negative: ExponentialBuckets | None = None


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return tuple((kv.key, _value(kv.value)) for kv in v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def _attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _optional(dp: Any, field: str) -> float | None:
    return getattr(dp, field) if dp.HasField(field) else None


def _matches(attributes: dict[str, Any], attr_filter: dict[str, Any]) -> bool:
    return all(k in attributes and attributes[k] == v for k, v in attr_filter.items())


def _points(message: ExportRequest, name: str | None) -> list[Point]:
    out = []
    for rm in message.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if name is None or m.name == name:
                    out += _metric_points(m, sm.scope.name, resource)
    return out


def _exponential(dp: Any) -> dict[str, Any]:
    """The fields only an exponential histogram point has."""
    return {
        "scale": dp.scale,
        "zero_count": dp.zero_count,
        "zero_threshold": dp.zero_threshold,
        "positive": ExponentialBuckets(dp.positive.offset, tuple(dp.positive.bucket_counts)),
        "negative": ExponentialBuckets(dp.negative.offset, tuple(dp.negative.bucket_counts)),
    }


def _metric_points(m: Any, scope: str, resource: dict[str, Any]) -> list[Point]:
    kind = m.WhichOneof("data")
    if kind not in ("sum", "gauge", "histogram", "exponential_histogram"):
        raise NotImplementedError(f"metric {m.name!r}: {kind} is not supported")
    data, exponential = getattr(m, kind), kind == "exponential_histogram"
    hist = kind == "histogram" or exponential
    return [
        Point(
            name=m.name,
            unit=m.unit,
            kind=kind,
            is_monotonic=data.is_monotonic if kind == "sum" else None,
            temporality=getattr(data, "aggregation_temporality", 0),
            attributes=_attrs(dp.attributes),
            resource=resource,
            scope=scope,
            time_unix_nano=dp.time_unix_nano,
            start_time_unix_nano=dp.start_time_unix_nano,
            value=dp.count if hist else getattr(dp, dp.WhichOneof("value")),
            sum=_optional(dp, "sum") if hist else None,
            bucket_counts=tuple(dp.bucket_counts) if kind == "histogram" else (),
            explicit_bounds=tuple(dp.explicit_bounds) if kind == "histogram" else (),
            min=_optional(dp, "min") if hist else None,
            max=_optional(dp, "max") if hist else None,
            exemplars=tuple(
                Exemplar(
                    value=getattr(e, e.WhichOneof("value")),
                    time_unix_nano=e.time_unix_nano,
                    attributes=_attrs(e.filtered_attributes),
                    trace_id=e.trace_id.hex(),
                    span_id=e.span_id.hex(),
                )
                for e in dp.exemplars
            ),
            **(_exponential(dp) if exponential else {}),
        )
        for dp in data.data_points
    ]


def _log_records(message: ExportLogsServiceRequest, size: int) -> list[LogRecord]:
    return [
        LogRecord(
            body=_value(record.body) if record.HasField("body") else None,
            attributes=_attrs(record.attributes),
            resource=_attrs(rl.resource.attributes),
            scope=sl.scope.name,
            severity_text=record.severity_text,
            severity_number=record.severity_number,
            time_unix_nano=record.time_unix_nano,
            trace_id=record.trace_id.hex(),
            span_id=record.span_id.hex(),
            size=size,
        )
        for rl in message.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
    ]


def _spans(message: ExportTraceServiceRequest) -> list[Span]:
    return [
        Span(
            name=span.name,
            attributes=_attrs(span.attributes),
            resource=_attrs(rs.resource.attributes),
            scope=ss.scope.name,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
        )
        for rs in message.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def _longest_label(message: ExportRequest) -> int:
    """The longest attribute value of any point of ``message``, in characters."""
    return max(
        (
            len(str(value))
            for point in _points(message, None)
            for value in point.attributes.values()
        ),
        default=0,
    )


def _has_exponential(message: ExportRequest) -> bool:
    return any(
        metric.WhichOneof("data") == "exponential_histogram"
        for rm in message.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


class _Server(ThreadingHTTPServer):
    receiver: OtlpReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        signal = _SIGNALS.get(self.path)
        if signal is None:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        text = b""
        if signal == "metrics":
            status, retry_after, text = self.server.receiver._answer(headers, body)
        else:
            status, retry_after = self.server.receiver._answer_other(signal, headers, body), None
        if status is None:  # hung, then released: close without answering
            self.close_connection = True
            return
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", f"{retry_after:g}")
        if text:  # an error in words, as backends answer a request they refuse
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")  # empty ExportMetricsServiceResponse
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keeps test output quiet."""


class OtlpReceiver:
    """In-process OTLP/HTTP metrics endpoint on ``127.0.0.1`` with an ephemeral port.

    Use as a context manager or call ``start()``/``stop()``. Point the exporter at
    ``metrics_url``, or set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to ``endpoint``. All methods are
    thread-safe and may be called while serving.

    Attributes:
        endpoint: Base URL, e.g. ``http://127.0.0.1:PORT``.
        metrics_url: ``endpoint + "/v1/metrics"``.
    """

    def __init__(self, *, tls: tuple[str, str] | None = None, port: int = 0) -> None:
        """Bind to ``port`` (default: an ephemeral one); ``tls`` is ``(certfile, keyfile)``."""
        self._lock = threading.Lock()
        self._accepted: list[Request] = []
        self._rejected: list[Request] = []
        self._status, self._retry_after, self._times = 200, None, None
        self._released = threading.Event()
        self._released.set()
        self._other_status = {"logs": 200, "traces": 200}
        self._other_released = {"logs": threading.Event(), "traces": threading.Event()}
        for released in self._other_released.values():
            released.set()
        self._refuse_exponential = b""
        self._max_label_chars: int | None = None
        self._logs: list[LogRecord] = []
        self._spans: list[Span] = []
        self._other_attempts = {"logs": 0, "traces": 0}
        self._other_bytes = {"logs": 0, "traces": 0}
        self._other_bodies: list[bytes] = []  # decompressed, of the accepted logs and traces
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.receiver = self
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self._thread: threading.Thread | None = None
        self.endpoint = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self.metrics_url = self.endpoint + METRICS_PATH

    def start(self) -> OtlpReceiver:
        """Starts serving from a daemon thread and returns ``self``."""
        serve, poll = self._server.serve_forever, {"poll_interval": 0.05}
        self._thread = threading.Thread(target=serve, kwargs=poll, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Releases hung requests, stops serving and closes the socket; returns promptly."""
        self.unhang()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def respond_with(
        self, status: int, *, retry_after: float | None = None, times: int | None = None
    ) -> None:
        """Answers the next ``times`` requests (all if ``None``) with ``status``, then 200.

        Args:
            status: HTTP status; any but 200 records the request in ``rejected``.
            retry_after: If given, sent as the ``Retry-After`` header, in seconds.
            times: Number of requests to answer so before going back to 200.
        """
        with self._lock:
            self._status, self._retry_after, self._times = status, retry_after, times

    def respond_to(self, signal: str, status: int) -> None:
        """Answers every later ``logs`` or ``traces`` request with ``status`` (200: accept)."""
        with self._lock:
            self._other_status[signal] = status

    def _answer_other(self, signal: str, headers: dict[str, str], body: bytes) -> int | None:
        with self._lock:
            self._other_attempts[signal] += 1
            status = self._other_status[signal]
        released = self._other_released[signal]
        if not (self._released.is_set() and released.is_set()):  # hung
            self._released.wait()
            released.wait()
            return None
        if status != 200:
            return status
        try:
            raw = _DECOMPRESS[headers.get("content-encoding", "").lower()](body)
            if signal == "logs":
                records = _log_records(ExportLogsServiceRequest.FromString(raw), len(body))
            else:
                records = _spans(ExportTraceServiceRequest.FromString(raw))
        except Exception:  # unknown encoding or not an OTLP request
            return 400
        with self._lock:
            (self._logs if signal == "logs" else self._spans).extend(records)
            self._other_bytes[signal] += len(body)
            self._other_bodies.append(raw)
        return 200

    @property
    def logs(self) -> list[LogRecord]:
        """Every accepted log record, in arrival order."""
        with self._lock:
            return list(self._logs)

    def records(self, event_name: str) -> list[LogRecord]:
        """The accepted log records of one ``event_name`` (summaries, turns), in arrival order."""
        return [r for r in self.logs if r.attributes.get("event_name") == event_name]

    @property
    def spans(self) -> list[Span]:
        """Every accepted span, in arrival order."""
        with self._lock:
            return list(self._spans)

    def bytes_of(self, signal: str) -> int:
        """Bytes on the wire of the accepted ``logs`` or ``traces`` requests so far."""
        with self._lock:
            return self._other_bytes[signal]

    def received(self) -> bytes:
        """Every accepted request of every signal, decompressed, end to end.

        What left the process, byte for byte, to search for what must never leave it.
        """
        with self._lock:
            metrics = [r.message.SerializeToString() for r in self._accepted if r.message]
            return b"\n".join(metrics + self._other_bodies)

    def attempts_of(self, signal: str) -> int:
        """POSTs to ``/v1/logs`` or ``/v1/traces`` so far, accepted or not."""
        with self._lock:
            return self._other_attempts[signal]

    def hang(self, signal: str | None = None) -> None:
        """Reads requests but never answers them, until ``unhang()``/``stop()``.

        Args:
            signal: Only ``logs`` or ``traces`` requests; every signal's by default.
        """
        if signal is None:
            self._released.clear()
        else:
            self._other_released[signal].clear()

    def unhang(self) -> None:
        """Stops hanging; hung requests are closed without a response."""
        self._released.set()
        for released in self._other_released.values():
            released.set()

    def refuse_exponential(self, text: str) -> None:
        """Answer every metrics request holding an exponential histogram with 400 and ``text``.

        As a backend without native histograms may: the request is refused whole.
        """
        with self._lock:
            self._refuse_exponential = text.encode()

    def refuse_label_values_over(self, chars: int) -> None:
        """Answer 400 to a metrics request with a label value longer than ``chars``, as Mimir
        does (``-validation.max-length-label-value``, 2048 by default)."""
        with self._lock:
            self._max_label_chars = chars

    def _answer(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int | None, float | None, bytes]:
        if not self._released.is_set():
            with self._lock:
                self._rejected.append(Request(headers, len(body), None, None, time.monotonic()))
            self._released.wait()
            return None, None, b""
        try:
            message = ExportRequest.FromString(
                _DECOMPRESS[headers.get("content-encoding", "").lower()](body)
            )
        except Exception:  # unknown encoding or not an OTLP request
            message = None
        with self._lock:
            status, retry_after = (
                (self._status, self._retry_after) if message is not None else (400, None)
            )
            refusal = b""
            if self._refuse_exponential and message is not None and _has_exponential(message):
                status, retry_after, refusal = 400, None, self._refuse_exponential
            limit = self._max_label_chars
            if limit is not None and message is not None and _longest_label(message) > limit:
                status, retry_after = 400, None
                refusal = f"label value too long (limit {limit})".encode()
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._status, self._retry_after, self._times = 200, None, None
            request = Request(headers, len(body), status, message, time.monotonic())
            (self._accepted if status == 200 else self._rejected).append(request)
        return status, retry_after, refusal

    @property
    def requests(self) -> list[Request]:
        """Accepted (answered 200) requests, in arrival order."""
        with self._lock:
            return list(self._accepted)

    @property
    def rejected(self) -> list[Request]:
        """Requests answered with a non-200 status, or hung (``status is None``)."""
        with self._lock:
            return list(self._rejected)

    @property
    def attempts(self) -> int:
        """Number of POSTs to ``/v1/metrics`` so far, accepted, rejected or hung."""
        with self._lock:
            return len(self._accepted) + len(self._rejected)

    def clear(self) -> None:
        """Forgets all recorded requests, records and spans; the programmed behaviour is kept."""
        with self._lock:
            self._accepted.clear()
            self._rejected.clear()
            self._logs.clear()
            self._spans.clear()
            self._other_bodies.clear()

    def points(self, name: str | None = None) -> list[Point]:
        """Every data point of every accepted request (or of metric ``name``), arrival order."""
        return [p for r in self.requests for p in _points(r.message, name)]

    def names(self) -> set[str]:
        """Names of all metrics received in accepted requests."""
        return {p.name for p in self.points()}

    def latest(self, name: str, *, with_resource: bool = False) -> dict[frozenset, Point]:
        """Maps each series of metric ``name`` to its newest point (greatest time_unix_nano).

        For cumulative metrics this is the final value. The key is
        ``frozenset(attributes.items())``; ``with_resource=True`` adds the resource
        attributes as ``("resource.<key>", value)`` items, keeping apart series that differ
        only by resource (e.g. two processes). The scope is never part of the key.
        """
        series: dict[frozenset, Point] = {}
        for p in self.points(name):
            key = frozenset(p.attributes.items())
            if with_resource:
                key |= {(f"resource.{k}", v) for k, v in p.resource.items()}
            if key not in series or p.time_unix_nano >= series[key].time_unix_nano:
                series[key] = p
        return series

    def total(self, name: str, **attr_filter: Any) -> float:
        """Sums the latest values (histograms: counts) of the series matching all filters.

        Filters matching no series give 0.0. For attribute names that are not identifiers,
        pass ``**{"call.id": "c1"}``.

        Raises:
            KeyError: If metric ``name`` never arrived in an accepted request.
        """
        series = self.latest(name)
        if not series:
            raise KeyError(f"metric {name!r} never arrived; received: {sorted(self.names())}")
        return float(sum(p.value for p in series.values() if _matches(p.attributes, attr_filter)))

    def wait_for(self, predicate: Callable[[OtlpReceiver], Any], timeout: float = 10) -> None:
        """Polls until ``predicate(self)`` is truthy; a ``KeyError`` from it means "not yet".

        Raises:
            TimeoutError: If it is still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate(self):
                    return
            except KeyError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"condition not met within {timeout}s; attempts={self.attempts}, "
                    f"metrics={sorted(self.names())}"
                )
            time.sleep(0.02)
