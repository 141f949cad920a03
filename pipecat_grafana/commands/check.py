"""``pipecat-grafana check``: does the configured endpoint accept our metrics?

A bot with a wrong token, a wrong URL or no route to Grafana Cloud runs fine and
exports nothing; the exporter says so in its log, but only once a call is under
way. This command answers the question before any call: it resolves the
configuration exactly as ``GrafanaMetricsExporter`` does (``.env`` included),
shows it with secrets masked, sends one small OTLP request through the same
exporter machinery, and says in plain words whether it was accepted and, if not,
what to change.

The request carries one gauge, ``pipecat_grafana.check`` = 1, under the bot's
``service.name``. A gauge of its own rather than one of the bot's series: it
appears in Grafana as ``pipecat_grafana_check``, where it shows that the check got
through, and it adds no series (not even zeros) to the call and cost panels.
"""

import argparse
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipecat_grafana import __version__
from pipecat_grafana import config as cfg
from pipecat_grafana.commands._arguments import positive
from pipecat_grafana.instruments import METER_NAME, Kind, prometheus_name
from pipecat_grafana.otlp import (
    FailureLog,
    Outcome,
    OutcomeSession,
    build_client,
    build_log_client,
    build_span_client,
    explain,
    explain_not_served,
    is_grafana_cloud,
    serves_no,
)
from pipecat_grafana.pricing import PriceFileError, PriceTable
from pipecat_grafana.resource import default_resource
from pipecat_grafana.scrape_config import ScrapeConfig, resolve_scrape

CHECK_METRIC = "pipecat_grafana.check"
CHECK_EVENT = "pipecat_grafana_check"
CHECK_UNIT = "{check}"
CHECK_DESCRIPTION = "Set to 1 by `pipecat-grafana check` each time it tests the connection."
# Gauges are named like up-down counters: no _total, and a unit in braces adds nothing.
CHECK_PROMETHEUS_NAME = prometheus_name(CHECK_METRIC, CHECK_UNIT, Kind.UP_DOWN_COUNTER)

DEFAULT_TIMEOUT_S = 10.0
EXIT_ACCEPTED = 0
EXIT_FAILED = 1
EXIT_NOT_CONFIGURED = 2

_GRAFANA_ENDPOINT_EXAMPLE = "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp"

EXAMPLES = f"""\
examples:
  pipecat-grafana check                    use ./.env and the environment, as the bot does
  pipecat-grafana check --timeout 3        give up after 3 seconds
  pipecat-grafana check --service-name billing-bot
                                           send the test metric as another bot

Grafana Cloud: in the portal (grafana.com > My Account), open your stack, then
OpenTelemetry > Configure. Set, in .env or the environment:
  {cfg.GRAFANA_CLOUD_OTLP_ENDPOINT}   the OTLP endpoint, e.g. {_GRAFANA_ENDPOINT_EXAMPLE}
  {cfg.GRAFANA_CLOUD_INSTANCE_ID}     the numeric instance ID shown there
  {cfg.GRAFANA_CLOUD_API_TOKEN}       a token with the metrics:write scope

exit status: 0 accepted (logs and traces accepted, or not supported by the endpoint; or
nothing to push: the scrape endpoint alone), 1 rejected or unreachable, 2 not configured
or misconfigured.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check`` subcommand."""
    parser = subparsers.add_parser(
        "check",
        help="test the connection to Grafana Cloud with one small metrics request",
        description="Resolve the export configuration exactly as the exporter does (./.env "
        "included, variables already set win), print it with secrets masked, send one small "
        "OTLP metrics request and say whether it was accepted, and if not, what to fix.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--timeout",
        type=positive("number of seconds"),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"longest wait for the answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--service-name",
        default=None,
        help="service.name to send the test metric under (default OTEL_SERVICE_NAME, "
        "else voice-rag-bot, as the exporter)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``pipecat-grafana check``; returns the exit status.

    The report goes to standard output; a configuration mistake is one line on
    standard error.
    """
    env_file = cfg.load_env_file()
    try:
        config = cfg.resolve()
        scrape = resolve_scrape()
        # The price file: the bot would log an ERROR at every start and use the defaults.
        PriceTable()
    except (cfg.ConfigError, PriceFileError) as e:
        print(f"pipecat-grafana: configuration error: {e}", file=sys.stderr)
        return EXIT_NOT_CONFIGURED
    refused = [*config.refused, *([cfg.MAX_LABEL_VALUES] if _refused_label_settings() else [])]
    resource = default_resource(args.service_name or None)

    source = "./.env and the environment" if env_file else "the environment (no ./.env found)"
    print(f"Configuration, resolved from {source} as the exporter resolves it:")
    shown = {
        **config.describe(scrape.url if scrape else None),
        "service.name": str(resource.attributes["service.name"]),
    }
    for key, value in shown.items():
        print(f"  {key:<16} {value}")
    for notice in config.notices:
        print(f"Warning: {notice}")
    for notice in _refused_label_settings():
        print(f"Warning: {notice}")
    print("")
    status = _run_checks(args, config, scrape, resource)
    if refused and status != EXIT_NOT_CONFIGURED:
        print("")
        print(
            f"Misconfigured: {', '.join(refused)} refused (said above, with the default the "
            "bot uses instead). Fix or unset them."
        )
        return EXIT_NOT_CONFIGURED
    return status


def _refused_label_settings() -> list[str]:
    """What the exporter refuses of the label settings it reads besides ``cfg.resolve``."""
    try:
        cfg.max_label_values(None)
    except cfg.ConfigError as e:
        return [f"{e} Using the default, {cfg.DEFAULT_MAX_LABEL_VALUES}."]
    return []


def _run_checks(
    args: argparse.Namespace,
    config: cfg.ExportConfig,
    scrape: ScrapeConfig | None,
    resource: Resource,
) -> int:
    """Send the test metric (and record and span) and say what came of it."""
    if not config.enabled and scrape is not None:
        print(f"Nothing is pushed (no OTLP endpoint): the bot serves its metrics at {scrape.url}")
        print("for Prometheus to scrape while it runs, so there is no connection to test from")
        print(f"here. To push to Grafana Cloud as well, set {cfg.GRAFANA_CLOUD_OTLP_ENDPOINT},")
        print(f"{cfg.GRAFANA_CLOUD_INSTANCE_ID} and {cfg.GRAFANA_CLOUD_API_TOKEN}.")
        return EXIT_ACCEPTED
    if not config.enabled:
        print("Metrics export is off: no OTLP endpoint and no scrape endpoint are configured.")
        print("For Grafana Cloud, set in ./.env or the environment (portal: My Account > your")
        print("stack > OpenTelemetry > Configure):")
        print(f"  {cfg.GRAFANA_CLOUD_OTLP_ENDPOINT}={_GRAFANA_ENDPOINT_EXAMPLE}")
        print(f"  {cfg.GRAFANA_CLOUD_INSTANCE_ID}=<the stack's numeric instance ID>")
        print(f"  {cfg.GRAFANA_CLOUD_API_TOKEN}=<a token with the metrics:write scope>")
        print(f"or, for any OTLP backend, {cfg.OTEL_EXPORTER_OTLP_ENDPOINT} (and")
        print(f"{cfg.OTEL_EXPORTER_OTLP_HEADERS} for credentials). Then run this check again.")
        print(f"For a Prometheus that scrapes the bot, set {cfg.PROMETHEUS_PORT} instead.")
        return EXIT_NOT_CONFIGURED

    print(f"Sending one test metric ({CHECK_METRIC} = 1) to {config.endpoint} ...")
    session = _FirstAnswer(args.timeout)
    outcome, elapsed = send_test_signal(
        "metrics", config, resource, timeout_s=args.timeout, session=session
    )
    if not outcome.ok:
        problem = explain(
            outcome,
            str(config.endpoint),
            source=config.endpoint_source,
            timeout_s=args.timeout,
            auth_source=config.auth_source,
        )
        print(f"Failed: {problem}.")
        for hint in _hints(outcome, config):
            print(f"  - {hint}")
        return EXIT_FAILED
    print(f"Accepted: the endpoint took the test metric (HTTP {outcome.status}, {elapsed:.2f} s).")
    dotted = _dotted_names(config, session.server_headers, timeout_s=args.timeout)
    writes, refused, unserved = ["metrics"], [], []
    for signal, endpoint, what in (
        ("logs", config.logs_endpoint, "call summaries"),
        ("traces", config.traces_endpoint, "traces"),
    ):
        if endpoint is None:
            continue
        print(f"Sending one test {TEST_RECORD[signal]} ({what}) to {endpoint} ...")
        outcome, elapsed = send_test_signal(signal, config, resource, timeout_s=args.timeout)
        if outcome.ok:
            print(f"Accepted (HTTP {outcome.status}, {elapsed:.2f} s).")
            writes.append(signal)
        elif serves_no(outcome, signal):
            # A backend without this pipeline: the bot turns the signal off by itself.
            print(f"Not supported here: {explain_not_served(endpoint, outcome.status, signal)}.")
            unserved.append(signal)
        else:
            problem = explain(
                outcome,
                endpoint,
                timeout_s=args.timeout,
                signal=signal,
                auth_source=config.auth_source,
            )
            print(f"Failed: {problem}.")
            refused.append(signal)
    print("")
    print(f"Accepted: {', '.join(writes)}.")
    if unserved:
        print(
            f"Not supported by this endpoint: {', '.join(unserved)} (the bot says so once and "
            "goes on without them; metrics are not affected)."
        )
    if refused:
        scopes = ", ".join(f"{signal}:write" for signal in refused)
        print(
            f"Failed: {', '.join(refused)}. With Grafana Cloud, give the access policy the "
            f"scope(s) {scopes} in the portal; or switch them off "
            f"({', '.join(SWITCH[s] for s in refused)}=false)."
        )
        return EXIT_FAILED
    print("")
    if dotted:
        for line in dotted:
            print(line)
        print("")
    for line in _next_steps(config, resource):
        print(line)
    return EXIT_ACCEPTED


def send_test_metric(
    config: cfg.ExportConfig, resource: Resource, *, timeout_s: float
) -> tuple[Outcome, float]:
    """Send one request with the test gauge through the exporter the bot uses.

    The OTel exporter retries for up to its own timeout; a check reports the
    first answer instead, and gives up after ``timeout_s``, stopping the retries.

    Returns:
        How the request ended, and how long it took, in seconds.
    """
    return send_test_signal("metrics", config, resource, timeout_s=timeout_s)


TEST_RECORD = {"metrics": "metric", "logs": "log record", "traces": "span"}
SWITCH = {"logs": cfg.LOGS, "traces": cfg.TRACES}


def send_test_signal(
    signal: str,
    config: cfg.ExportConfig,
    resource: Resource,
    *,
    timeout_s: float,
    session: "_FirstAnswer | None" = None,
) -> tuple[Outcome, float]:
    """Send one test metric, log record or span through the client the bot uses.

    Returns:
        How the request ended, and how long it took, in seconds.
    """
    session = session or _FirstAnswer(timeout_s)
    exporter: OTLPMetricExporter | OTLPLogExporter | OTLPSpanExporter
    data: Any
    if signal == "metrics":
        endpoint, exporter = str(config.endpoint), build_client(config, session)
        data = _test_metric(resource)
    elif signal == "logs":
        endpoint = str(config.logs_endpoint)
        exporter = build_log_client(endpoint, config, session)
        data = _test_log_record(resource)
    else:
        endpoint = str(config.traces_endpoint)
        exporter = build_span_client(endpoint, config, session)
        data = _test_span(resource)

    def export() -> None:
        # FailureLog's context drops the exporter's own log line for each failed
        # attempt ("Failed to export metrics batch code: 401"), on this thread only:
        # the check says the same in plain words, once.
        try:
            with FailureLog(endpoint, session, signal=signal):
                exporter.export(data)
        except Exception as e:  # any failure before an answer is the answer
            # Raised before a request was sent (a header requests refuses, say, or a CA
            # bundle that is not there, which exporters before 1.45 let escape): said as
            # what it is, at once, not as a host that did not answer.
            if session.last is None:
                session.last = Outcome(None, e)
        finally:
            session.answered.set()

    started = time.monotonic()
    threading.Thread(target=export, name="pipecat-grafana-check", daemon=True).start()
    answered = session.answered.wait(timeout_s)
    elapsed = time.monotonic() - started
    # Stops the retries; a request still in flight ends by its own timeout, on the
    # daemon thread.
    exporter.shutdown()
    if not answered or session.last is None:
        return Outcome(None, requests.exceptions.Timeout()), elapsed
    return session.last, elapsed


class _FirstAnswer(OutcomeSession):
    """Lets one request through, bounded by the check's timeout, and signals its end."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.answered = threading.Event()
        self._timeout_s = timeout_s
        self.server_headers: dict[str, str] = {}
        """The headers of the answer, lower-cased: what kind of server answered."""

    def send(self, request, **kwargs):  # noqa: D102 - see requests.Session.send
        if self.answered.is_set():
            # One request: the exporter's retries would only repeat the answer.
            raise requests.exceptions.ConnectionError("the check sends one request only")
        timeout = kwargs.get("timeout")
        if not isinstance(timeout, int | float) or timeout > self._timeout_s:
            kwargs["timeout"] = self._timeout_s
        try:
            response = super().send(request, **kwargs)
            self.server_headers = {k.lower(): v for k, v in response.headers.items()}
            return response
        finally:
            self.answered.set()


def _test_metric(resource: Resource) -> MetricsData:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
    gauge = provider.get_meter(METER_NAME, __version__).create_gauge(
        CHECK_METRIC, unit=CHECK_UNIT, description=CHECK_DESCRIPTION
    )
    gauge.set(1)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None  # the gauge was set
    return data


def _test_log_record(resource: Resource) -> list:
    records = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(records))
    provider.get_logger(METER_NAME, __version__).emit(
        body="pipecat-grafana check: a test record", attributes={"event_name": CHECK_EVENT}
    )
    provider.shutdown()
    return list(records.get_finished_logs())


def _test_span(resource: Resource) -> list:
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # not the global one
    provider.add_span_processor(SimpleSpanProcessor(spans))
    provider.get_tracer(METER_NAME, __version__).start_span(CHECK_EVENT).end()
    provider.shutdown()
    return list(spans.get_finished_spans())


def _job(resource: Resource) -> str:
    # Grafana Cloud (Mimir) makes the job label from service.namespace/service.name.
    name = str(resource.attributes["service.name"])
    namespace = resource.attributes.get("service.namespace")
    return f"{namespace}/{name}" if namespace else name


def backend_of(config: cfg.ExportConfig) -> str | None:
    """Which kind of backend the metrics URL is, where its shape says so.

    Each answers at a path of its own: VictoriaMetrics (and vmagent) at
    ``/opentelemetry/v1/metrics``, Prometheus' OTLP receiver at ``/api/v1/otlp/v1/metrics``,
    Grafana Cloud on ``grafana.net``. A collector's ``/v1/metrics`` says nothing of what is
    behind it: ``None``.
    """
    url = urlsplit(config.endpoint or "")
    if config.endpoint_source == cfg.GRAFANA_CLOUD_OTLP_ENDPOINT or (url.hostname or "").endswith(
        ".grafana.net"
    ):
        return "grafana-cloud"
    if url.path.rstrip("/").endswith("/opentelemetry/v1/metrics"):
        return "victoriametrics"
    if url.path.rstrip("/").endswith("/api/v1/otlp/v1/metrics"):
        return "prometheus"
    return None


def service_selectors(config: cfg.ExportConfig, resource: Resource) -> list[str]:
    """The label matchers that pick this service's series on the backend at hand.

    Grafana Cloud (Mimir) and Prometheus' OTLP receiver make ``job`` from
    ``service.namespace/service.name``; VictoriaMetrics keeps every resource attribute as a
    label and makes no ``job``. Behind a collector either may answer: both, ``job`` first.
    """
    job = f'job="{_job(resource)}"'
    service = str(resource.attributes["service.name"])
    kept = f'service_name="{service}"'
    if namespace := resource.attributes.get("service.namespace"):
        kept += f', service_namespace="{namespace}"'
    backend = backend_of(config)
    if backend is None:
        return [job, kept]
    return [kept] if backend == "victoriametrics" else [job]


def _next_steps(config: cfg.ExportConfig, resource: Resource) -> list[str]:
    selectors = service_selectors(config, resource)
    where = {
        "grafana-cloud": "your stack's Prometheus data source (grafanacloud-<stack>-prom)",
        "victoriametrics": "the VictoriaMetrics data source (Prometheus type)",
        "prometheus": "the Prometheus data source",
    }.get(backend_of(config) or "", "the data source of the metrics database behind the endpoint")
    which = (
        ["(the first on Grafana Cloud, Mimir and Prometheus, the second on VictoriaMetrics)"]
        if len(selectors) > 1
        else []
    )
    selector = selectors[0]
    return [
        f"Next, in Grafana: Explore > {where}, code mode.",
        "The test metric shows within a minute:",
        *(f"  {CHECK_PROMETHEUS_NAME}{{{s}}}" for s in selectors),
        *which,
        "Then run a call (`pipecat-grafana demo`, or your bot) and look for its metrics:",
        f"  sum by (token_type) (voice_llm_tokens_total{{{selector}}})",
        f"  sum(voice_calls_total{{{selector}}})",
    ]


def _hints(outcome: Outcome, config: cfg.ExportConfig) -> list[str]:
    """What to look at for this failure, given where the configuration came from."""
    hints = []
    source = config.endpoint_source
    if outcome.status in (401, 403):
        if not is_grafana_cloud(config.endpoint or "", config.auth_source):
            # Another backend: its own credentials, in the header it expects.
            hints.append(
                "No credentials are sent: set the header the backend expects in "
                f"{cfg.OTEL_EXPORTER_OTLP_HEADERS}, for example Authorization=Bearer%20<token>."
                if not config.has_auth
                else f"The credentials come from {config.auth_source}: check them, and the "
                f"header name, with whoever runs the backend ({cfg.OTEL_EXPORTER_OTLP_HEADERS} "
                "takes any header: Authorization=Bearer%20<token>, X-Api-Key=<key>)."
            )
            return hints
        if not config.has_auth:
            hints.append(
                "No Authorization header is sent: set "
                f"{cfg.GRAFANA_CLOUD_INSTANCE_ID} and {cfg.GRAFANA_CLOUD_API_TOKEN}."
            )
        elif config.auth_source != cfg.GRAFANA_CLOUD_AUTH:
            hints.append(
                f"The Authorization header comes from {config.auth_source}: it must "
                "be Authorization=Basic%20<base64 of instanceID:token>; or use "
                f"{cfg.GRAFANA_CLOUD_INSTANCE_ID} and {cfg.GRAFANA_CLOUD_API_TOKEN}, which "
                "build it for you."
            )
        hints.append(
            "In the portal, My Account > your stack > OpenTelemetry > Configure shows the "
            "instance ID and the endpoint, and can generate a token with metrics:write."
        )
    elif outcome.status == 404:
        endpoint = config.endpoint or ""
        if source == cfg.GRAFANA_CLOUD_OTLP_ENDPOINT and not endpoint.endswith("/otlp/v1/metrics"):
            hints.append(f"{source} should end in /otlp, for example {_GRAFANA_ENDPOINT_EXAMPLE}.")
        hints.append(
            f"The URL comes from {source}. Copy the endpoint from the portal: My Account > "
            "your stack > OpenTelemetry > Configure."
        )
    elif isinstance(outcome.error, requests.exceptions.SSLError):
        hints.append(
            "A proxy or firewall that inspects HTTPS presents its own certificate: point "
            "OTEL_EXPORTER_OTLP_CERTIFICATE to its CA bundle (PEM)."
        )
    elif isinstance(outcome.error, requests.RequestException):
        # A network error; a missing CA bundle (a bare OSError) is explained in full.
        hints.append(
            "Check the host name and port (copy the endpoint from the portal), that this "
            "machine can reach the internet (behind a proxy, set HTTPS_PROXY), and that a "
            "firewall allows outgoing HTTPS."
        )
    return hints


_VM_PATHS = ("/opentelemetry/v1/metrics", "/v1/metrics")
_NAMING_FLAG = "-opentelemetry.usePrometheusNaming"
_NAMING_WAIT_S = 5.0  # VictoriaMetrics makes a new series searchable within a second or two


def _dotted_names(
    config: cfg.ExportConfig, answer: dict[str, str], *, timeout_s: float
) -> list[str]:
    """What to say if VictoriaMetrics stored the test metric under its OpenTelemetry name.

    Without ``-opentelemetry.usePrometheusNaming`` VictoriaMetrics (and vmagent) keeps each
    metric's OpenTelemetry name (``voice.calls``), where the dashboard, the alert rules and
    every query of this package use Prometheus names (``voice_calls_total``). VictoriaMetrics
    is recognised by what it answers (its ``X-Server-Hostname`` header) or its OTLP path; the
    name stored is then read back from its series API, or, from a vmagent that has none, its
    flags. Empty when the names are Prometheus names, or it cannot be told.
    """
    if "x-server-hostname" not in answer and backend_of(config) != "victoriametrics":
        return []
    url = urlsplit(config.endpoint or "")
    path = next((url.path[: -len(p)] for p in _VM_PATHS if url.path.endswith(p)), None)
    if path is None:
        return []
    root = f"{url.scheme}://{url.netloc}{path}"
    stored = _stored_name(root, min(timeout_s, _NAMING_WAIT_S))
    if stored != CHECK_METRIC:
        return []
    return [
        f"Warning: VictoriaMetrics at {root} stored the test metric as {CHECK_METRIC}, its "
        f"OpenTelemetry name, not {CHECK_PROMETHEUS_NAME}: it runs without {_NAMING_FLAG}.",
        "  Every metric of the bot is then stored under its dotted name (voice.calls, not",
        "  voice_calls_total), and the dashboard, the alert rules and the queries below find",
        f"  nothing. Start VictoriaMetrics (and any vmagent in front of it) with {_NAMING_FLAG}.",
        f'  Until then the test metric is at {{__name__="{CHECK_METRIC}"}}.',
    ]


def _stored_name(root: str, wait_s: float) -> str | None:
    """The name the test metric has in the VictoriaMetrics at ``root``, if it can be told."""
    match = '{__name__=~"pipecat_grafana[._]check"}'
    deadline = time.monotonic() + wait_s
    with requests.Session() as http:
        try:
            http.get(f"{root}/internal/force_flush", timeout=wait_s)  # searchable at once
            while True:
                left = max(deadline - time.monotonic(), 0.1)
                answer = http.get(
                    f"{root}/api/v1/series",
                    params={"match[]": match, "start": f"{time.time() - 3600:.0f}"},
                    timeout=left,
                )
                if answer.status_code != 200:
                    break  # no query API here (vmagent): ask its flags
                names = {series.get("__name__") for series in answer.json().get("data", [])}
                if CHECK_METRIC in names:
                    return CHECK_METRIC
                if CHECK_PROMETHEUS_NAME in names:
                    return CHECK_PROMETHEUS_NAME
                if time.monotonic() >= deadline:
                    return None
                threading.Event().wait(0.2)  # not yet searchable
            flags = http.get(f"{root}/flags", timeout=max(deadline - time.monotonic(), 0.1))
        except (requests.RequestException, ValueError):
            return None
    if flags.status_code != 200:
        return None
    # /flags lists the flags set; unset, the naming is off.
    on = any(
        line.startswith(f"{_NAMING_FLAG}=") and "true" in line for line in flags.text.splitlines()
    )
    return CHECK_PROMETHEUS_NAME if on else CHECK_METRIC
