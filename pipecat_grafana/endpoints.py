"""Where the push goes and with which credentials: URLs, headers, the Grafana Cloud shortcut.

The OTel exporter reads ``OTEL_EXPORTER_OTLP_*`` itself; this module checks what it would
take with a line that does not name the variable (a header without ``=``, a URL without a
scheme), builds the Basic auth header of the Grafana Cloud shortcut, appends each signal's
path to a base URL, and refuses to send credentials in clear text to a remote host.
"""

import base64
import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

from pipecat_grafana.variables import (
    ALLOW_INSECURE,
    GRAFANA_CLOUD_API_TOKEN,
    GRAFANA_CLOUD_INSTANCE_ID,
    GRAFANA_CLOUD_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    ConfigError,
    flag,
)

_METRICS_PATH = "v1/metrics"
_HEADER_ITEM = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=")


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
    if flag(env, ALLOW_INSECURE, default=False):
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
