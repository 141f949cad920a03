"""Where metrics go and how: the OTLP endpoint, credentials and export settings.

The OTel exporter already reads the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, timeout, compression, certificate); this module does not
re-parse them for use. It adds what the exporter lacks:

- the Grafana Cloud shortcut (``GRAFANA_CLOUD_OTLP_ENDPOINT``,
  ``GRAFANA_CLOUD_INSTANCE_ID``, ``GRAFANA_CLOUD_API_TOKEN``), which builds the
  Basic auth header;
- a 10-second default export interval (the SDK's is 60 s) and an error, not a
  silent fallback, for a malformed ``OTEL_METRIC_EXPORT_INTERVAL``;
- checks that name the variable and the fix for values the exporter would
  silently ignore (a header without ``=``, an endpoint without a scheme);
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
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

GRAFANA_CLOUD_OTLP_ENDPOINT = "GRAFANA_CLOUD_OTLP_ENDPOINT"
GRAFANA_CLOUD_INSTANCE_ID = "GRAFANA_CLOUD_INSTANCE_ID"
GRAFANA_CLOUD_API_TOKEN = "GRAFANA_CLOUD_API_TOKEN"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_METRICS_HEADERS = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
CALL_ID_LABEL = "PIPECAT_GRAFANA_CALL_ID_LABEL"
"""``true`` (default) tags per-call series with ``call_id``; ``false`` keeps fleet-wide
series only."""
FLUSH_TIMEOUT = "PIPECAT_GRAFANA_FLUSH_TIMEOUT"
"""Seconds a call's end and the process's exit wait for the final export (default 5)."""
ALLOW_INSECURE = "PIPECAT_GRAFANA_ALLOW_INSECURE"
"""``true`` allows credentials over plain ``http://`` to a host that is not loopback."""
LOGS = "PIPECAT_GRAFANA_LOGS"
"""``true`` (default, when export is on) sends each call's summary as an OTLP log record."""
TRACES = "PIPECAT_GRAFANA_TRACES"
"""``true`` turns on Pipecat's tracing and sends its spans over OTLP (default ``false``)."""
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
MAX_LABEL_VALUES = "PIPECAT_GRAFANA_MAX_LABEL_VALUES"
"""Distinct values the ``model`` and ``processor`` labels each take in a process (default
100); later ones are exported as ``other``."""

DEFAULT_EXPORT_INTERVAL_S = 10.0
DEFAULT_FLUSH_TIMEOUT_S = 5.0
DEFAULT_MAX_LABEL_VALUES = 100
_METRICS_PATH = "v1/metrics"
_HEADER_ITEM = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=")
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
        export_interval_s: Seconds between periodic exports.
        flush_timeout_s: Bound on the wait for a final export at a call's end and at exit.
        call_id_label: Whether per-call series carry ``call_id``.
        logs_endpoint: The full OTLP/HTTP logs URL for call summaries, or ``None``.
        traces_endpoint: The full OTLP/HTTP traces URL for Pipecat's spans, or ``None``.
    """

    endpoint: str | None
    endpoint_source: str | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    has_auth: bool = False
    export_interval_s: float = DEFAULT_EXPORT_INTERVAL_S
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S
    call_id_label: bool = True
    logs_endpoint: str | None = None
    traces_endpoint: str | None = None

    def __repr__(self) -> str:
        return (
            f"ExportConfig(endpoint={self.endpoint!r}, endpoint_source={self.endpoint_source!r}, "
            f"auth={'<masked>' if self.has_auth else None}, "
            f"export_interval_s={self.export_interval_s}, flush_timeout_s={self.flush_timeout_s}, "
            f"call_id_label={self.call_id_label}, logs_endpoint={self.logs_endpoint!r}, "
            f"traces_endpoint={self.traces_endpoint!r})"
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
        )

    def describe(self) -> dict[str, str]:
        """The configuration as a person should see it, credentials masked."""
        return {
            "endpoint": self.endpoint or "none (export off)",
            "endpoint from": self.endpoint_source or "-",
            "authorization": "set (masked)" if self.has_auth else "none",
            "export interval": f"{self.export_interval_s:g}s",
            "flush timeout": f"{self.flush_timeout_s:g}s",
            "call_id label": "on" if self.call_id_label else "off",
            "call summaries (logs)": self.logs_endpoint or "off",
            "traces": self.traces_endpoint or "off",
        }


def resolve(
    env: Mapping[str, str] | None = None,
    *,
    call_id_label: bool | None = None,
    export_interval_s: float | None = None,
    flush_timeout_s: float | None = None,
    logs: bool | None = None,
    traces: bool | None = None,
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

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: A value is malformed; the message names it and says how to fix it.
        ValueError: An argument is out of range.
    """
    env = os.environ if env is None else env
    for name, value in (
        ("export_interval_s", export_interval_s),
        ("flush_timeout_s", flush_timeout_s),
    ):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    endpoint, source, headers = _grafana_cloud(env)
    if endpoint is None:
        endpoint, source = _otel_endpoint(env)
        headers_var = _first_set(
            env, OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_HEADERS
        )
        env_headers = _check_headers(headers_var, env[headers_var]) if headers_var else {}
        has_auth = "authorization" in env_headers
    else:
        has_auth = True
    if endpoint is not None and has_auth:
        _refuse_clear_text(endpoint, source, env)

    if export_interval_s is None:
        export_interval_s = _positive(env, OTEL_METRIC_EXPORT_INTERVAL, scale=1e-3)
    if flush_timeout_s is None:
        flush_timeout_s = _positive(env, FLUSH_TIMEOUT, scale=1.0)
    if call_id_label is None:
        call_id_label = _flag(env, CALL_ID_LABEL, default=True)
    if logs is None:
        logs = _flag(env, LOGS, default=True)
    if traces is None:
        traces = _flag(env, TRACES, default=False)
    return ExportConfig(
        logs_endpoint=_signal_endpoint(env, endpoint, source, "logs") if logs else None,
        traces_endpoint=_signal_endpoint(env, endpoint, source, "traces") if traces else None,
        endpoint=endpoint,
        endpoint_source=source,
        headers=headers,
        has_auth=has_auth,
        export_interval_s=export_interval_s or DEFAULT_EXPORT_INTERVAL_S,
        flush_timeout_s=flush_timeout_s or DEFAULT_FLUSH_TIMEOUT_S,
        call_id_label=call_id_label,
    )


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


def _grafana_cloud(env: Mapping[str, str]) -> tuple[str | None, str | None, dict | None]:
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
    endpoint = f"{base.rstrip('/')}/{_METRICS_PATH}"
    return endpoint, GRAFANA_CLOUD_OTLP_ENDPOINT, {"authorization": basic_auth(instance_id, token)}


def _otel_endpoint(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    # The same precedence as the exporter: the signal-specific URL is used as is,
    # the general one gets /v1/metrics appended.
    if value := env.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "").strip():
        _check_url(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, value, "https://host:4318/v1/metrics")
        return value, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    if value := env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip():
        _check_url(OTEL_EXPORTER_OTLP_ENDPOINT, value, "https://host:4318")
        return f"{value.rstrip('/')}/{_METRICS_PATH}", OTEL_EXPORTER_OTLP_ENDPOINT
    return None, None


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
    return parse_env_headers(value, liberal=True)


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


def _positive(env: Mapping[str, str], name: str, *, scale: float) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        unit = "milliseconds, for example 10000" if scale != 1.0 else "seconds, for example 5"
        raise ConfigError(f"{name}={raw!r} is not a positive number: set it in {unit}.")
    return value * scale


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
