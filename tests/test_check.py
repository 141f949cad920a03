"""`pipecat-grafana check` against local servers: accepted, 401/403, 404, refused, DNS, TLS, hung.

Every test runs in an empty working directory (no stray .env), bounds the check with a short
timeout, and greps the whole output for the token and the Authorization value: a check must
never print either.
"""

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana.commands import check
from pipecat_grafana.endpoints import basic_auth
from pipecat_grafana.instruments import CALLS

INSTANCE_ID = "123456"
TOKEN = "glc_" + "test-secret-token-4f9a7c"  # fake
AUTHORIZATION = basic_auth(INSTANCE_ID, TOKEN)
TIMEOUT_S = 2.0
# The check's answer must come within its timeout and a little slack (thread start, grace).
BOUND_S = TIMEOUT_S + 1.5


@pytest.fixture(autouse=True)
def empty_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def grafana_cloud(monkeypatch, base_url: str) -> None:
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, base_url)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, INSTANCE_ID)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, TOKEN)


def run_check(capsys, **overrides) -> tuple[int, str, float]:
    args = argparse.Namespace(**{"timeout": TIMEOUT_S, "service_name": None, **overrides})
    started = time.monotonic()
    status = check.run(args)
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert TOKEN not in output
    assert AUTHORIZATION not in output
    assert AUTHORIZATION.split(" ", 1)[1] not in output
    return status, output, elapsed


def test_accepted(monkeypatch, capsys, receiver):
    # The receiver serves /v1/metrics, where the shortcut appends it to the base URL.
    grafana_cloud(monkeypatch, receiver.endpoint)

    status, output, elapsed = run_check(capsys)

    assert status == 0
    assert "Accepted" in output
    assert elapsed < BOUND_S
    # The configuration as the exporter resolves it, masked.
    assert f"{receiver.metrics_url}" in output
    assert cfg.GRAFANA_CLOUD_OTLP_ENDPOINT in output
    assert "set (masked)" in output
    # What to look for in Grafana.
    assert f'{check.CHECK_PROMETHEUS_NAME}{{job="voice-rag-bot"}}' in output
    # One request, with the credentials, carrying the check gauge and nothing of the bot's.
    (request,) = receiver.requests
    assert request.headers["authorization"] == AUTHORIZATION
    (point,) = receiver.points()
    assert (point.name, point.kind, point.value) == (check.CHECK_METRIC, "gauge", 1)
    assert point.unit == check.CHECK_UNIT
    assert point.resource["service.name"] == "voice-rag-bot"
    assert CALLS.name not in receiver.names()


def test_service_name_option_and_environment(monkeypatch, capsys, receiver):
    grafana_cloud(monkeypatch, receiver.endpoint)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=support")

    status, output, _ = run_check(capsys, service_name="billing-bot")

    assert status == 0
    (point,) = receiver.points()
    assert point.resource["service.name"] == "billing-bot"
    assert f'{check.CHECK_PROMETHEUS_NAME}{{job="support/billing-bot"}}' in output


@pytest.mark.parametrize("status_code", [401, 403])
def test_bad_credentials(monkeypatch, capsys, receiver, log_lines, status_code):
    grafana_cloud(monkeypatch, receiver.endpoint)
    receiver.respond_with(status_code)

    status, output, elapsed = run_check(capsys)
    # Said once, in plain words: the exporter's own line for the attempt is dropped.
    assert not [line for line in log_lines if "Failed to export" in line]

    assert status == 1
    assert f"rejected the credentials ({status_code})" in output
    assert cfg.GRAFANA_CLOUD_INSTANCE_ID in output and "numeric instance ID" in output
    assert "metrics:write" in output
    assert "OpenTelemetry > Configure" in output
    assert elapsed < BOUND_S
    assert receiver.attempts == 1  # no retries: 401/403 are final


def test_bad_credentials_from_otel_headers_say_where_they_come_from(monkeypatch, capsys, receiver):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization={AUTHORIZATION}")
    receiver.respond_with(401)

    status, output, _ = run_check(capsys)

    assert status == 1
    assert f"come from {cfg.OTEL_EXPORTER_OTLP_HEADERS}" in output
    # A plain OTLP endpoint: its own credentials, not Grafana Cloud's variables.
    assert "GRAFANA_CLOUD" not in output.split("Sending", 1)[1]


def test_no_credentials_at_all(monkeypatch, capsys, receiver):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    receiver.respond_with(401)

    status, output, _ = run_check(capsys)

    assert status == 1
    assert "No credentials are sent" in output
    assert f"in {cfg.OTEL_EXPORTER_OTLP_HEADERS}" in output
    assert "GRAFANA_CLOUD" not in output.split("Sending", 1)[1]


def test_wrong_url(monkeypatch, capsys, receiver):
    # Grafana Cloud's endpoint without /otlp, or another path: the receiver answers 404.
    grafana_cloud(monkeypatch, receiver.endpoint + "/otlp-wrong")

    status, output, elapsed = run_check(capsys)

    assert status == 1
    assert "was not found (404" in output
    assert "https://otlp-gateway-<zone>.grafana.net/otlp" in output
    assert f"{cfg.GRAFANA_CLOUD_OTLP_ENDPOINT} should end in /otlp" in output
    assert elapsed < BOUND_S


def test_base_url_with_the_metrics_path_is_accepted_with_a_warning(monkeypatch, capsys, receiver):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.metrics_url)

    status, output, _ = run_check(capsys)

    assert status == 0
    assert len(receiver.requests) == 1  # at /v1/metrics, not /v1/metrics/v1/metrics
    (warning,) = [line for line in output.splitlines() if "Warning" in line]
    assert cfg.OTEL_EXPORTER_OTLP_ENDPOINT in warning and "base URL" in warning


def test_wrong_full_metrics_url_is_not_said_to_get_the_path_appended(monkeypatch, capsys, receiver):
    # The signal-specific variable is used as is: nothing is appended to it.
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, receiver.endpoint + "/otlp")

    status, output, _ = run_check(capsys)

    assert status == 1
    assert "was not found (404" in output
    assert "appends" not in output
    assert f"{cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT} is used as is" in output


def test_refused_port(monkeypatch, capsys, log_lines):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    grafana_cloud(monkeypatch, f"http://127.0.0.1:{port}/otlp")

    status, output, elapsed = run_check(capsys)

    assert status == 1
    assert "cannot connect" in output and "refused" in output
    assert elapsed < BOUND_S
    assert not [line for line in log_lines if "export" in line.lower()]


def test_zero_exporter_timeout_is_refused_not_taken_for_a_timeout(monkeypatch, capsys, receiver):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "0")

    status, output, _ = run_check(capsys)

    # The bot would export with the default timeout: so does the check, and it says so.
    assert status == check.EXIT_NOT_CONFIGURED
    (warning,) = [line for line in output.splitlines() if line.startswith("Warning:")]
    assert f"{cfg.OTEL_EXPORTER_OTLP_TIMEOUT}='0'" in warning
    assert "Using the default, 10 s" in warning
    assert "Accepted" in output and "no answer" not in output
    assert len(receiver.requests) == 1
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith(f"Misconfigured: {cfg.OTEL_EXPORTER_OTLP_TIMEOUT} refused")
    )


def test_server_that_never_answers(monkeypatch, capsys, receiver):
    grafana_cloud(monkeypatch, receiver.endpoint)
    receiver.hang()

    status, output, elapsed = run_check(capsys, timeout=1.0)

    assert status == 1
    assert "no answer within 1 s" in output
    assert 1.0 <= elapsed < 1.0 + 1.5
    assert receiver.attempts == 1  # one request: the exporter's retries were stopped


def test_host_that_does_not_resolve(monkeypatch, capsys):
    # .invalid never resolves (RFC 6761).
    grafana_cloud(monkeypatch, "https://otlp-gateway-prod-nowhere-1.grafana.invalid/otlp")

    status, output, elapsed = run_check(capsys)

    assert status == 1
    assert "does not resolve (DNS)" in output
    assert elapsed < BOUND_S


@pytest.fixture
def untrusted_tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_untrusted_certificate(monkeypatch, capsys, untrusted_tls_server):
    grafana_cloud(monkeypatch, untrusted_tls_server)

    status, output, elapsed = run_check(capsys)

    assert status == 1
    assert "TLS failed" in output
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in output
    assert elapsed < BOUND_S


def test_missing_ca_file_names_its_variable(monkeypatch, capsys, untrusted_tls_server):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, untrusted_tls_server)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_CERTIFICATE, "/nonexistent/ca.pem")

    status, output, _ = run_check(capsys)

    assert status == 2
    assert f"{cfg.OTEL_EXPORTER_OTLP_CERTIFICATE}='/nonexistent/ca.pem'" in output
    assert "no answer" not in output


def test_missing_ca_bundle_of_requests_is_named_not_called_a_timeout(
    monkeypatch, capsys, untrusted_tls_server
):
    # requests' own variable, which this package does not resolve: the request fails
    # before a connection is made, and the check must say why.
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, untrusted_tls_server)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")

    status, output, elapsed = run_check(capsys)

    assert status == 1
    assert "REQUESTS_CA_BUNDLE" in output and cfg.OTEL_EXPORTER_OTLP_CERTIFICATE in output
    assert "no answer" not in output
    assert elapsed < BOUND_S


def test_no_endpoint_says_export_is_off_and_how_to_configure(capsys):
    status, output, _ = run_check(capsys)

    assert status == 2
    assert "export is off" in output
    for name in (
        cfg.GRAFANA_CLOUD_OTLP_ENDPOINT,
        cfg.GRAFANA_CLOUD_INSTANCE_ID,
        cfg.GRAFANA_CLOUD_API_TOKEN,
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT,
    ):
        assert name in output


def test_configuration_mistake_is_one_line_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, "https://otlp-gateway-x.grafana.net/otlp")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, TOKEN)

    status, output, _ = run_check(capsys)

    assert status == 2
    (line,) = output.strip().splitlines()
    assert line.startswith("pipecat-grafana: configuration error:")
    assert cfg.GRAFANA_CLOUD_INSTANCE_ID in line
    assert "Traceback" not in output


def test_a_missing_ca_file_is_a_configuration_error(monkeypatch, capsys, receiver):
    # Whom to trust has no default to fall back to: export is off, and the check says why.
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_CERTIFICATE, "/nonexistent/ca.pem")

    status, output, _ = run_check(capsys)

    assert status == 2
    (line,) = output.strip().splitlines()
    assert line.startswith(
        f"pipecat-grafana: configuration error: {cfg.OTEL_EXPORTER_OTLP_CERTIFICATE}"
    )
    assert not receiver.requests


@pytest.mark.parametrize(
    ("variable", "value", "default"),
    [
        (cfg.OTEL_METRIC_EXPORT_INTERVAL, "1e300", "10000 ms"),
        (cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "abc", "10 s"),
        (cfg.OTEL_EXPORTER_OTLP_COMPRESSION, "brotli", "none"),
        (cfg.OTEL_EXPORTER_OTLP_PROTOCOL, "grpc", "http/protobuf"),
        (cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "http/json", "http/protobuf"),
        (cfg.OTEL_RESOURCE_ATTRIBUTES, "a=1,broken", "no attribute from that item"),
        (cfg.HISTOGRAMS, "exponential", "classic"),
        (cfg.MAX_LABEL_VALUES, "\u00b2", "100"),
        (cfg.CALL_ID_LABEL, "maybe", "true"),
    ],
)
def test_a_refused_setting_is_named_with_its_default_and_the_check_exits_2(
    monkeypatch, capsys, receiver, variable, value, default
):
    # The bot would warn and go on with the default: the check sends as the bot would, names
    # the setting, its value and the default, and exits 2 so that a script notices.
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(variable, value)

    status, output, _ = run_check(capsys)

    assert status == check.EXIT_NOT_CONFIGURED
    (warning,) = [line for line in output.splitlines() if variable in line and "Warning" in line]
    assert f"Using the default, {default}" in warning
    assert "Accepted" in output
    assert len(receiver.requests) == 1
    assert f"Misconfigured: {variable} refused" in output


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read"),
        ("[" * 100_000, "nested too deeply"),
        ('{"m": {"input": 1' + "0" * 4300 + ', "output": 1}}', "cannot be read as JSON"),
        ('{"m": {"input": 1e308, "output": 1}}', "not a plausible price"),
    ],
)
def test_the_price_file_is_checked(monkeypatch, capsys, receiver, tmp_path, content, problem):
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv("PIPECAT_GRAFANA_PRICES_FILE", str(path))

    status, output, _ = run_check(capsys)

    assert status == check.EXIT_NOT_CONFIGURED
    (line,) = output.strip().splitlines()
    assert line.startswith("pipecat-grafana: configuration error: PIPECAT_GRAFANA_PRICES_FILE=")
    assert problem in line
    assert len(line) < 1000
    assert not receiver.requests


def forget_after_test(monkeypatch, *names: str) -> None:
    """Make monkeypatch remove variables that .env loading will set behind its back."""
    for name in names:
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)


def test_reads_dot_env_without_overriding_the_environment(
    monkeypatch, capsys, receiver, empty_directory
):
    names = (cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, cfg.GRAFANA_CLOUD_INSTANCE_ID)
    forget_after_test(monkeypatch, *names)
    (empty_directory / ".env").write_text(
        f"{cfg.GRAFANA_CLOUD_OTLP_ENDPOINT}={receiver.endpoint}\n"
        f"{cfg.GRAFANA_CLOUD_INSTANCE_ID}={INSTANCE_ID}\n"
        f"{cfg.GRAFANA_CLOUD_API_TOKEN}=glc_the-one-in-dot-env\n"
    )
    # Already set: wins over .env.
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, TOKEN)

    status, output, _ = run_check(capsys)

    assert status == 0
    assert "./.env and the environment" in output
    assert receiver.requests[0].headers["authorization"] == AUTHORIZATION
    assert "glc_the-one-in-dot-env" not in output


def test_command_line_help_and_configuration_errors(tmp_path):
    """The console script's entry point: --help with examples, no traceback for a mistake."""
    help_run = subprocess.run(
        [sys.executable, "-m", "pipecat_grafana.cli", "check", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_run.returncode == 0
    assert "examples:" in help_run.stdout and "--timeout" in help_run.stdout

    env = {
        **os.environ,  # without our variables: the autouse fixture removed them
        cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "otlp-gateway-prod-eu-west-2.grafana.net/otlp",
        cfg.GRAFANA_CLOUD_INSTANCE_ID: INSTANCE_ID,
        cfg.GRAFANA_CLOUD_API_TOKEN: TOKEN,
    }
    mistake = subprocess.run(
        [sys.executable, "-m", "pipecat_grafana.cli", "check", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert mistake.returncode == 2
    assert "Traceback" not in mistake.stderr
    assert f"{cfg.GRAFANA_CLOUD_OTLP_ENDPOINT}=" in mistake.stderr
    assert "is not an http(s) URL" in mistake.stderr
    assert TOKEN not in mistake.stdout + mistake.stderr


def test_check_sends_a_log_record_and_a_span_with_the_same_credentials(
    monkeypatch, capsys, receiver
):
    grafana_cloud(monkeypatch, receiver.endpoint)
    monkeypatch.setenv(cfg.TRACES, "true")

    status, output, _ = run_check(capsys)

    assert status == 0
    assert "Accepted: metrics, logs, traces." in output
    (record,) = receiver.logs
    assert record.attributes["event_name"] == check.CHECK_EVENT
    assert record.resource["service.name"] == "voice-rag-bot"
    (span,) = receiver.spans
    assert span.name == check.CHECK_EVENT


@pytest.mark.parametrize("signal", ["logs", "traces"])
@pytest.mark.parametrize("status_code", [401, 403])
def test_a_token_without_a_scope_is_named(monkeypatch, capsys, receiver, signal, status_code):
    grafana_cloud(monkeypatch, receiver.endpoint)
    monkeypatch.setenv(cfg.TRACES, "true")
    receiver.respond_to(signal, status_code)

    status, output, elapsed = run_check(capsys)

    assert status == check.EXIT_FAILED
    assert elapsed < 2 * BOUND_S
    assert f"{signal}:write scope" in output
    written = [s for s in ("metrics", "logs", "traces") if s != signal]
    assert f"Accepted: {', '.join(written)}." in output
    assert f"Failed: {signal}." in output and f"{check.SWITCH[signal]}=false" in output


def test_both_credentials_set_say_which_wins_and_where_the_authorization_comes_from(
    monkeypatch, capsys, receiver
):
    grafana_cloud(monkeypatch, receiver.endpoint)
    other = basic_auth("999999", "glc_" + "another-token")  # fake
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization={other}")

    status, output, _ = run_check(capsys)

    assert status == 0
    assert f"set (masked), from {cfg.GRAFANA_CLOUD_AUTH}" in output
    assert f"Warning: {cfg.OTEL_EXPORTER_OTLP_HEADERS} is set too and is not used" in output
    assert other not in output and other.split(" ", 1)[1] not in output
    # What was said is what was sent: the shortcut's header.
    (request,) = receiver.requests
    assert request.headers["authorization"] == AUTHORIZATION


def test_a_401_with_the_header_variable_is_explained_with_that_variable(
    monkeypatch, capsys, receiver
):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_METRICS_HEADERS, f"Authorization={AUTHORIZATION}")
    receiver.respond_with(401)

    status, output, _ = run_check(capsys)

    assert status == 1
    assert f"set (masked), from {cfg.OTEL_EXPORTER_OTLP_METRICS_HEADERS}" in output
    (failed,) = [line for line in output.splitlines() if line.startswith("Failed:")]
    assert f"rejected the credentials (401) of {cfg.OTEL_EXPORTER_OTLP_METRICS_HEADERS}" in failed
    assert cfg.GRAFANA_CLOUD_INSTANCE_ID not in output  # not the variables it did not use


@pytest.mark.parametrize("form", ["Authorization=Basic {}", "Authorization=Basic%20{}"])
def test_an_unencoded_basic_header_is_caught_before_sending(monkeypatch, capsys, receiver, form):
    plain = f"{INSTANCE_ID}:{TOKEN}"
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, form.format(plain))

    status, output, _ = run_check(capsys)

    assert status == check.EXIT_NOT_CONFIGURED
    assert f"{cfg.OTEL_EXPORTER_OTLP_HEADERS} has Authorization=Basic" in output
    assert "unencoded" in output and "base64" in output
    assert TOKEN not in output
    assert receiver.attempts == 0
