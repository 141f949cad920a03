"""Where metrics go and how: the OTLP endpoint, credentials and export settings.

The OTel exporter already reads the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, timeout, compression, certificate); this module does not
re-parse them for use. It adds what the exporter lacks:

- the Grafana Cloud shortcut (``GRAFANA_CLOUD_OTLP_ENDPOINT``,
  ``GRAFANA_CLOUD_INSTANCE_ID``, ``GRAFANA_CLOUD_API_TOKEN``), which builds the
  Basic auth header;
- a 10-second default export interval (the SDK's is 60 s) and an error, not a
  silent fallback, for a malformed ``OTEL_METRIC_EXPORT_INTERVAL``;
- bounds on every number of seconds, so that none can stop export for good (an
  interval of 1e300 ms overflows the SDK's reader thread);
- checks that name the variable and the fix for values the exporter and the SDK
  would ignore with a line that does not name it (a header without ``=``, an
  unknown compression, a resource attribute without ``=``, a protocol other than
  ``http/protobuf``) or that would make every export fail with no word of why
  (a timeout of 0, a CA file that is not there);
- a base URL given with ``/v1/metrics`` already on it is accepted, with a notice,
  rather than sent to ``.../v1/metrics/v1/metrics``;
- a refusal to send credentials in clear text to a remote host.

Secrets never leave this module in a readable form: ``ExportConfig``'s repr and
``describe()`` mask them.
"""

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.util.re import parse_env_headers

if TYPE_CHECKING:
    from pipecat_grafana import scrape_config

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
_METRICS_PATH = "v1/metrics"
_HEADER_ITEM = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=")
_PROTOCOL = "http/protobuf"
# What the installed exporter accepts, "none" last as the message lists them.
_COMPRESSIONS = tuple(sorted((c.value for c in Compression), key=lambda v: v == "none"))
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration value is malformed; the message names it and the fix."""


@dataclass(frozen=True)
class ExportConfig:
    """The resolved export configuration.

    Parameters:
        endpoint: The full OTLP/HTTP metrics URL, or ``None`` when export is off.
        endpoint_source: The variable (or argument) the endpoint came from.
        headers: Headers this package built (the Grafana Cloud shortcut), passed to
            the exporter explicitly; ``None`` lets the exporter read
            ``OTEL_EXPORTER_OTLP_(METRICS_)HEADERS`` itself.
        has_auth: Whether an ``Authorization`` header will be sent.
        auth_source: Where that header comes from: ``GRAFANA_CLOUD_AUTH`` (the instance ID
            and token) or the headers variable that holds it; ``None`` when none is sent.
        export_interval_s: Seconds between periodic exports.
        flush_timeout_s: Bound on the wait for a final export at a call's end and at exit.
        call_id_label: Whether per-call series carry ``call_id``.
        notices: What was accepted but should be fixed, one sentence each; the
            exporter logs each once as a warning and ``check`` prints them.
        logs_endpoint: The full OTLP/HTTP logs URL for call summaries, or ``None``.
        traces_endpoint: The full OTLP/HTTP traces URL for Pipecat's spans, or ``None``.
        call_histograms: Whether each call has latency histograms of its own.
        heartbeat_s: Seconds after which an unchanged series is sent again.
        histogram_interval_s: Seconds between two periodic sends of a changed histogram.
        pull: Whether the process's Prometheus endpoint serves the series: they are then
            aggregated in memory even when nothing is pushed.
        histograms: ``native`` or ``classic``: the form latency histograms are pushed in
            (a scrape always reads the classic form).
        histograms_reason: Why that form, in words, for the banner and ``check``.
    """

    endpoint: str | None
    endpoint_source: str | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    has_auth: bool = False
    auth_source: str | None = None
    export_interval_s: float = DEFAULT_EXPORT_INTERVAL_S
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S
    call_id_label: bool = True
    notices: tuple[str, ...] = ()
    logs_endpoint: str | None = None
    traces_endpoint: str | None = None
    call_histograms: bool = False
    heartbeat_s: float = DEFAULT_SPARSE_EXPORTS * DEFAULT_EXPORT_INTERVAL_S
    histogram_interval_s: float = DEFAULT_SPARSE_EXPORTS * DEFAULT_EXPORT_INTERVAL_S
    pull: bool = False
    histograms: str = CLASSIC
    histograms_reason: str = "the default"

    def __repr__(self) -> str:
        return (
            f"ExportConfig(endpoint={self.endpoint!r}, endpoint_source={self.endpoint_source!r}, "
            f"auth={'<masked>' if self.has_auth else None}, "
            f"export_interval_s={self.export_interval_s}, flush_timeout_s={self.flush_timeout_s}, "
            f"call_id_label={self.call_id_label}, logs_endpoint={self.logs_endpoint!r}, "
            f"traces_endpoint={self.traces_endpoint!r}, call_histograms={self.call_histograms}, "
            f"heartbeat_s={self.heartbeat_s}, histogram_interval_s={self.histogram_interval_s}, "
            f"pull={self.pull}, histograms={self.histograms!r})"
        )

    @property
    def enabled(self) -> bool:
        """Whether metrics are exported at all."""
        return self.endpoint is not None

    @property
    def key(self) -> tuple:
        """What makes two configurations share one export pipeline."""
        headers = tuple(sorted(self.headers.items())) if self.headers else None
        return (
            self.endpoint,
            headers,
            self.export_interval_s,
            self.call_id_label,
            self.logs_endpoint,
            self.traces_endpoint,
            self.call_histograms,
            self.heartbeat_s,
            self.histogram_interval_s,
            self.pull,
            self.histograms,
        )

    def destination(self, scrape: "scrape_config.ScrapeConfig | None" = None) -> str:
        """Where metrics go, in words: pushed (and where), scraped (at which URL), both, neither.

        Args:
            scrape: The Prometheus endpoint serving this configuration's series, if any.
        """
        push = f"pushed over OTLP to {self.endpoint}" if self.enabled else ""
        pull = f"served at {scrape.url} for Prometheus" if scrape is not None else ""
        if push and pull:
            return f"{push}, and {pull}"
        if push:
            return f"{push} (no scrape endpoint)"
        if pull:
            return f"{pull} (nothing pushed)"
        # No cause given: a misconfigured variable turns export off too, and says so itself.
        return "off (nothing pushed, no scrape endpoint; call summaries only)"

    def describe(self, scrape: "scrape_config.ScrapeConfig | None" = None) -> dict[str, str]:
        """The configuration as a person should see it, credentials masked.

        Args:
            scrape: The Prometheus endpoint serving this configuration's series, if any.
        """
        return {
            "metrics": self.destination(scrape),
            "endpoint": self.endpoint or "none (nothing pushed)",
            "scrape endpoint": scrape.url if scrape is not None else "off",
            "endpoint from": self.endpoint_source or "-",
            "authorization": f"set (masked), from {self.auth_source}" if self.has_auth else "none",
            "export interval": f"{self.export_interval_s:g}s",
            "flush timeout": f"{self.flush_timeout_s:g}s",
            "call_id label": "on" if self.call_id_label else "off",
            "call summaries (logs)": self.logs_endpoint or "off",
            "traces": self.traces_endpoint or "off",
            "latency histograms": "per call" if self.call_histograms else "per process",
            "histogram form": f"{self.histograms} ({self.histograms_reason})",
            "resend unchanged": f"every {self.heartbeat_s:g}s",
            "histograms": f"at most every {self.histogram_interval_s:g}s (and at a call's end)",
        }


def resolve(
    env: Mapping[str, str] | None = None,
    *,
    call_id_label: bool | None = None,
    export_interval_s: float | None = None,
    flush_timeout_s: float | None = None,
    logs: bool | None = None,
    traces: bool | None = None,
    histograms: str | None = None,
) -> ExportConfig:
    """Resolve the export configuration from arguments and the environment.

    Arguments win over environment variables. The Grafana Cloud shortcut wins
    over ``OTEL_EXPORTER_OTLP_*`` when ``GRAFANA_CLOUD_OTLP_ENDPOINT`` is set.

    Args:
        env: The environment to read (``os.environ`` by default).
        call_id_label: Tag per-call series with ``call_id`` (overrides the variable).
        export_interval_s: Seconds between exports (overrides the variable).
        flush_timeout_s: Bound on final exports (overrides the variable).
        logs: Send call summaries as log records (overrides ``PIPECAT_GRAFANA_LOGS``).
        traces: Send Pipecat's spans (overrides ``PIPECAT_GRAFANA_TRACES``).
        histograms: ``native`` or ``classic`` (overrides ``PIPECAT_GRAFANA_HISTOGRAMS``).

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: A value is malformed; the message names it and says how to fix it.
        ValueError: An argument is out of range.
    """
    env = os.environ if env is None else env
    for name, value, low, high in (
        ("export_interval_s", export_interval_s, MIN_EXPORT_INTERVAL_S, MAX_EXPORT_INTERVAL_S),
        ("flush_timeout_s", flush_timeout_s, 0.0, MAX_TIMEOUT_S),
    ):
        if value is not None and not _within(value, low, high):
            raise ValueError(
                f"{name} must be a number of seconds {_span(low, high)}, got {value!r}"
            )

    notices: list[str] = []
    endpoint, source, headers = _grafana_cloud(env, notices)
    headers_var = _first_set(env, OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_HEADERS)
    if endpoint is None:
        endpoint, source = _otel_endpoint(env, notices)
        env_headers = _check_headers(headers_var, env[headers_var]) if headers_var else {}
        has_auth = "authorization" in env_headers
        auth_source = headers_var if has_auth else None
    else:
        has_auth, auth_source = True, GRAFANA_CLOUD_AUTH
        if headers_var:
            # The exporter sends the headers it is given instead of the variable's.
            notices.append(
                f"{headers_var} is set too and is not used: with {GRAFANA_CLOUD_OTLP_ENDPOINT} "
                f"set, {GRAFANA_CLOUD_AUTH} make the Authorization header and no header of "
                f"{headers_var} is sent. Unset {headers_var}, or the GRAFANA_CLOUD_* variables "
                "to use it."
            )
    if endpoint is not None and has_auth:
        _refuse_clear_text(endpoint, source, env)

    if export_interval_s is None:
        interval_ms = _number(
            env,
            OTEL_METRIC_EXPORT_INTERVAL,
            unit="milliseconds",
            low=MIN_EXPORT_INTERVAL_S * 1000,
            high=MAX_EXPORT_INTERVAL_S * 1000,
            note=" (0.1 s to 1 hour)",
            example="10000",
        )
        export_interval_s = interval_ms / 1000 if interval_ms is not None else None
    if flush_timeout_s is None:
        flush_timeout_s = _number(
            env, FLUSH_TIMEOUT, unit="seconds", low=0.0, high=MAX_TIMEOUT_S, example="5"
        )
    if call_id_label is None:
        call_id_label = _flag(env, CALL_ID_LABEL, default=True)
    _check_exporter_variables(env, source)
    heartbeat_s, histogram_interval_s = (
        _number(env, name, unit="seconds", low=0.1, high=MAX_HEARTBEAT_S, example=example)
        for name, example in ((HEARTBEAT, "60"), (HISTOGRAM_INTERVAL, "60"))
    )
    interval_s = export_interval_s or DEFAULT_EXPORT_INTERVAL_S
    sparse_s = min(DEFAULT_SPARSE_EXPORTS * interval_s, MAX_HEARTBEAT_S)
    if logs is None:
        logs = _flag(env, LOGS, default=True)
    if traces is None:
        traces = _flag(env, TRACES, default=False)
    form, why = _histogram_form(env, histograms, endpoint, source)
    return ExportConfig(
        logs_endpoint=_signal_endpoint(env, endpoint, source, "logs") if logs else None,
        traces_endpoint=_signal_endpoint(env, endpoint, source, "traces") if traces else None,
        endpoint=endpoint,
        endpoint_source=source,
        headers=headers,
        has_auth=has_auth,
        auth_source=auth_source,
        export_interval_s=export_interval_s or DEFAULT_EXPORT_INTERVAL_S,
        flush_timeout_s=flush_timeout_s or DEFAULT_FLUSH_TIMEOUT_S,
        call_id_label=call_id_label,
        notices=tuple(notices),
        call_histograms=_flag(env, CALL_HISTOGRAMS, default=False),
        heartbeat_s=heartbeat_s or sparse_s,
        histogram_interval_s=histogram_interval_s or sparse_s,
        histograms=form,
        histograms_reason=why,
    )


def _histogram_form(
    env: Mapping[str, str], argument: str | None, endpoint: str | None, source: str | None
) -> tuple[str, str]:
    """The form latency histograms are pushed in, and why.

    Grafana Cloud keeps an OTLP exponential histogram as a native histogram, one series
    whatever its buckets; a plain Prometheus, VictoriaMetrics or a collector may not keep
    them, so elsewhere the classic form is the default.
    """
    forms = (NATIVE, CLASSIC)
    if argument is not None:
        if argument not in forms:
            raise ValueError(f"histograms must be {NATIVE!r} or {CLASSIC!r}, got {argument!r}")
        return argument, "histograms="
    raw = env.get(HISTOGRAMS, "").strip()
    if raw:
        if raw.lower() not in forms:
            raise ConfigError(
                f"{HISTOGRAMS}={raw!r} is not {NATIVE!r} or {CLASSIC!r}: set it to {NATIVE} "
                f"(one series per histogram; Grafana Cloud, Mimir, Prometheus with native "
                f"histograms on) or {CLASSIC} (a series per bucket; any backend), or unset it."
            )
        return raw.lower(), HISTOGRAMS
    if source == GRAFANA_CLOUD_OTLP_ENDPOINT:
        return NATIVE, f"metrics go to Grafana Cloud ({GRAFANA_CLOUD_OTLP_ENDPOINT})"
    host = (urlsplit(endpoint).hostname or "") if endpoint else ""
    if host == "grafana.net" or host.endswith(".grafana.net"):
        return NATIVE, f"metrics go to Grafana Cloud ({host})"
    return CLASSIC, f"not Grafana Cloud; {HISTOGRAMS}=native if the backend keeps them"


def max_label_values(argument: int | None, env: Mapping[str, str] | None = None) -> int:
    """The bound on distinct ``model`` and ``processor`` values: argument, variable, default.

    Raises:
        ValueError: The argument is not a whole number of at least 1.
        ConfigError: The variable is not; the message names it.
    """
    if argument is not None:
        if isinstance(argument, bool) or not isinstance(argument, int) or argument < 1:
            raise ValueError(f"max_label_values must be a whole number >= 1, got {argument!r}")
        return argument
    env = os.environ if env is None else env
    raw = env.get(MAX_LABEL_VALUES, "").strip()
    if not raw:
        return DEFAULT_MAX_LABEL_VALUES
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            f"{MAX_LABEL_VALUES}={raw!r} is not a whole number >= 1: set it to the number of "
            f"distinct model and processor names to export, for example {DEFAULT_MAX_LABEL_VALUES}."
        )
    return int(raw)


def basic_auth(instance_id: str, token: str) -> str:
    """The ``Authorization`` value Grafana Cloud's OTLP gateway expects."""
    return "Basic " + base64.b64encode(f"{instance_id}:{token}".encode()).decode()


def _grafana_cloud(
    env: Mapping[str, str], notices: list[str]
) -> tuple[str | None, str | None, dict | None]:
    base = env.get(GRAFANA_CLOUD_OTLP_ENDPOINT, "").strip()
    instance_id = env.get(GRAFANA_CLOUD_INSTANCE_ID, "").strip()
    token = env.get(GRAFANA_CLOUD_API_TOKEN, "").strip()
    if not base:
        if instance_id or token:
            raise ConfigError(
                f"{GRAFANA_CLOUD_INSTANCE_ID}/{GRAFANA_CLOUD_API_TOKEN} are set but "
                f"{GRAFANA_CLOUD_OTLP_ENDPOINT} is not: set it to your stack's OTLP endpoint, "
                "for example https://otlp-gateway-prod-eu-west-2.grafana.net/otlp "
                "(Grafana Cloud portal > your stack > OpenTelemetry > Configure)."
            )
        return None, None, None
    _check_url(GRAFANA_CLOUD_OTLP_ENDPOINT, base, "https://otlp-gateway-<zone>.grafana.net/otlp")
    for name, value in ((GRAFANA_CLOUD_INSTANCE_ID, instance_id), (GRAFANA_CLOUD_API_TOKEN, token)):
        if not value:
            raise ConfigError(
                f"{GRAFANA_CLOUD_OTLP_ENDPOINT} is set but {name} is not: set both "
                f"{GRAFANA_CLOUD_INSTANCE_ID} (the numeric instance ID shown on the stack's "
                f"OpenTelemetry page) and {GRAFANA_CLOUD_API_TOKEN} (a token with the "
                "metrics:write scope)."
            )
    if not instance_id.isdigit():
        raise ConfigError(
            f"{GRAFANA_CLOUD_INSTANCE_ID} must be the numeric instance ID shown on the stack's "
            "OpenTelemetry page (for example 123456), not a name or a URL."
        )
    endpoint = _metrics_url(GRAFANA_CLOUD_OTLP_ENDPOINT, base, notices)
    return endpoint, GRAFANA_CLOUD_OTLP_ENDPOINT, {"authorization": basic_auth(instance_id, token)}


def _otel_endpoint(env: Mapping[str, str], notices: list[str]) -> tuple[str | None, str | None]:
    # The same precedence as the exporter: the signal-specific URL is used as is,
    # the general one gets /v1/metrics appended.
    if value := env.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "").strip():
        _check_url(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, value, "https://host:4318/v1/metrics")
        return value, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    if value := env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip():
        _check_url(OTEL_EXPORTER_OTLP_ENDPOINT, value, "https://host:4318")
        endpoint = _metrics_url(OTEL_EXPORTER_OTLP_ENDPOINT, value, notices)
        return endpoint, OTEL_EXPORTER_OTLP_ENDPOINT
    return None, None


def _metrics_url(name: str, base: str, notices: list[str]) -> str:
    base = base.rstrip("/")
    # A base URL copied with the signal path on it would be sent to
    # .../v1/metrics/v1/metrics, where every export is a 404: the intent is plain.
    if base.endswith(f"/{_METRICS_PATH}"):
        base = base.removesuffix(f"/{_METRICS_PATH}")
        notices.append(
            f"{name} ends in /{_METRICS_PATH}, which this package appends itself; it was "
            f"removed so that the path is not doubled. {name} should be the base URL (for "
            "Grafana Cloud, ending in /otlp)."
        )
    return f"{base}/{_METRICS_PATH}"


def _signal_endpoint(
    env: Mapping[str, str], metrics: str | None, source: str | None, signal: str
) -> str | None:
    """Where ``signal`` (logs, traces) goes: beside the metrics, with the same credentials.

    Grafana Cloud's OTLP gateway and OTLP/HTTP collectors serve ``/v1/logs`` and
    ``/v1/traces`` at the base the metrics use. A signal-specific variable
    (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``) is used as is when the metrics URL came
    from ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` or the general variable.
    """
    if metrics is None:
        return None
    name = {"logs": OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "traces": OTEL_EXPORTER_OTLP_TRACES_ENDPOINT}
    if source != GRAFANA_CLOUD_OTLP_ENDPOINT and (value := env.get(name[signal], "").strip()):
        _check_url(name[signal], value, f"https://host:4318/v1/{signal}")
        return value
    suffix = f"/{_METRICS_PATH}"
    if metrics.rstrip("/").endswith(suffix):
        return metrics.rstrip("/")[: -len(suffix)] + f"/v1/{signal}"
    return None  # a metrics URL of another shape: no guess


def _check_url(name: str, value: str, example: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name}={value!r} is not an http(s) URL: include the scheme and host, "
            f"for example {example}."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ConfigError(f"{name}={value!r} has an invalid port; for example {example}.") from None


def _check_headers(name: str, value: str) -> Mapping[str, str]:
    # The exporter drops malformed items with a warning; a dropped Authorization
    # header only shows up later as a 401, so say what is wrong now.
    for item in (part.strip() for part in value.split(",")):
        if item and not _HEADER_ITEM.match(item):
            shown = item.split(" ", 1)[0][:12]
            raise ConfigError(
                f"{name} has an item that is not name=value (starting {shown!r}...): write "
                "key=value pairs separated by commas, for example "
                "Authorization=Basic%20<base64 of instanceID:token>."
            )
    headers = parse_env_headers(value, liberal=True)
    _check_basic_auth(name, headers.get("authorization", ""))
    return headers


def _check_basic_auth(name: str, value: str) -> None:
    # "Basic <instance>:<token>" left unencoded is refused by every server as a 401 that
    # says nothing of why; base64 never has a colon, so it is told before anything is sent.
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() == "basic" and ":" in credentials:
        raise ConfigError(
            f"{name} has Authorization=Basic <instance ID>:<token> unencoded: the part after "
            "Basic must be base64 of <instance ID>:<token>. Encode it, for example with "
            "`printf '%s' '<instance ID>:<token>' | base64 -w0`, and write "
            f"Authorization=Basic%20<that>; or set {GRAFANA_CLOUD_INSTANCE_ID} and "
            f"{GRAFANA_CLOUD_API_TOKEN} instead, which build the header."
        )


def _refuse_clear_text(endpoint: str, source: str | None, env: Mapping[str, str]) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme == "https" or _is_loopback(parts.hostname or ""):
        return
    if _flag(env, ALLOW_INSECURE, default=False):
        return
    raise ConfigError(
        f"{source} is a plain http:// URL to {parts.hostname}, and credentials would be sent "
        f"in clear text: use https://, or set {ALLOW_INSECURE}=true if the network is trusted."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_set(env: Mapping[str, str], *names: str) -> str | None:
    return next((name for name in names if env.get(name, "").strip()), None)


def _number(
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
    if not _within(value, low, high):
        raise ConfigError(
            f"{name}={raw!r} is not a number of {unit} {_span(low, high)}{note}: set it to, "
            f"for example, {example}."
        )
    return value


def _within(value: float, low: float, high: float) -> bool:
    # A low of 0 is exclusive (no wait at all is not a wait), any other inclusive;
    # NaN fails every comparison.
    return (value >= low if low else value > 0) and value <= high


def _span(low: float, high: float) -> str:
    return f"from {low:.10g} to {high:.10g}" if low else f"above 0 and at most {high:.10g}"


def _check_exporter_variables(env: Mapping[str, str], source: str | None) -> None:
    """Check what the OTel exporter and SDK read themselves, as they would pick it.

    They fall back from a value they cannot parse with a line that does not name
    the variable, or take it as it is: a timeout of 0 or a CA file that is not
    there makes every export fail before a request is sent.
    """
    if name := _first_set(env, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT):
        _number(
            env,
            name,
            unit="seconds",
            low=0.0,
            high=MAX_TIMEOUT_S,
            note=" (the Python exporter reads it in seconds, not milliseconds)",
            example="10",
        )
    if name := _first_set(
        env, OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE
    ):
        _check_readable(name, env[name].strip())
    if name := _first_set(
        env, OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION
    ):
        value = env[name].strip()
        if value.lower() not in _COMPRESSIONS:
            raise ConfigError(
                f"{name}={value!r} is not a compression the exporter knows: set it to "
                f"{', '.join(_COMPRESSIONS[:-1])} or {_COMPRESSIONS[-1]}."
            )
    _check_protocol(env, source)
    _check_resource_attributes(env.get(OTEL_RESOURCE_ATTRIBUTES, ""))


def _check_protocol(env: Mapping[str, str], source: str | None) -> None:
    name = _first_set(env, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)
    # The general variable may be there for the application's own traces or logs: it
    # is about our metrics only when they go to the OTEL_EXPORTER_OTLP_* endpoint.
    otel_endpoint = source in (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    if name is None or (name == OTEL_EXPORTER_OTLP_PROTOCOL and not otel_endpoint):
        return
    value = env[name].strip()
    if value.lower() != _PROTOCOL:
        raise ConfigError(
            f"{name}={value!r} is not supported: this package sends metrics with OTLP over "
            f"HTTP, {_PROTOCOL} only (not grpc, nor http/json). Unset {name} or set it to "
            f"{_PROTOCOL}, and use the collector's OTLP/HTTP port (4318, not gRPC's 4317)."
        )


def _check_resource_attributes(value: str) -> None:
    # The SDK skips an item without "=" with a warning that does not name the
    # variable; the attribute is then missing from every series.
    if not value.strip():
        return
    for item in value.split(","):
        key, equals, _ = item.partition("=")
        if not equals or not key.strip():
            shown = item.strip()[:12]
            problem = (
                f"an item that is not key=value (starting {shown!r}...)"
                if shown
                else "an empty item (a comma too many?)"
            )
            raise ConfigError(
                f"{OTEL_RESOURCE_ATTRIBUTES} has {problem}: write key=value pairs separated "
                "by commas, a comma inside a value as %2C, for example "
                "service.namespace=support,deployment.environment.name=prod."
            )


def _check_readable(name: str, path: str) -> None:
    if os.path.isdir(path):
        return  # requests takes a directory of CA files too
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{name}={path!r} cannot be read ({e.strerror}): set it to the path of a CA "
            "bundle in PEM format, or unset it to verify with the system's CAs."
        ) from None


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: set it to true or false.")


def load_env_file() -> bool:
    """Load ``./.env`` into the environment, never overriding a variable already set.

    The example bot, ``pipecat-grafana check`` and ``pipecat-grafana demo`` all read
    it this way, so they see the same configuration.

    Returns:
        Whether a ``.env`` file was found.
    """
    # python-dotenv comes with pipecat-ai. Only the current directory, as the
    # bot's own .env: searching parent directories could pick up another project's.
    from dotenv import load_dotenv

    return load_dotenv(".env", override=False)
