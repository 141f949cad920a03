"""Talking to the OTLP endpoint: the HTTP client, and plain words for its failures.

The OTel exporter retries (429, 502-504, with ``Retry-After``), batches and
times out by itself, and logs every failed attempt. That log says "code: 401"
every 10 seconds for as long as the bot runs; a user needs to read once that the
token is wrong, and once that export works again. ``OutcomeSession`` records how
each request ended, ``explain`` turns it into a sentence, and ``FailureLog``
logs a sentence when the state changes while the exporter's own per-attempt
lines for our exports are filtered out.
"""

import contextlib
import heapq
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from loguru import logger
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pipecat_grafana import runtime
from pipecat_grafana.config import (
    DEFAULT_EXPORT_TIMEOUT_S,
    GRAFANA_CLOUD_AUTH,
    LOGS,
    MAX_PENDING,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    PENDING_RETENTION_S,
    TRACES,
    ExportConfig,
)

# The exporters' HTTP clients log through their module loggers.
_OTEL_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
_exporting = threading.local()
# Set once the process exits: every request from then on ends by this monotonic time.
_exit_deadline: float | None = None
_exit_interrupted = False
_DETAIL_CHARS = 500  # of a refusal's body: enough to say what was refused


@dataclass(frozen=True)
class Outcome:
    """How the last request to the endpoint ended.

    Parameters:
        status: The HTTP status, or ``None`` if no response arrived.
        error: The connection error when no response arrived.
        detail: The start of the body of a response that refused the request (what the
            endpoint said was wrong), else empty.
    """

    status: int | None
    error: BaseException | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the endpoint accepted the request."""
        return self.status is not None and 200 <= self.status < 300


class OutcomeSession(requests.Session):
    """A ``requests`` session that remembers how its last request ended.

    It also keeps the CA bundle the exporter gave it (``OTEL_EXPORTER_OTLP_CERTIFICATE``)
    when ``REQUESTS_CA_BUNDLE`` is set too.

    Attributes:
        last: How the last request ended, ``None`` before the first.
        endpoint_source: The variable the URL came from (set by ``build_client``), so
            that a failure is explained in terms of what the user wrote.
        abandoned: The exit stopped waiting for this session's requests and said what was
            dropped: a request that ends later logs nothing more.
        auth_source: Where the Authorization header came from (``None``: none is sent),
            likewise.
    """

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("https://", "http://"):
            self.mount(prefix, _DeadlineAdapter())
        self.last: Outcome | None = None
        self.endpoint_source: str | None = None
        self.abandoned = False
        self.auth_source: str | None = None

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # noqa: D102
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace the session's CA
        # bundle, which would silently ignore OTEL_EXPORTER_OTLP_CERTIFICATE.
        if isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings

    def send(self, request, **kwargs):  # noqa: D102 - see requests.Session.send
        # requests' timeout is per socket operation: a peer that trickles its answer a byte
        # at a time never trips it. So every request ends by one deadline (its own timeout,
        # or what is left of the export's or the exit's), and a watchdog closes its socket
        # then; and only a bounded part of the body is ever read.
        timeout = kwargs.get("timeout")
        deadlines = [d for d in (_exit_deadline, getattr(_exporting, "deadline", None)) if d]
        if timeout is not None:
            deadlines.append(time.monotonic() + _seconds(timeout))
        watchdog = None
        if deadlines:
            left = max(min(deadlines) - time.monotonic(), 0.001)
            kwargs["timeout"] = left
            watchdog = _Watchdog(left)
        kwargs["stream"] = True
        try:
            response = super().send(request, **kwargs)
            _read_bounded(response)
        except Exception as error:
            if watchdog is None or not watchdog.fired:
                # Not only network errors: requests raises a bare OSError for a CA bundle
                # that is not there, before connecting, and that must be explained too.
                self.last = Outcome(None, error)
                raise
            late = requests.exceptions.ReadTimeout(
                f"no complete answer within {watchdog.seconds:g} s (the peer answered too "
                "slowly, or not at all)"
            )
            self.last = Outcome(None, late)
            raise late from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
        status = response.status_code
        detail = ""
        if 400 <= status < 600:
            # The start of what the endpoint said, decoded as it declares (else UTF-8),
            # never with a guess over the whole body.
            head = response.content[: _DETAIL_CHARS * 4]
            detail = head.decode(response.encoding or "utf-8", "replace")[:_DETAIL_CHARS]
            detail = _CONTROL.sub(" ", detail).strip()
        self.last = Outcome(status, detail=detail)
        return response


MAX_BODY_BYTES = 64 * 1024
"""The most of a response body ever read: an OTLP answer is a few bytes, a refusal a line."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _read_bounded(response: requests.Response) -> None:
    """Read at most ``MAX_BODY_BYTES`` of the body; drop the connection if there is more."""
    body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True) or b""
    response._content = body[:MAX_BODY_BYTES]  # what requests' .content and .text read
    response._content_consumed = True  # type: ignore[attr-defined]  # requests' own flag
    response.encoding = response.encoding or "utf-8"  # no guessing over the body
    if len(body) > MAX_BODY_BYTES:
        response.close()  # the rest is never read: the connection is not reused
    else:
        response.raw.release_conn()


class _InFlight:
    """The connection a thread is sending on, for the watchdog to close."""

    def __init__(self) -> None:
        self.connection: HTTPConnection | None = None


class _Watchdog:
    """Closes the socket of the calling thread's request once ``seconds`` have passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = False
        self.due = time.monotonic() + seconds
        self.cancelled = False
        self._in_flight = _exporting.in_flight = _InFlight()
        _WATCHDOGS.watch(self)

    def fire(self) -> None:
        """Past its deadline: shut its socket down, so that the blocked read returns at once."""
        if self.cancelled:
            return  # answered meanwhile: its connection may already serve another request
        connection = self._in_flight.connection
        sock = getattr(connection, "sock", None)
        if sock is None:
            return
        self.fired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """The request ended (answered or not): nothing to close any more."""
        self.cancelled = True
        self._in_flight.connection = None
        _exporting.in_flight = None


class _Watchdogs:
    """One thread for the process that fires every request's watchdog at its deadline.

    A runtime part: a thread per request would come and go with every export.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._due: list[tuple[float, int, _Watchdog]] = []  # a heap, under lock
        self._count = 0  # under lock: ties in the heap
        self._thread: threading.Thread | None = None  # under lock

    def watch(self, watchdog: _Watchdog) -> None:
        """Fire ``watchdog`` at its deadline unless it is cancelled first."""
        with self.lock:
            self._count += 1
            heapq.heappush(self._due, (watchdog.due, self._count, watchdog))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pipecat-grafana-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self.lock:
                while self._due and self._due[0][2].cancelled:
                    heapq.heappop(self._due)
                left = self._due[0][0] - time.monotonic() if self._due else None
                if left is None or left > 0:
                    self._wake.wait(left)
                    continue
                watchdog = heapq.heappop(self._due)[2]
            watchdog.fire()

    def after_fork_in_child(self) -> None:
        # The thread is gone; the child starts one on its first request.
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._due = []
        self._thread = None


_WATCHDOGS = runtime.own(_Watchdogs())


def _track(connection: HTTPConnection) -> None:
    in_flight = getattr(_exporting, "in_flight", None)
    if in_flight is not None:
        in_flight.connection = connection


class _TrackedHTTPConnection(HTTPConnection):
    def request(self, *args, **kwargs):  # noqa: D102 - see urllib3's
        _track(self)
        return super().request(*args, **kwargs)


class _TrackedHTTPSConnection(HTTPSConnection):
    def request(self, *args, **kwargs):  # noqa: D102 - see urllib3's
        _track(self)
        return super().request(*args, **kwargs)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter, with connections the watchdog can find."""

    def init_poolmanager(self, *args, **kwargs):  # noqa: D102 - see requests'
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _TrackedHTTPPool,
            "https": _TrackedHTTPSPool,
        }


def exit_by(deadline: float | None, *, interrupted: bool = False) -> None:
    """End every request of this package by ``deadline`` (monotonic seconds); ``None``: no end.

    The process is exiting: it waits for what is left to send at most the flush timeout,
    and a request that would outlive it (the exporter's own timeout is 10 s) is cut short.

    Args:
        deadline: When every request ends.
        interrupted: The exit's wait was interrupted (Ctrl-C): what is dropped is said so.
    """
    global _exit_deadline, _exit_interrupted
    _exit_deadline = deadline
    _exit_interrupted = interrupted


def interrupted_at_exit() -> bool:
    """Whether the exit's wait was interrupted (see ``exit_by``)."""
    return _exit_interrupted


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """End every request this thread sends within the block by ``seconds`` from now.

    The OTLP clients retry within their own timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``): this
    bounds all of one export, its retries included, by the sender's own deadline.
    """
    _exporting.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _exporting.deadline = None


def _seconds(timeout) -> float:
    # requests takes a number or a (connect, read) pair.
    return max(timeout) if isinstance(timeout, tuple) else float(timeout)


def _defaults_for_refused(config: ExportConfig) -> dict[str, Any]:
    """The client arguments that replace variables whose values ``config`` refused.

    The exporter would read them itself and take a timeout of -1 as it is; the refusal was
    said once, naming the variable, and the default is used, as it said.
    """
    arguments: dict[str, Any] = {}
    if {OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT} & set(config.refused):
        arguments["timeout"] = DEFAULT_EXPORT_TIMEOUT_S
    if {OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_EXPORTER_OTLP_METRICS_COMPRESSION} & set(
        config.refused
    ):
        arguments["compression"] = Compression.NoCompression
    return arguments


def build_client(config: ExportConfig, session: OutcomeSession | None = None) -> OTLPMetricExporter:
    """The OTLP/HTTP protobuf client (the SDK's ``OTLPMetricExporter``) for ``config``.

    Timeout, compression, certificate and any headers not built here come from the
    standard ``OTEL_EXPORTER_OTLP_*`` variables, read by the exporter itself (a refused
    timeout or compression is given its default here).
    """
    session = session or OutcomeSession()
    session.endpoint_source = config.endpoint_source
    session.auth_source = config.auth_source
    if config.endpoint is None:
        raise ValueError("build_client needs a configuration whose export is on")
    return OTLPMetricExporter(
        endpoint=config.endpoint,
        headers=config.headers,
        session=session,
        **_defaults_for_refused(config),
    )


def build_log_client(
    endpoint: str, config: ExportConfig, session: OutcomeSession
) -> OTLPLogExporter:
    """The OTLP/HTTP protobuf client for log records, with the metrics' credentials."""
    session.auth_source = config.auth_source
    return OTLPLogExporter(
        endpoint=endpoint, headers=config.headers, session=session, **_defaults_for_refused(config)
    )


def build_span_client(
    endpoint: str, config: ExportConfig, session: OutcomeSession
) -> OTLPSpanExporter:
    """The OTLP/HTTP protobuf client for spans, with the metrics' credentials."""
    session.auth_source = config.auth_source
    return OTLPSpanExporter(
        endpoint=endpoint, headers=config.headers, session=session, **_defaults_for_refused(config)
    )


def explain(
    outcome: Outcome | None,
    endpoint: str,
    *,
    source: str | None = None,
    timeout_s: float | None = None,
    signal: str = "metrics",
    auth_source: str | None = GRAFANA_CLOUD_AUTH,
) -> str:
    """Say in plain words why a request to ``endpoint`` failed, and what to check.

    Args:
        outcome: How the request ended.
        endpoint: The URL it was sent to.
        source: The variable the URL came from (``ExportConfig.endpoint_source``).
        timeout_s: The timeout the request had, when not the exporter's own
            (``OTEL_EXPORTER_OTLP_TIMEOUT``).
        signal: What was sent: ``metrics``, ``logs`` or ``traces`` (the token's scope
            for each is ``<signal>:write``).
        auth_source: Where the Authorization header came from
            (``ExportConfig.auth_source``; ``None``: none was sent).
    """
    if outcome is None:
        return f"the export to {endpoint} failed before a request was sent"
    status = outcome.status
    answer = f"{status}{said(outcome)}"
    if status in (401, 403):
        return _refused_credentials(endpoint, answer, signal, auth_source)
    if status == 404:
        return f"{endpoint} was not found ({answer}): the endpoint URL is wrong; {_right_url(source, signal)}"
    if status is not None and 300 <= status < 400:
        # The exporter does not follow redirects, and counts a 3xx as a success.
        return (
            f"{endpoint} answered with a redirect ({status}) instead of accepting the {signal}: "
            "the URL is not the OTLP endpoint itself (http:// instead of https://, or a "
            "different path); set the endpoint to the URL it redirects to"
        )
    if status == 429:
        return f"{endpoint} is rate-limiting us ({answer}); the exporter retries with backoff"
    if status is not None and status >= 500:
        return f"{endpoint} failed with a server error ({answer}); the exporter retries"
    if status is not None:
        return f"{endpoint} refused the {signal} ({answer})"
    return f"cannot connect to {endpoint}: {_connection_problem(outcome.error, timeout_s)}"


_REPLY_CHARS = 200  # of the backend's reply, quoted in a message
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# A backend may echo what it was sent: whatever follows an auth scheme or a known key shape.
_SECRET = re.compile(
    r"(?i)\b(basic|bearer|token|api[-_]?key|authorization)(\s*[:=]?\s*)[^\s\"',;]+"
)
_GRAFANA_TOKEN = re.compile(r"glc_[A-Za-z0-9+/=_-]+")
_TAG = re.compile(r"<[^<>]*>")


def said(outcome: Outcome | None) -> str:
    """The backend's own reply to a refused request, quoted for a message; else empty.

    Bounded to a line of 200 characters, control characters removed, and anything that looks
    like a credential it echoed masked: ``: "unsupported path requested: ..."``.
    """
    if outcome is None or not outcome.detail:
        return ""
    # An HTML error page (a proxy's, http.server's) is read for its words, not its markup.
    text = " ".join(_CONTROL.sub(" ", _TAG.sub(" ", outcome.detail)).split())
    text = _GRAFANA_TOKEN.sub("glc_<masked>", _SECRET.sub(r"\1\2<masked>", text))
    if len(text) > _REPLY_CHARS:
        text = text[: _REPLY_CHARS - 3] + "..."
    return f': "{text}"' if text else ""


def is_grafana_cloud(endpoint: str, auth_source: str | None = None) -> bool:
    """Whether ``endpoint`` is Grafana Cloud's OTLP gateway (or credentials were made for it)."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return (
        auth_source == GRAFANA_CLOUD_AUTH or host == "grafana.net" or host.endswith(".grafana.net")
    )


def _refused_credentials(endpoint: str, answer: str, signal: str, auth_source: str | None) -> str:
    """A 401 or 403, explained in the terms of the endpoint in use and of the credentials."""
    grafana = is_grafana_cloud(endpoint, auth_source)
    if auth_source is None:
        fix = (
            f"set {GRAFANA_CLOUD_AUTH} (a token with the {signal}:write scope)"
            if grafana
            else f"set the header the backend expects in {OTEL_EXPORTER_OTLP_HEADERS}, for "
            "example Authorization=Bearer%20<token> or Authorization=Basic%20<base64 of "
            "user:password>"
        )
        return f"{endpoint} asks for credentials ({answer}) and none are sent: {fix}"
    if auth_source == GRAFANA_CLOUD_AUTH:
        return (
            f"{endpoint} rejected the credentials ({answer}): check that "
            "GRAFANA_CLOUD_INSTANCE_ID is the stack's numeric instance ID (not the org or "
            f"user ID), that GRAFANA_CLOUD_API_TOKEN is a current token with the "
            f"{signal}:write scope, and that both belong to the same stack"
        )
    if grafana:
        return (
            f"{endpoint} rejected the credentials ({answer}) of {auth_source}: for Grafana "
            "Cloud it must be Basic base64 of <instance ID>:<token>, the stack's numeric "
            f"instance ID and a current token with the {signal}:write scope of the same stack"
        )
    return (
        f"{endpoint} rejected the credentials ({answer}) of {auth_source}: check them with "
        "whoever runs the backend (a user, password or token it knows, with the right to "
        f"write {signal}), and the header name it expects"
    )


NOT_SERVED = frozenset({400, 404})
"""What an OTLP endpoint without a logs or traces pipeline answers for ``/v1/logs`` or
``/v1/traces``: VictoriaMetrics 400 ("unsupported path"), Prometheus' OTLP receiver and a
collector without that pipeline 404. Not a permission (that is 401/403) and not transient."""


def serves_no(outcome: Outcome | None, signal: str) -> bool:
    """Whether ``outcome`` says the endpoint takes no ``signal`` at all (logs or traces).

    Only for logs and traces: the metrics URL answering 404 is a wrong URL, said as such.
    """
    return signal != "metrics" and outcome is not None and outcome.status in NOT_SERVED


def explain_not_served(endpoint: str, status: int | None, signal: str) -> str:
    """Say that ``endpoint`` takes no ``signal``, what is off for it, and the switches."""
    what, switch, elsewhere = {
        "logs": (
            "call summary records are off for this process (each summary is still logged "
            "and passed to on_call_summary)",
            LOGS,
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
        ),
        "traces": ("traces are off for this process", TRACES, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
    }[signal]
    return (
        f"{endpoint} does not take OTLP {signal} ({status}), as VictoriaMetrics, Prometheus "
        f"and collectors without a {signal} pipeline answer: {what}. To send them to a "
        f"backend that takes them, set {elsewhere}; {switch}=false stops trying"
    )


def _right_url(source: str | None, signal: str = "metrics") -> str:
    """What the URL in ``source`` should look like: a base URL, or the full one."""
    if source is not None and source.endswith(
        ("_METRICS_ENDPOINT", "_LOGS_ENDPOINT", "_TRACES_ENDPOINT")
    ):
        return (
            f"{source} is used as is, so it must be the full {signal} URL, for Grafana Cloud "
            f"https://otlp-gateway-<zone>.grafana.net/otlp/v1/{signal}"
        )
    if source is None:
        return (
            "Grafana Cloud's has the shape "
            f"https://otlp-gateway-<zone>.grafana.net/otlp/v1/{signal}"
        )
    return (
        f"{source} is the base URL, for Grafana Cloud "
        f"https://otlp-gateway-<zone>.grafana.net/otlp (this package appends /v1/{signal})"
    )


_COUNTED_STATUSES = frozenset({400, 401, 403, 404, 408, 413, 429})


def classify(outcome: Outcome | None, *, accepted: bool) -> tuple[str, str]:
    """What one export came to, as the bounded ``outcome`` and ``reason`` labels.

    Args:
        outcome: How its last request ended (``None``: no request was sent).
        accepted: Whether the endpoint accepted the metrics.

    Returns:
        ``(outcome, reason)``, from ``instruments.EXPORT_OUTCOMES`` and ``EXPORT_REASONS``:
        ``("ok", "none")``, ``("rejected", "401")``, ``("unreachable", "refused")``,
        ``("timeout", "timeout")``, ...
    """
    if accepted:
        return "ok", "none"
    if outcome is None:
        return "error", "other"
    status = outcome.status
    if status is not None:
        if status in _COUNTED_STATUSES:
            return "rejected", str(status)
        return "rejected", f"{status // 100}xx" if 300 <= status < 600 else "other"
    error, text = outcome.error, str(outcome.error)
    if isinstance(error, requests.exceptions.Timeout):
        return "timeout", "timeout"
    if isinstance(error, requests.exceptions.SSLError):
        return "unreachable", "tls"
    if "Name or service not known" in text or "getaddrinfo" in text or "resolve" in text:
        return "unreachable", "dns"
    if "refused" in text:
        return "unreachable", "refused"
    return "unreachable", "network"


def _connection_problem(error: BaseException | None, timeout_s: float | None = None) -> str:
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS failed (certificate not trusted? set OTEL_EXPORTER_OTLP_CERTIFICATE)"
    if isinstance(error, requests.exceptions.Timeout):
        if timeout_s is not None:
            return (
                f"no answer within {timeout_s:g} s (host unreachable, traffic dropped by a "
                "firewall, or a server that does not respond)"
            )
        return "no answer within the timeout (OTEL_EXPORTER_OTLP_TIMEOUT, default 10 s)"
    if "Name or service not known" in text or "getaddrinfo" in text or "resolve" in text:
        return "the host name does not resolve (DNS): check the endpoint's spelling"
    if "refused" in text:
        return "the connection was refused: nothing listens at that host and port"
    if "CA certificate bundle" in text:
        return (
            "the CA bundle to verify it with is not there: check the path in "
            f"{OTEL_EXPORTER_OTLP_CERTIFICATE}, or in REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE"
        )
    if not isinstance(error, requests.RequestException):
        return f"the request could not be sent ({type(error).__name__})"
    return f"network error ({type(error).__name__})"


class FailureLog:
    """Logs export failures once per change of state, and recovery once.

    ``last`` is how the last export's last request ended, for counting it.

    Parameters:
        endpoint: Where the signal goes.
        session: The session its client sends with.
        signal: ``metrics``, ``logs`` or ``traces``.
    """

    def __init__(self, endpoint: str, session: OutcomeSession, *, signal: str = "metrics"):
        self._endpoint = endpoint
        self._session = session
        self._signal = signal
        self._failing: str | None = None
        self._stalled = False  # set from a call's thread, cleared by the exporting one
        self._accepted = False
        # Set and read only by the thread that exports this signal (the flush thread for
        # logs, under _KeepingExporter's lock; the span batcher's thread for traces).
        self.unserved = False
        """The endpoint said it takes no such signal before it ever took one: the signal is
        off for the process (said once); its exporter sends nothing more."""

    @property
    def last(self) -> Outcome | None:
        """How the last request of the last export ended (``None``: none was sent)."""
        return self._session.last

    @property
    def failing(self) -> bool:
        """Whether the endpoint is known to fail, until an export ends otherwise.

        Known: the last export failed, or the one in flight outlived a call's wait for it
        (``stalled``). A call that ends meanwhile does not wait for it: what it would wait for has just
        been seen to fail, and its values go with the first export the endpoint accepts.
        """
        return self._stalled or self._failing is not None

    def stalled(self) -> None:
        """A call's wait for the export in flight ran out: known to fail until it ends."""
        self._stalled = True

    def __enter__(self) -> "FailureLog":
        _exporting.active = True
        self._session.last = None  # an export that sends nothing must not read the last one's
        return self

    def __exit__(self, *exc) -> None:
        _exporting.active = False

    def report(self, success: bool) -> bool:
        """Log the result of one export if it differs from the previous one.

        Returns:
            Whether the endpoint really accepted the metrics: the exporter counts a
            redirect (3xx), which it does not follow, as a success.
        """
        last = self._session.last
        self._stalled = False  # the export in flight has ended
        if success and last is not None and last.status is not None and 300 <= last.status < 400:
            success = False
        if self._session.abandoned:
            return success
        if success:
            if self._failing is not None:
                logger.info(
                    f"pipecat-grafana: {self._signal} export to {self._endpoint} works again"
                )
            self._failing = None
            self._accepted = True
            return True
        if last is not None and not self._accepted and serves_no(last, self._signal):
            # Not a failure to fix: this backend has no such pipeline. Once it took the
            # signal, a 400 is a refused request again and said as a failure.
            self.unserved = True
            logger.warning(
                "pipecat-grafana: "
                + explain_not_served(self._endpoint, last.status, self._signal)
                + " (logged once)."
            )
            return False
        problem = explain(
            last,
            self._endpoint,
            source=self._session.endpoint_source,
            signal=self._signal,
            auth_source=self._session.auth_source,
        )
        if problem != self._failing:
            kept = {
                "metrics": "totals are cumulative, so nothing is lost if this recovers",
                "logs": "call summaries are kept and sent again (up to "
                f"{PENDING_RETENTION_S / 60:g} minutes, {MAX_PENDING:,} calls)",
                "traces": "spans are dropped while it fails",
            }[self._signal]
            logger.error(
                f"pipecat-grafana: {self._signal} export failing: {problem}. The bot is not "
                f"affected; {kept}. This is logged again only if the problem changes."
            )
        self._failing = problem
        return False


class _QuietWhileExporting(logging.Filter):
    """Drops the OTel exporter's per-attempt lines for this package's exports."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_exporting, "active", False)


for _name in _OTEL_LOGGERS:
    logging.getLogger(_name).addFilter(_QuietWhileExporting())


def refuses_native_histograms(outcome: Outcome | None) -> bool:
    """Whether the endpoint refused a request because it holds exponential histograms."""
    if outcome is None or outcome.status is None or not 400 <= outcome.status < 500:
        return False
    detail = outcome.detail.lower()
    return "native histogram" in detail or "exponential" in detail
