"""The Prometheus scrape endpoint: ``/metrics`` served from the aggregates the export reads.

Voice teams that run their own Prometheus scrape their bots rather than receive OTLP. One
HTTP server per process serves the series of every export pipeline that asks for it
(``ExportConfig.pull``), built at each scrape from the in-memory aggregates the OTLP export
reads (``aggregation``): recording is the same with pull on or off, and nothing of a scrape
runs on the event loop. ``prometheus_client`` writes the exposition formats (text, and
OpenMetrics with exemplars when asked for it) from a collector of our own, registered in a
registry of its own, never the global one.

Names and labels are what Grafana Cloud (Mimir) makes of the OTLP export
(``InstrumentSpec.prometheus_name``, ``le`` as Mimir writes it), so the shipped dashboard and
alert rules read scraped data unchanged. The resource attributes become ``target_info``, as
the OpenTelemetry Prometheus exporters do, and every series also carries ``service_name``
and ``service_instance_id``: the first tells services apart whatever the scrape job is
called (the dashboard's *Service label* ``service_name``), the second makes a restarted
process write new series instead of resetting old ones, which the dashboard's totals
(``max_over_time - min_over_time``) need, as the OTLP export does.

Two things would lose short calls between scrapes:

- Prometheus counts nothing of a series' first sample. Measured with Prometheus 2.42: a
  counter that first appears at its final value (a 3-second call between two scrapes) adds
  0 to ``max_over_time - min_over_time`` and nothing to ``increase()``, and OpenMetrics'
  ``_created`` does not help (2.x stores it as one more series). So every new cumulative
  series is served at zero for one scrape interval, then at its value, as the OTLP export
  sends a zero point first.
- A call's series go when the call goes, so an ended call is served until a scrape that
  began after its end, and after its zeros, has served its final values and one more scrape
  interval has passed; then it is let go, and its series end (Prometheus marks them stale).
  Without scrapes an ended call is kept ``config.PENDING_RETENTION_S`` at most, and
  ``config.MAX_PENDING`` calls at most (``export.pending``, where every reader of a call
  keeps its cursor).

"One scrape interval" is the longest interval at which one reader scrapes (readers are told
apart by address and user agent; 90 % of it, for jitter), 0 until one has scraped twice. So
every reader scraping at least that often (an HA pair of Prometheus servers, a person
running curl in a loop) sees a new series' zero and an ended call's final values, and a
one-off curl takes neither from Prometheus.
"""

import contextlib
import errno
import math
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from decimal import Decimal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from loguru import logger
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME
from prometheus_client import CollectorRegistry, Metric, make_wsgi_app
from prometheus_client.samples import Exemplar

from pipecat_grafana import instruments, runtime
from pipecat_grafana.aggregation import Attributes, CallMeters, HistogramSeries
from pipecat_grafana.config import DEFAULT_FLUSH_TIMEOUT_S, PENDING_RETENTION_S
from pipecat_grafana.export import SCRAPE, ExportPipeline
from pipecat_grafana.instruments import InstrumentSpec
from pipecat_grafana.notices import error_once, warn_once
from pipecat_grafana.scrape_config import ScrapeConfig

__all__ = [
    "SERVICE_INSTANCE_LABEL",
    "SERVICE_NAME_LABEL",
    "TARGET_INFO",
    "AggregatesCollector",
    "ScrapeEndpoint",
    "endpoint",
    "running",
    "stop",
]

SERVICE_NAME_LABEL = "service_name"
"""The label of ``service.name`` on every served series."""
SERVICE_INSTANCE_LABEL = "service_instance_id"
"""The label of ``service.instance.id`` (one per process) on every served series."""
TARGET_INFO = "target_info"
"""The series holding every resource attribute, one per service of the process."""

# A reader's interval less this share is how long a new series stays at zero: Prometheus
# scrapes a few milliseconds early or late, and a zero served twice only delays a value.
_INTERVAL_SHARE = 0.9
_MAX_READERS = 16
# OpenMetrics (and Prometheus's parser) refuse an exemplar whose labels are longer.
_MAX_EXEMPLAR_RUNES = 128

Labels = tuple[tuple[str, str], ...]


class _Readers:
    """Who scrapes the endpoint, and how often.

    A reader is whoever asks (address and user agent): anyone who can reach the endpoint
    can claim to be a new one. So the table is bounded, and when it is full the reader
    that goes is the one that has scraped least (a one-off client, a rotating user
    agent), never one scraping at intervals: an established Prometheus keeps its place
    however many strangers come and go.
    """

    def __init__(self) -> None:
        # who -> (last scrape, the last gaps between scrapes)
        self._seen: dict[tuple[str, str], tuple[float, tuple[float, ...]]] = {}

    def scraped(self, who: tuple[str, str], now: float) -> None:
        last, gaps = self._seen.pop(who, (None, ()))
        if last is not None:
            gaps = (*gaps[-2:], now - last)
        if len(self._seen) >= _MAX_READERS:
            del self._seen[min(self._seen, key=lambda w: (len(self._seen[w][1]), self._seen[w][0]))]
        self._seen[who] = (now, gaps)

    def interval(self, now: float) -> float:
        """The longest interval of a reader still scraping, 0 until one has scraped twice."""
        longest = 0.0
        for last, gaps in self._seen.values():
            # The shortest of the last gaps: a missed scrape doubles one.
            if gaps and now - last <= 3 * min(gaps) + 1:
                longest = max(longest, min(gaps))
        return min(longest, PENDING_RETENTION_S)

    def active(self, now: float) -> bool:
        """Whether a reader is scraping at intervals now."""
        return self.interval(now) > 0


class _Families:
    """The samples of one scrape, one family per metric, identical series summed.

    Two pipelines of one process may share a resource (the same service with two export
    configurations): their series are then one process's, and add up.
    """

    def __init__(self) -> None:
        self.numbers: dict[InstrumentSpec, dict[Labels, float]] = {}
        self.histograms: dict[InstrumentSpec, dict[Labels, HistogramSeries]] = {}
        self.info: dict[Labels, None] = {}

    def add(self, spec: InstrumentSpec, labels: Labels, value: float) -> None:
        series = self.numbers.setdefault(spec, {})
        series[labels] = series.get(labels, 0) + value

    def add_histogram(self, spec: InstrumentSpec, labels: Labels, value: HistogramSeries) -> None:
        series = self.histograms.setdefault(spec, {})
        known = series.get(labels)
        if known is None:
            series[labels] = value
            return
        known.bucket_counts = [
            a + b for a, b in zip(known.bucket_counts, value.bucket_counts, strict=True)
        ]
        known.count += value.count
        known.sum += value.sum

    def metrics(self) -> Iterator[Metric]:
        for spec, numbers in self.numbers.items():
            name = spec.prometheus_name
            if spec.kind is instruments.Kind.COUNTER:
                metric = Metric(name.removesuffix("_total"), spec.description, "counter")
            else:
                metric = Metric(name, spec.description, "gauge")
            for labels, value in numbers.items():
                metric.add_sample(name, dict(labels), value)
            yield metric
        for spec, histograms in self.histograms.items():
            yield _histogram(spec, histograms)
        if self.info:
            metric = Metric("target", "Resource attributes of the process's services.", "info")
            for labels in self.info:
                metric.add_sample(TARGET_INFO, dict(labels), 1)
            yield metric


def _histogram(spec: InstrumentSpec, series: dict[Labels, HistogramSeries]) -> Metric:
    name = spec.prometheus_name
    bounds = [*(spec.buckets or ()), math.inf]
    metric = Metric(name, spec.description, "histogram")
    for labels, value in series.items():
        exemplars = value.exemplars or [None] * len(bounds)
        cumulative = 0
        for bound, count, exemplar in zip(bounds, value.bucket_counts, exemplars, strict=True):
            cumulative += count
            metric.add_sample(
                f"{name}_bucket",
                {**dict(labels), "le": _le(bound)},
                cumulative,
                exemplar=_exemplar(exemplar),
            )
        metric.add_sample(f"{name}_count", dict(labels), value.count)
        metric.add_sample(f"{name}_sum", dict(labels), value.sum)
    return metric


def _le(bound: float) -> str:
    """A bucket bound as Mimir writes it from OTLP (Go's ``FormatFloat(b, 'f', -1)``): ``10``."""
    if math.isinf(bound):
        return "+Inf"
    text = format(Decimal(repr(bound)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _exemplar(kept: tuple | None) -> Exemplar | None:
    """A bucket's exemplar as OpenMetrics writes it, with its call and trace, if it fits."""
    if kept is None:
        return None
    value, at_ns, context = kept
    labels = {instruments.CALL_ID: context.call_id}
    if context.trace_id:
        labels["trace_id"] = format(context.trace_id, "032x")
        labels["span_id"] = format(context.span_id, "016x")
    if sum(len(k) + len(v) for k, v in labels.items()) > _MAX_EXEMPLAR_RUNES:
        return None  # a very long call ID: the scrape would be refused whole
    return Exemplar(labels, value, at_ns / 1e9)


def _label_name(key: str) -> str:
    """A resource attribute's key as a label name, as the OTLP translation makes it."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in key)
    return f"key_{name}" if name[:1].isdigit() else name


class AggregatesCollector:
    """Builds each scrape's answer from the registered pipelines' aggregates.

    A ``prometheus_client`` collector: ``collect()`` runs on the server's thread for each
    request, under one lock (two scrapes at once are served one after the other).
    """

    def __init__(self, *, time_source: Callable[[], float] = time.monotonic):
        """Create the collector.

        Args:
            time_source: Monotonic clock in seconds (tests pass a controlled one).
        """
        self._clock = time_source
        self._lock = threading.Lock()
        self._scraped = threading.Condition(self._lock)
        self._pipelines: weakref.WeakSet[ExportPipeline] = weakref.WeakSet()
        self._fleet: weakref.WeakKeyDictionary[
            ExportPipeline, dict[tuple[str, Attributes], float]
        ] = weakref.WeakKeyDictionary()
        self._readers = _Readers()
        self._request = threading.local()
        self.served_zeros = False  # the last scrape served a new series at zero; under _lock

    def add(self, pipeline: ExportPipeline) -> None:
        """Serve ``pipeline``'s series from now on (for as long as it exists)."""
        with self._lock:
            self._pipelines.add(pipeline)

    @contextlib.contextmanager
    def reading(self, who: tuple[str, str]) -> Iterator[None]:
        """Attribute the scrapes collected in this block to the reader ``who``."""
        self._request.who = who
        try:
            yield
        finally:
            self._request.who = None

    def now(self) -> float:
        """The collector's clock (monotonic seconds)."""
        return self._clock()

    def seen(self, who: tuple[str, str]) -> None:
        """Count a scrape answered from the cache: its reader still scraped."""
        with self._lock:
            self._readers.scraped(who, self._clock())

    def describe(self) -> list[Metric]:
        """Nothing: so that registering does not collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every series of every registered pipeline, as this scrape should see it."""
        families = _Families()
        with self._lock:
            now = self._clock()
            who = getattr(self._request, "who", None)
            self._readers.scraped(who or ("", ""), now)
            hold = self._readers.interval(now) * _INTERVAL_SHARE
            self.served_zeros = False
            for pipeline in list(self._pipelines):
                self.served_zeros |= self._serve(pipeline, families, now, hold)
            self._scraped.notify_all()
        yield from families.metrics()

    def wait_scraped(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` until scrapes have read every ended call being served.

        Returns at once when nobody scrapes at intervals: then nobody would read them.

        Returns:
            Whether every ended call was read.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._unread():
                left = deadline - time.monotonic()
                if left <= 0 or not self._readers.active(self._clock()):
                    return False
                self._scraped.wait(left)
        return True

    def flush_timeout_s(self) -> float:
        """The longest final-export wait of the pipelines served."""
        with self._lock:
            timeouts = [p.config.flush_timeout_s for p in self._pipelines]
        return max(timeouts, default=DEFAULT_FLUSH_TIMEOUT_S)

    def _unread(self) -> bool:
        return any(
            pipeline.calls.ended(call)
            for pipeline in self._pipelines
            for call in pipeline.calls.unread(SCRAPE)
        )

    def expire(self) -> None:
        """Run retention for the pipelines no export thread runs it for (pull alone)."""
        with self._lock:
            pipelines = [p for p in self._pipelines if not p.pushed]
        for pipeline in pipelines:
            pipeline.expire()

    def _serve(
        self, pipeline: ExportPipeline, families: _Families, now: float, hold: float
    ) -> bool:
        """Add the pipeline's series; whether any new one was served at zero."""
        resource = pipeline.resource.attributes
        base = {
            SERVICE_NAME_LABEL: str(resource.get(SERVICE_NAME, "")),
            SERVICE_INSTANCE_LABEL: str(resource.get(SERVICE_INSTANCE_ID, "")),
        }
        info = {_label_name(key): str(value) for key, value in resource.items()}
        families.info[tuple(sorted(info.items()))] = None
        fleet = self._fleet.setdefault(pipeline, {})
        zeros = self._add(families, pipeline.fleet, base, fleet, now, hold)
        for call in pipeline.calls.unread(SCRAPE):
            ended = pipeline.calls.ended(call)  # read before its values: then they are final
            cursor = call.scrape
            if ended and cursor.served_final_at is not None and now > cursor.served_final_at + hold:
                pipeline.calls.read(call, SCRAPE)  # every reader had a scrape interval to read it
                continue
            call_zeros = self._add(
                families, call.meters, {**base, **call.labels}, cursor.first_served, now, hold
            )
            if ended and not call_zeros and cursor.served_final_at is None:
                cursor.served_final_at = now
            zeros += call_zeros
        return zeros > 0

    @staticmethod
    def _add(
        families: _Families,
        meters: CallMeters,
        labels: dict[str, str],
        first_served: dict[tuple[str, Attributes], float],
        now: float,
        hold: float,
    ) -> int:
        """Add the series of ``meters`` with ``labels``; return how many were served at zero."""

        def new(spec: InstrumentSpec, key: Attributes) -> bool:
            first = first_served.setdefault((spec.name, key), now)
            return first == now or now < first + hold

        zeros = 0
        for spec, series in meters.totals.snapshot():
            for key, total in series:
                if spec.kind is instruments.Kind.COUNTER and new(spec, key):
                    zeros += 1
                    total = 0
                families.add(spec, _labels(key, labels), total)
        for spec, histogram in meters.series():
            for key, state in histogram.snapshot():
                if new(spec, key):
                    zeros += 1
                    state = HistogramSeries([0] * len(state.bucket_counts), 0, 0.0, 0.0, 0.0)
                families.add_histogram(spec, _labels(key, labels), state)
        return zeros


def _labels(key: tuple, labels: dict[str, str]) -> Labels:
    return tuple(sorted({**dict(key), **labels}.items()))


MAX_CONNECTIONS = 8
"""Connections served at once, one thread each: a scrape or two is what Prometheus makes."""
READ_TIMEOUT_S = 10.0
"""How long a connection may take to send its request: an idle one is closed then."""
MIN_RENDER_GAP_S = 0.1
"""A page is rendered at most this often; a scrape sooner gets the last page rendered (at most
this old). Prometheus scrapes every few seconds; a client asking faster gets no more renders
than ten a second, and so costs the bot no more CPU."""


class _Handler(WSGIRequestHandler):
    """One request per connection, read within ``READ_TIMEOUT_S``, never logged."""

    timeout = READ_TIMEOUT_S
    server: "_BoundedServer"

    def parse_request(self) -> bool:  # noqa: D102 - see http.server's
        self.server.serving(self.request)  # a request arrived: no longer idle
        return super().parse_request()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass  # one line per scrape would drown the bot's log


class _BoundedServer(WSGIServer):
    """A thread per connection, ``MAX_CONNECTIONS`` at most.

    With every slot taken, a new connection takes the place of the oldest one that has not
    sent its request yet (an idle client gives it up), else it is closed at once: idle
    clients can hold no more than ``MAX_CONNECTIONS`` threads and descriptors, and never
    keep a scrape out.
    """

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self._lock = threading.Lock()
        self._idle: dict[socket.socket, float] = {}  # under _lock: connections not yet asking
        self._busy: set[socket.socket] = set()  # under _lock
        super().__init__(*args, **kwargs)

    def serving(self, connection: socket.socket) -> None:
        """``connection`` has sent its request: it is no longer one to give up."""
        with self._lock:
            if self._idle.pop(connection, None) is not None:
                self._busy.add(connection)

    def process_request(self, request, client_address) -> None:  # noqa: D102
        with self._lock:
            if len(self._idle) + len(self._busy) >= MAX_CONNECTIONS:
                if not self._idle:
                    self.shutdown_request(request)  # every slot serves a scrape
                    return
                oldest = min(self._idle, key=self._idle.__getitem__)
                del self._idle[oldest]
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)  # its thread ends at once
            self._idle[request] = time.monotonic()
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address),
            name="pipecat-grafana-scrape-request",
            daemon=True,
        )
        thread.start()

    def _serve_one(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a client that went away; nothing of the bot's
            pass
        finally:
            with self._lock:
                self._idle.pop(request, None)
                self._busy.discard(request)
            self.shutdown_request(request)


class _PageCache:
    """Renders one page at a time, and at most once per ``MIN_RENDER_GAP_S`` per kind.

    Rendering every series costs the process's CPU (and its event loop the GIL). Scrapes
    arriving while a page renders wait for that page; a scrape within
    ``MIN_RENDER_GAP_S`` of the last render gets it again (still counted as its reader's
    scrape), unless it held a new series at zero, so clients scraping in a loop cost ten
    renders a second at most.
    """

    def __init__(self, app, collector: "AggregatesCollector"):
        self._app = app
        self._collector = collector
        self._lock = threading.Lock()  # one render at a time; guards _pages
        self._pages: dict[tuple, tuple[float, str, list, bytes]] = {}

    def __call__(self, environ, start_response):
        who = (environ.get("REMOTE_ADDR", ""), environ.get("HTTP_USER_AGENT", ""))
        kind = (
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_ACCEPT", ""),
            "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""),
        )
        with self._lock:
            now = time.monotonic()
            cached = self._pages.get(kind)
            if cached is not None and now - cached[0] < MIN_RENDER_GAP_S:
                self._collector.seen(who)
                _, status, headers, body = cached
            else:
                status, headers, body = self._render(environ, who)
                # A page holding a new series at zero is not served again: the next scrape
                # must see its value.
                if status.startswith("200") and not self._collector.served_zeros:
                    self._pages[kind] = (now, status, headers, body)
        start_response(status, headers)
        return [body]

    def _render(self, environ, who) -> tuple[str, list, bytes]:
        answer: dict[str, object] = {}

        def keep(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)

        with self._collector.reading(who):
            body = b"".join(self._app(environ, keep))
        headers = answer["headers"]
        assert isinstance(headers, list)
        return str(answer["status"]), headers, body


class ScrapeEndpoint:
    """The process's HTTP server for Prometheus, serving ``/metrics`` on a thread of its own.

    Bounded whoever connects: ``MAX_CONNECTIONS`` served at once (an idle one gives its
    place up), ``READ_TIMEOUT_S`` to send a request, a page rendered at most once per
    ``MIN_RENDER_GAP_S`` whatever the number of scrapes.

    Example::

        endpoint = ScrapeEndpoint(ScrapeConfig("127.0.0.1", 9464))
        endpoint.add(pipeline)   # its series are served from now on
        ...
        endpoint.close(timeout_s=5)
    """

    def __init__(self, config: ScrapeConfig, *, collector: AggregatesCollector | None = None):
        """Listen on ``config``'s address and port, and serve.

        Raises:
            OSError: It cannot listen there (``socket.gaierror`` for an unknown host).
        """
        self.config = config
        self.collector = collector or AggregatesCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        serve = _PageCache(make_wsgi_app(registry), self.collector)
        family = socket.getaddrinfo(config.addr, config.port, type=socket.SOCK_STREAM)[0][0]
        served = self.collector

        class Server(_BoundedServer):
            address_family = family

            def service_actions(self) -> None:
                # Between requests, twice a second: retention runs here for a pipeline that
                # only this endpoint reads, whether anyone scrapes or not.
                served.expire()

        self._server = make_server(config.addr, config.port, serve, Server, handler_class=_Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pipecat-grafana-scrape", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._server.server_port

    def add(self, pipeline: ExportPipeline) -> None:
        """Serve ``pipeline``'s series from now on."""
        self.collector.add(pipeline)

    def close(self, timeout_s: float | None = None) -> None:
        """Wait for a scrape to read the calls that ended, then stop.

        Args:
            timeout_s: The longest wait; by default the longest ``flush_timeout_s`` of the
                pipelines served, as a final export waits.
        """
        if timeout_s is None:
            timeout_s = self.collector.flush_timeout_s()
        if timeout_s > 0 and not self.collector.wait_scraped(timeout_s):
            logger.debug("pipecat-grafana: stopped the Prometheus endpoint with calls unread")
        self._server.shutdown()
        self._server.server_close()

    def forget_after_fork(self) -> None:
        """In a forked child: release the inherited socket; the parent keeps serving."""
        self._server.socket.close()


class _Server:
    """The process's one endpoint (a runtime part)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.endpoint: ScrapeEndpoint | None = None  # under lock

    def after_fork_in_child(self) -> None:
        # The server's thread does not exist here: no lock, no shutdown().
        self.lock = threading.Lock()
        running, self.endpoint = self.endpoint, None
        if running is not None:
            running.forget_after_fork()


_SERVER = runtime.own(_Server())


def running() -> ScrapeEndpoint | None:
    """The process's endpoint, if one runs."""
    return _SERVER.endpoint


def endpoint(config: ScrapeConfig) -> ScrapeEndpoint | None:
    """The process's endpoint, started on first use.

    Returns:
        The endpoint, or ``None`` when it cannot listen: the reason is logged once, naming
        the variable (or argument) to change, and the bot goes on without it.

    Raises:
        ValueError: An argument asks for an address other than the one already served
            (one endpoint per process).
    """
    with _SERVER.lock:
        running = _SERVER.endpoint
        if running is None:
            try:
                running = _SERVER.endpoint = ScrapeEndpoint(config)
            except OSError as e:
                error_once(f"scrape:{config}:{e.errno}", _why(config, e))
                return None
            logger.info(
                f"pipecat-grafana: serving Prometheus metrics at {config.url} (scrape it every "
                "15 s or so; an ended call's final values wait there for a scrape)"
            )
            return running
    served = running.config
    if (served.addr, served.port) != (config.addr, config.port):
        message = (
            f"the Prometheus endpoint of this process already listens on {served.url}, not "
            f"{config.url}: one endpoint serves every exporter of a process"
        )
        if "=" in config.port_source or "=" in config.addr_source:
            raise ValueError(message + "; give every GrafanaMetricsExporter the same address")
        warn_once(f"scrape-other:{config}", f"{message}; served there.")
    return running


def _why(config: ScrapeConfig, error: OSError) -> str:
    """Why the endpoint cannot listen, naming what to change."""
    off = "the Prometheus endpoint is off (the bot goes on, and pushes as configured)"
    port, addr = f"{config.port_source}={config.port}", f"{config.addr_source}={config.addr!r}"
    if isinstance(error, socket.gaierror):
        return f"{off}: {addr} is not a host name that resolves ({error.strerror})."
    if error.errno == errno.EADDRINUSE:
        return (
            f"{off}: {port} is in use on {config.addr}: another process listens there (a "
            "second bot process, or this one's parent if it was forked). Give each bot "
            f"process its own port, and Prometheus each as a target."
        )
    if error.errno == errno.EACCES:
        return (
            f"{off}: {port} is a privileged port (below 1024), which only root may listen "
            f"on. Use a port from 1024 up, for example 9464."
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"{off}: {addr} is not an address of this machine: use 127.0.0.1 (this machine "
            "only), 0.0.0.0 (every network) or one of its own addresses."
        )
    return f"{off}: cannot listen on {config.addr} port {config.port} ({port}): {error}."


def stop(timeout_s: float | None = None) -> None:
    """Stop the process's endpoint, first waiting at most ``timeout_s`` for ended calls to be read.

    ``pipecat_grafana.shutdown()`` calls it, at exit too.
    """
    with _SERVER.lock:
        running, _SERVER.endpoint = _SERVER.endpoint, None
    if running is not None:
        running.close(timeout_s)
