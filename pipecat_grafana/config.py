"""Where metrics go and how: the OTLP endpoint, credentials and export settings.

The OTel exporter already reads the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, timeout, compression, certificate); this module does not
re-parse them for use. It adds what the exporter lacks:

- the Grafana Cloud shortcut (``GRAFANA_CLOUD_OTLP_ENDPOINT``,
  ``GRAFANA_CLOUD_INSTANCE_ID``, ``GRAFANA_CLOUD_API_TOKEN``), which builds the
  Basic auth header;
- a 10-second default export interval (the SDK's is 60 s);
- bounds on every number of seconds, so that none can stop export for good (an
  interval of 1e300 ms overflows the SDK's reader thread);
- checks that name the variable and the fix for values the exporter and the SDK
  would ignore with a line that does not name it (an unknown compression, a resource
  attribute without ``=``, a protocol other than ``http/protobuf``) or that would make
  every export fail with no word of why (a timeout of 0);
- a base URL given with ``/v1/metrics`` already on it is accepted, with a notice,
  rather than sent to ``.../v1/metrics/v1/metrics``;
- a refusal to send credentials in clear text to a remote host.

A malformed value of a setting with a default is refused with one notice naming the
variable, its value and the default, and the default is used: export stays on, as the
OpenTelemetry SDK does with its own variables. Only what has no safe default turns export
off (``ConfigError``): a malformed endpoint URL, malformed or ambiguous credentials or
headers, a CA bundle that is not there, credentials in clear text to a remote host.

Secrets never leave this module in a readable form: ``ExportConfig``'s repr and
``describe()`` mask them. The variables' names, defaults and limits are in ``variables``
(and read here as ``config.NAME``); URLs and credentials are checked in ``endpoints``.
"""

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http import Compression

from pipecat_grafana.endpoints import (
    _check_headers,
    _grafana_cloud,
    _otel_endpoint,
    _refuse_clear_text,
    _signal_endpoint,
    credentials_in,
    userinfo_source,
)

# Every variable's name, default and limit, read here as cfg.NAME by users and tests.
from pipecat_grafana.variables import *  # noqa: F403
from pipecat_grafana.variables import (
    CALL_HISTOGRAMS,
    CALL_ID_LABEL,
    CLASSIC,
    DEFAULT_EXPORT_INTERVAL_S,
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_FLUSH_TIMEOUT_S,
    DEFAULT_MAX_LABEL_VALUES,
    DEFAULT_SPARSE_EXPORTS,
    FLUSH_TIMEOUT,
    GRAFANA_CLOUD_AUTH,
    GRAFANA_CLOUD_OTLP_ENDPOINT,
    HEARTBEAT,
    HISTOGRAM_INTERVAL,
    HISTOGRAMS,
    LOGS,
    MAX_EXPORT_INTERVAL_S,
    MAX_HEARTBEAT_S,
    MAX_LABEL_VALUES,
    MAX_TIMEOUT_S,
    MIN_EXPORT_INTERVAL_S,
    NATIVE,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_RESOURCE_ATTRIBUTES,
    TRACES,
    ConfigError,
    first_set,
    flag,
    number,
    span,
    within,
)

_PROTOCOL = "http/protobuf"
# What the installed exporter accepts, "none" last as the message lists them.
_COMPRESSIONS = tuple(sorted((c.value for c in Compression), key=lambda v: v == "none"))


def _not_key(default: object) -> Any:
    """A field that does not tell two pipelines apart (see ``ExportConfig.key``)."""
    return field(default=default, metadata={"key": False})


def _hashable(value: object) -> object:
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class ExportConfig:
    """The resolved export configuration.

    Parameters:
        endpoint: The full OTLP/HTTP metrics URL, or ``None`` when export is off.
        endpoint_source: The variable (or argument) the endpoint came from.
        headers: Headers this package built (the Grafana Cloud shortcut), passed to
            the exporter explicitly; ``None`` lets the exporter read
            ``OTEL_EXPORTER_OTLP_(METRICS_)HEADERS`` itself.
        has_auth: Whether credentials will be sent (an ``Authorization``, ``api-key`` or
            ``x-api-key`` header, or a ``user:password@`` in the URL).
        auth_source: Where they come from: ``GRAFANA_CLOUD_AUTH`` (the instance ID and
            token), the headers variable that holds them, or the user and password of the
            endpoint URL (``userinfo_source``); ``None`` when none are sent.
        export_interval_s: Seconds between periodic exports.
        flush_timeout_s: Bound on the wait for a final export at a call's end and at exit.
        export_timeout_s: Deadline of one export, retries included
            (``OTEL_EXPORTER_OTLP_TIMEOUT``).
        call_id_label: Whether per-call series carry ``call_id``.
        notices: What was accepted but should be fixed, one sentence each; the
            exporter logs each once as a warning and ``check`` prints them.
        refused: The variables whose values were refused (each said in ``notices``), their
            settings' defaults used instead.
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
    endpoint_source: str | None = _not_key(None)
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    has_auth: bool = _not_key(False)
    auth_source: str | None = _not_key(None)
    export_interval_s: float = DEFAULT_EXPORT_INTERVAL_S
    flush_timeout_s: float = _not_key(DEFAULT_FLUSH_TIMEOUT_S)
    export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S
    call_id_label: bool = True
    notices: tuple[str, ...] = _not_key(())
    refused: tuple[str, ...] = _not_key(())
    logs_endpoint: str | None = None
    traces_endpoint: str | None = None
    call_histograms: bool = False
    heartbeat_s: float = DEFAULT_SPARSE_EXPORTS * DEFAULT_EXPORT_INTERVAL_S
    histogram_interval_s: float = DEFAULT_SPARSE_EXPORTS * DEFAULT_EXPORT_INTERVAL_S
    pull: bool = False
    histograms: str = CLASSIC
    histograms_reason: str = _not_key("the default")

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
    def key(self) -> tuple[tuple[str, object], ...]:
        """What makes two configurations share one export pipeline.

        Every field that changes what is sent or where; not how long a call's end waits,
        nor what is said about it.
        """
        return tuple(
            (f.name, _hashable(getattr(self, f.name)))
            for f in fields(self)
            if f.metadata.get("key", True)
        )

    def destination(self, scrape_url: str | None = None) -> str:
        """Where metrics go, in words: pushed (and where), scraped (at which URL), both, neither.

        Args:
            scrape_url: The URL of the Prometheus endpoint serving this configuration's
                series, if any.
        """
        push = f"pushed over OTLP to {self.endpoint}" if self.enabled else ""
        pull = f"served at {scrape_url} for Prometheus" if scrape_url is not None else ""
        if push and pull:
            return f"{push}, and {pull}"
        if push:
            return f"{push} (no scrape endpoint)"
        if pull:
            return f"{pull} (nothing pushed)"
        # No cause given: a misconfigured variable turns export off too, and says so itself.
        return "off (nothing pushed, no scrape endpoint; call summaries only)"

    def describe(self, scrape_url: str | None = None) -> dict[str, str]:
        """The configuration as a person should see it, credentials masked.

        Args:
            scrape_url: The URL of the Prometheus endpoint serving this configuration's
                series, if any.
        """
        return {
            "metrics": self.destination(scrape_url),
            "endpoint": self.endpoint or "none (nothing pushed)",
            "scrape endpoint": scrape_url or "off",
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
        if value is not None and not within(value, low, high):
            raise ValueError(f"{name} must be a number of seconds {span(low, high)}, got {value!r}")

    notices: list[str] = []
    refused: list[str] = []

    def or_default(name: str, default: str, read: Callable[[], Any]) -> Any:
        """``read()``, or ``None`` (the default) with one notice if the value is refused."""
        try:
            return read()
        except ConfigError as e:
            notices.append(f"{e} Using the default, {default}.")
            refused.append(name)
            return None

    endpoint, source, headers = _grafana_cloud(env, notices)
    headers_var = first_set(env, OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_HEADERS)
    if endpoint is None:
        endpoint, source, authorization = _otel_endpoint(env, notices)
        env_headers = _check_headers(headers_var, env[headers_var]) if headers_var else {}
        has_auth = credentials_in(env_headers) or authorization is not None
        auth_source = headers_var if has_auth else None
        if authorization is not None:
            if "authorization" in env_headers:
                raise ConfigError(
                    f"{source} has a user:password@ and {headers_var} an Authorization too: "
                    "keep one of them (the URL's would win, unseen)."
                )
            headers = {"authorization": authorization}
            auth_source = userinfo_source(source or OTEL_EXPORTER_OTLP_ENDPOINT)
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
        if ignored := first_set(
            env, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT
        ):
            notices.append(
                f"{GRAFANA_CLOUD_OTLP_ENDPOINT} and {ignored} are both set: metrics go to "
                f"{GRAFANA_CLOUD_OTLP_ENDPOINT} and {ignored} is ignored. Unset the one you do "
                "not mean."
            )
    if endpoint is not None and has_auth:
        _refuse_clear_text(endpoint, source, env)

    if export_interval_s is None:
        interval_ms = or_default(
            OTEL_METRIC_EXPORT_INTERVAL,
            f"{DEFAULT_EXPORT_INTERVAL_S * 1000:g} ms",
            lambda: number(
                env,
                OTEL_METRIC_EXPORT_INTERVAL,
                unit="milliseconds",
                low=MIN_EXPORT_INTERVAL_S * 1000,
                high=MAX_EXPORT_INTERVAL_S * 1000,
                note=" (0.1 s to 1 hour)",
                example="10000",
            ),
        )
        export_interval_s = interval_ms / 1000 if interval_ms is not None else None
    if flush_timeout_s is None:
        flush_timeout_s = or_default(
            FLUSH_TIMEOUT,
            f"{DEFAULT_FLUSH_TIMEOUT_S:g} s",
            lambda: number(
                env, FLUSH_TIMEOUT, unit="seconds", low=0.0, high=MAX_TIMEOUT_S, example="5"
            ),
        )
    if call_id_label is None:
        call_id_label = or_default(
            CALL_ID_LABEL, "true", lambda: flag(env, CALL_ID_LABEL, default=True)
        )
        call_id_label = True if call_id_label is None else call_id_label
    export_timeout_s = _check_exporter_variables(env, source, or_default)
    interval_s = export_interval_s or DEFAULT_EXPORT_INTERVAL_S
    sparse_s = min(DEFAULT_SPARSE_EXPORTS * interval_s, MAX_HEARTBEAT_S)
    heartbeat_s, histogram_interval_s = (
        or_default(
            name,
            f"{sparse_s:g} s ({DEFAULT_SPARSE_EXPORTS} export intervals)",
            functools.partial(
                number, env, name, unit="seconds", low=0.1, high=MAX_HEARTBEAT_S, example="60"
            ),
        )
        for name in (HEARTBEAT, HISTOGRAM_INTERVAL)
    )
    if logs is None:
        logs = or_default(LOGS, "true", lambda: flag(env, LOGS, default=True))
        logs = True if logs is None else logs
    if traces is None:
        traces = bool(or_default(TRACES, "false", lambda: flag(env, TRACES, default=False)))
    call_histograms = or_default(
        CALL_HISTOGRAMS, "false", lambda: flag(env, CALL_HISTOGRAMS, default=False)
    )
    form, why = _histogram_form(env, histograms, endpoint, source, or_default)
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
        export_timeout_s=export_timeout_s or DEFAULT_EXPORT_TIMEOUT_S,
        call_id_label=call_id_label,
        notices=tuple(notices),
        refused=tuple(refused),
        call_histograms=bool(call_histograms),
        heartbeat_s=heartbeat_s or sparse_s,
        histogram_interval_s=histogram_interval_s or sparse_s,
        histograms=form,
        histograms_reason=why,
    )


_OrDefault = Callable[[str, str, Callable[[], Any]], Any]


def _histogram_form(
    env: Mapping[str, str],
    argument: str | None,
    endpoint: str | None,
    source: str | None,
    or_default: _OrDefault,
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
    default, why = _default_histogram_form(endpoint, source)

    def read() -> str:
        if raw.lower() not in forms:
            raise ConfigError(
                f"{HISTOGRAMS}={raw!r} is not {NATIVE!r} or {CLASSIC!r}: set it to {NATIVE} "
                f"(one series per histogram; Grafana Cloud, Mimir, Prometheus with native "
                f"histograms on) or {CLASSIC} (a series per bucket; any backend), or unset it."
            )
        return raw.lower()

    if raw and (form := or_default(HISTOGRAMS, f"{default} ({why})", read)) is not None:
        return form, HISTOGRAMS
    return default, why


def _default_histogram_form(endpoint: str | None, source: str | None) -> tuple[str, str]:
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
    # isascii: "²" passes isdigit() and fails int().
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ConfigError(
            f"{MAX_LABEL_VALUES}={raw!r} is not a whole number >= 1: set it to the number of "
            f"distinct model and processor names to export, for example {DEFAULT_MAX_LABEL_VALUES}."
        )
    return int(raw)


def _check_exporter_variables(
    env: Mapping[str, str], source: str | None, or_default: _OrDefault
) -> float | None:
    """Check what the OTel exporter and SDK read themselves, as they would pick it.

    They fall back from a value they cannot parse with a line that does not name
    the variable, or take it as it is: a timeout of 0 or a CA file that is not
    there makes every export fail before a request is sent. A refused timeout or
    compression is replaced by its default where the clients are built (``otlp``).

    Returns:
        The exporter's timeout in seconds, when set and valid.
    """
    timeout_s = None
    if name := first_set(env, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT):
        timeout_s = or_default(
            name,
            f"{DEFAULT_EXPORT_TIMEOUT_S:g} s",
            functools.partial(
                number,
                env,
                name,
                unit="seconds",
                low=0.0,
                high=MAX_TIMEOUT_S,
                note=" (the Python exporter reads it in seconds, not milliseconds)",
                example="10",
            ),
        )
    if name := first_set(
        env, OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE
    ):
        # No default to fall back to: the CA bundle says whom to trust.
        _check_readable(name, env[name].strip())
    if name := first_set(
        env, OTEL_EXPORTER_OTLP_METRICS_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION
    ):
        value = env[name].strip()

        def check_compression() -> None:
            if value.lower() not in _COMPRESSIONS:
                raise ConfigError(
                    f"{name}={value!r} is not a compression the exporter knows: set it to "
                    f"{', '.join(_COMPRESSIONS[:-1])} or {_COMPRESSIONS[-1]}."
                )

        or_default(name, "none (uncompressed)", check_compression)
    protocol = first_set(env, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)
    or_default(
        protocol or OTEL_EXPORTER_OTLP_PROTOCOL, _PROTOCOL, lambda: _check_protocol(env, source)
    )
    or_default(
        OTEL_RESOURCE_ATTRIBUTES,
        "no attribute from that item (the others are kept)",
        lambda: _check_resource_attributes(env.get(OTEL_RESOURCE_ATTRIBUTES, "")),
    )
    return timeout_s


def _check_protocol(env: Mapping[str, str], source: str | None) -> None:
    name = first_set(env, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL)
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
