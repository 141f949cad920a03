"""The variables the package reads: their names, defaults and limits, and how a value is read.

Each variable is a named, documented constant, read by the modules of its concern
(``config`` for the push, ``endpoints`` for URLs and credentials, ``scrape_config`` for the
Prometheus endpoint). A value is read by one rule: a malformed one raises ``ConfigError``
naming the variable and the fix; the caller decides what that turns off.
"""

from collections.abc import Mapping

GRAFANA_CLOUD_OTLP_ENDPOINT = "GRAFANA_CLOUD_OTLP_ENDPOINT"
GRAFANA_CLOUD_INSTANCE_ID = "GRAFANA_CLOUD_INSTANCE_ID"
GRAFANA_CLOUD_API_TOKEN = "GRAFANA_CLOUD_API_TOKEN"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_METRICS_HEADERS = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
OTEL_EXPORTER_OTLP_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
"""Seconds (not milliseconds, in the Python exporter) for one export, retries included."""
OTEL_EXPORTER_OTLP_METRICS_TIMEOUT = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"
"""The same, for metrics only; wins over ``OTEL_EXPORTER_OTLP_TIMEOUT``."""
OTEL_EXPORTER_OTLP_CERTIFICATE = "OTEL_EXPORTER_OTLP_CERTIFICATE"
"""A CA bundle (PEM file, or a directory of them) to verify the endpoint with."""
OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"
"""The same, for metrics only; wins over ``OTEL_EXPORTER_OTLP_CERTIFICATE``."""
OTEL_EXPORTER_OTLP_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
"""``gzip``, ``deflate`` or ``none`` (default)."""
OTEL_EXPORTER_OTLP_METRICS_COMPRESSION = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"
"""The same, for metrics only; wins over ``OTEL_EXPORTER_OTLP_COMPRESSION``."""
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""Only ``http/protobuf``, the one protocol this package speaks, may be set."""
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
"""The same, for metrics only; wins over ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
"""More resource attributes, as ``key=value`` pairs separated by commas."""
CALL_ID_LABEL = "PIPECAT_GRAFANA_CALL_ID_LABEL"
"""``true`` (default) tags per-call series with ``call_id``; ``false`` keeps fleet-wide
series only."""
FLUSH_TIMEOUT = "PIPECAT_GRAFANA_FLUSH_TIMEOUT"
"""Seconds a call's end and the process's exit wait for the final export (default 5)."""
ALLOW_INSECURE = "PIPECAT_GRAFANA_ALLOW_INSECURE"
"""``true`` allows credentials over plain ``http://`` to a host that is not loopback."""
CALL_HISTOGRAMS = "PIPECAT_GRAFANA_CALL_HISTOGRAMS"
"""``true`` gives each call latency histograms of its own (with ``call_id``); by default
latency histograms are process-wide and a call's latency is in its summary record."""
HEARTBEAT = "PIPECAT_GRAFANA_HEARTBEAT"
"""Seconds after which a series that has not changed is sent again (default: six export
intervals, 60 s at the default interval)."""
HISTOGRAM_INTERVAL = "PIPECAT_GRAFANA_HISTOGRAM_INTERVAL"
"""Seconds between two sends of a changed latency histogram (default: six export
intervals, 60 s at the default interval; a call's end sends at once)."""
LOGS = "PIPECAT_GRAFANA_LOGS"
"""``true`` (default, when export is on) sends each call's summary as an OTLP log record."""
TRACES = "PIPECAT_GRAFANA_TRACES"
"""``true`` turns on Pipecat's tracing and sends its spans over OTLP (default ``false``)."""
TRANSCRIPTS = "PIPECAT_GRAFANA_TRANSCRIPTS"
"""``true`` puts what the caller said and what the bot spoke into each turn's log record
(``user_text``, ``bot_text``), through ``redact=``; default ``false``: no word of the
conversation leaves the process."""
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
MAX_LABEL_VALUES = "PIPECAT_GRAFANA_MAX_LABEL_VALUES"
"""Distinct values the ``model`` and ``processor`` labels each take in a process (default
100); later ones are exported as ``other``."""
HISTOGRAMS = "PIPECAT_GRAFANA_HISTOGRAMS"
"""``native`` (OTLP exponential histograms, which Grafana Cloud stores as native
histograms: one series each) or ``classic`` (explicit buckets: a series per bucket);
default ``native`` when metrics go to Grafana Cloud, else ``classic``."""
NATIVE = "native"
CLASSIC = "classic"
PROMETHEUS_PORT = "PIPECAT_GRAFANA_PROMETHEUS_PORT"
"""The TCP port of the process's Prometheus scrape endpoint (``/metrics``); unset, none runs."""
PROMETHEUS_ADDR = "PIPECAT_GRAFANA_PROMETHEUS_ADDR"
"""The address that endpoint listens on (default ``127.0.0.1``, this machine only)."""

GRAFANA_CLOUD_AUTH = f"{GRAFANA_CLOUD_INSTANCE_ID} and {GRAFANA_CLOUD_API_TOKEN}"
"""Where the Authorization header comes from with the Grafana Cloud shortcut."""

DEFAULT_EXPORT_INTERVAL_S = 10.0
DEFAULT_FLUSH_TIMEOUT_S = 5.0
DEFAULT_EXPORT_TIMEOUT_S = 10.0
"""The OTLP exporter's own default timeout: one export's deadline, retries included."""
# Unchanged series and changed histograms are sent every this many export intervals.
DEFAULT_SPARSE_EXPORTS = 6
# Below Prometheus' 5-minute lookback, with room for a missed export.
MAX_HEARTBEAT_S = 240.0
DEFAULT_MAX_LABEL_VALUES = 100
DEFAULT_PROMETHEUS_ADDR = "127.0.0.1"
"""Loopback: the endpoint shows every call's figures, and serving it costs CPU, to whoever
can reach it, so it is opened to a network only on request."""
MIN_EXPORT_INTERVAL_S = 0.1
MAX_EXPORT_INTERVAL_S = 3600.0
MAX_TIMEOUT_S = 300.0
"""The longest flush timeout and OTLP timeout: a wait longer than this is a mistake."""
PENDING_RETENTION_S = 300.0
"""How long an ended call's final values, or a summary record, wait for a reader that has
not read them (an endpoint down, no scrape) before they are dropped with a warning."""
MAX_PENDING = 1000
"""How many ended calls, or summary records, wait so at most; the oldest go first."""

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration value is malformed; the message names it and the fix."""


def first_set(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set to something other than blanks, ``None`` if none is."""
    return next((name for name in names if env.get(name, "").strip()), None)


def number(
    env: Mapping[str, str],
    name: str,
    *,
    unit: str,
    low: float,
    high: float,
    example: str,
    note: str = "",
) -> float | None:
    """The variable's value in its own unit, ``None`` when not set (see ``_within``)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not within(value, low, high):
        raise ConfigError(
            f"{name}={raw!r} is not a number of {unit} {span(low, high)}{note}: set it to, "
            f"for example, {example}."
        )
    return value


def within(value: float, low: float, high: float) -> bool:
    """Whether ``value`` is in range: above ``low`` (from it, if not 0) up to ``high``."""
    # A low of 0 is exclusive (no wait at all is not a wait), any other inclusive;
    # NaN fails every comparison.
    return (value >= low if low else value > 0) and value <= high


def span(low: float, high: float) -> str:
    """The range ``within`` accepts, in words."""
    return f"from {low:.10g} to {high:.10g}" if low else f"above 0 and at most {high:.10g}"


def flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """The boolean variable ``name``, ``default`` when not set.

    Raises:
        ConfigError: It is set to something that is not a boolean.
    """
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: set it to true or false.")
