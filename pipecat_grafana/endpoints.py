"""Where the push goes and with which credentials: URLs, headers, the Grafana Cloud shortcut.

The OTel exporter reads ``OTEL_EXPORTER_OTLP_*`` itself; this module checks what it would
take with a line that does not name the variable (a header without ``=``, a URL without a
scheme), builds the Basic auth header of the Grafana Cloud shortcut and of a URL's
``user:password@``, appends each signal's path to a base URL, and refuses to send credentials
in clear text to a remote host. No message here shows any part of a credential or a header
value: a URL is shown with its userinfo masked, a header by its name only.
"""

import base64
import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

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
# What a header value may hold once unquoted: visible Latin-1 and blanks, no CR, LF or other
# control character (requests refuses those before sending, with an error that is no answer).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_USERINFO = re.compile(r"(?<=//)[^/?#@]*@")

CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-auth-token"}
)
"""Headers whose value is a credential: never sent in clear text to a remote host."""


def basic_auth(instance_id: str, token: str) -> str:
    """The ``Authorization`` value Grafana Cloud's OTLP gateway expects."""
    return "Basic " + base64.b64encode(f"{instance_id}:{token}".encode()).decode()


def userinfo_source(name: str) -> str:
    """Where credentials given as ``user:password@`` in the URL of ``name`` come from, in words."""
    return f"the user:password in {name}"


def masked_url(value: str) -> str:
    """``value`` with any ``user:password@`` replaced, for messages."""
    return _USERINFO.sub("<credentials masked>@", value)


def _basic_auth_of(source: str, user: str, password: str) -> str:
    # A byte that is not UTF-8 reaches os.environ as a lone surrogate, which cannot be
    # encoded: refused naming the variable, and "from None" so that no traceback carries it.
    try:
        return basic_auth(user, password)
    except UnicodeEncodeError:
        raise ConfigError(
            f"{source} holds a character that is not UTF-8 text (a byte the environment "
            "could not decode, often from a file saved in another encoding or a stray "
            "control character): set it again from the portal's copy button."
        ) from None


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
    if _userinfo(base) is not None:
        raise ConfigError(
            f"{GRAFANA_CLOUD_OTLP_ENDPOINT} has a user:password@ in it: remove it, "
            f"{GRAFANA_CLOUD_INSTANCE_ID} and {GRAFANA_CLOUD_API_TOKEN} make the credentials."
        )
    for name, value in ((GRAFANA_CLOUD_INSTANCE_ID, instance_id), (GRAFANA_CLOUD_API_TOKEN, token)):
        if not value:
            raise ConfigError(
                f"{GRAFANA_CLOUD_OTLP_ENDPOINT} is set but {name} is not: set both "
                f"{GRAFANA_CLOUD_INSTANCE_ID} (the numeric instance ID shown on the stack's "
                f"OpenTelemetry page) and {GRAFANA_CLOUD_API_TOKEN} (a token with the "
                "metrics:write scope)."
            )
    # isascii: "²" passes isdigit().
    if not (instance_id.isascii() and instance_id.isdigit()):
        raise ConfigError(
            f"{GRAFANA_CLOUD_INSTANCE_ID} must be the numeric instance ID shown on the stack's "
            "OpenTelemetry page (for example 123456), not a name or a URL."
        )
    endpoint = _metrics_url(GRAFANA_CLOUD_OTLP_ENDPOINT, base, notices)
    authorization = _basic_auth_of(GRAFANA_CLOUD_API_TOKEN, instance_id, token)
    return endpoint, GRAFANA_CLOUD_OTLP_ENDPOINT, {"authorization": authorization}


def _otel_endpoint(
    env: Mapping[str, str], notices: list[str]
) -> tuple[str | None, str | None, str | None]:
    """The metrics URL of the ``OTEL_EXPORTER_OTLP_*`` variables, its source, its credentials.

    Credentials written into the URL (``http://user:password@host``) would be sent by
    ``requests`` as Basic auth and shown wherever the URL is: they are taken out of the URL
    and returned as the ``Authorization`` value, so the URL is safe to show.
    """
    # The same precedence as the exporter: the signal-specific URL is used as is,
    # the general one gets /v1/metrics appended.
    if value := env.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "").strip():
        name = OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
        _check_url(name, value, "https://host:4318/v1/metrics")
    elif value := env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip():
        name = OTEL_EXPORTER_OTLP_ENDPOINT
        _check_url(name, value, "https://host:4318")
    else:
        return None, None, None
    authorization = None
    if (userinfo := _userinfo(value)) is not None:
        user, _, password = userinfo.partition(":")
        authorization = _basic_auth_of(name, unquote(user), unquote(password))
        value = _without_userinfo(value)
    if name == OTEL_EXPORTER_OTLP_ENDPOINT:
        value = _metrics_url(name, value, notices)
    return value, name, authorization


def _userinfo(url: str) -> str | None:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[0] if "@" in netloc else None


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
        if _userinfo(value) is not None:
            raise ConfigError(
                f"{name[signal]} has a user:password@ in it: remove it; {signal} are sent with "
                "the metrics' credentials (in the metrics URL or the headers variable)."
            )
        return value
    suffix = f"/{_METRICS_PATH}"
    if metrics.rstrip("/").endswith(suffix):
        return metrics.rstrip("/")[: -len(suffix)] + f"/v1/{signal}"
    return None  # a metrics URL of another shape: no guess


def _check_url(name: str, value: str, example: str) -> None:
    shown = masked_url(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as e:  # a malformed port, or "Invalid IPv6 URL" (http://[::1)
        problem = "an invalid port" if "port" in str(e) else "a malformed host"
        raise ConfigError(f"{name}={shown!r} has {problem}; for example {example}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name}={shown!r} is not an http(s) URL: include the scheme and host, "
            f"for example {example}."
        )


def _check_headers(name: str, value: str) -> Mapping[str, str]:
    # The exporter drops malformed items with a warning; a dropped Authorization
    # header only shows up later as a 401, so say what is wrong now. Never shown: any part
    # of a value (an item without "=" is often a token pasted alone).
    items = [part.strip() for part in value.split(",")]
    for number, item in enumerate(items, 1):
        if item and not _HEADER_ITEM.match(item):
            raise ConfigError(
                f"{name} has an item that is not name=value (item {number} of {len(items)}, "
                "not shown: it may be a secret): write name=value pairs separated by commas, "
                "for example Authorization=Bearer%20<token>."
            )
    headers = parse_env_headers(value, liberal=True)
    for header, header_value in headers.items():
        if not _HEADER_VALUE.fullmatch(header_value):
            raise ConfigError(
                f"{name} has a value for {header} with a line break, a control character or "
                "a character that is not Latin-1 once %-decoded (not shown: it may be a "
                "secret): an HTTP header cannot carry it. Write the value again on one line; "
                "encode only a space (%20) and a comma (%2C)."
            )
    _check_basic_auth(name, headers.get("authorization", ""))
    return headers


def credentials_in(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` (names in lower case) carry a credential."""
    return any(name in CREDENTIAL_HEADERS for name in headers)


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
        f"{source} is a plain http:// URL to {parts.hostname}, and the credentials would be sent "
        f"in clear text: use https://, or set {ALLOW_INSECURE}=true if the network is trusted."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
