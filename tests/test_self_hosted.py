"""A self-hoster's backends: `check` against the real VictoriaMetrics and Prometheus.

VictoriaMetrics as it starts by default keeps OpenTelemetry's dotted names, where the
dashboard and every query use Prometheus names: `check` recognises VictoriaMetrics by what
it answers, reads back the name the test metric was stored under, and says which flag is
missing. A backend that stores Prometheus names gets no such word. A refusal is quoted in
the backend's own words, from real servers.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana.commands import check
from tests.backends import PrometheusWithAgent, VictoriaMetrics

NAMING_FLAG = "-opentelemetry.usePrometheusNaming"


@pytest.fixture(autouse=True)
def empty_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env


def run_check(capsys) -> tuple[int, str]:
    status = check.run(argparse.Namespace(timeout=5.0, service_name="self-hosted-bot"))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def point_at(monkeypatch, backend) -> None:
    base = backend.otlp_metrics_url.removesuffix("/v1/metrics")
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, base)


@pytest.mark.e2e
def test_victoria_metrics_without_prometheus_naming_is_told_the_flag(monkeypatch, capsys):
    with VictoriaMetrics(prometheus_naming=False) as vm:
        point_at(monkeypatch, vm)
        status, output = run_check(capsys)

        # What the warning says is what the database holds: the dotted name.
        vm.flush()
        now = time.time()
        stored = vm.series('{__name__=~"pipecat_grafana[._]check"}', start=now - 600, end=now)
    assert [series["__name__"] for series in stored] == [check.CHECK_METRIC]
    assert status == check.EXIT_ACCEPTED
    (warning,) = [line for line in output.splitlines() if line.startswith("Warning: Victoria")]
    assert NAMING_FLAG in warning
    assert f"stored the test metric as {check.CHECK_METRIC}" in warning
    assert "find" in output and "voice_calls_total" in output


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["victoriametrics", "prometheus+vmagent"])
def test_a_backend_that_stores_prometheus_names_gets_no_naming_warning(
    monkeypatch, capsys, backend
):
    server = VictoriaMetrics() if backend == "victoriametrics" else PrometheusWithAgent()
    with server:
        point_at(monkeypatch, server)
        status, output = run_check(capsys)
        # The test metric is there under the name the next steps give.
        server.wait_for(check.CHECK_PROMETHEUS_NAME)
    assert status == check.EXIT_ACCEPTED
    assert NAMING_FLAG not in output
    assert f"{check.CHECK_PROMETHEUS_NAME}{{" in output


@pytest.mark.e2e
def test_a_vmagent_without_prometheus_naming_is_told_the_flag(monkeypatch, capsys):
    # vmagent has no query API: its flags say how it names what it forwards.
    with VictoriaMetrics() as vm, _VmagentWithoutNaming(vm.remote_write_url) as agent:
        monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, agent.otlp_base)
        status, output = run_check(capsys)
    assert status == check.EXIT_ACCEPTED
    assert NAMING_FLAG in output


@pytest.mark.e2e
def test_a_refusal_by_victoria_metrics_is_quoted(monkeypatch, capsys):
    with VictoriaMetrics() as vm:
        # A metrics URL VictoriaMetrics does not serve: it answers 400 in words.
        monkeypatch.setenv(
            cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, f"{vm.base_url}/opentelemetry/v1/metricz"
        )
        status, output = run_check(capsys)
    assert status == check.EXIT_FAILED
    (failed,) = [line for line in output.splitlines() if line.startswith("Failed:")]
    assert "(400: " in failed and "unsupported path requested" in failed


class _Refusing(BaseHTTPRequestHandler):
    """Answers every POST with the status and body the server was given, echoing a header."""

    def do_POST(self):  # noqa: N802 (http.server naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, text = self.server.answer
        body = text.replace("{auth}", self.headers.get("Authorization", "")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_every_refusal_quotes_the_reply_without_echoing_a_secret(
    monkeypatch, capsys, refusing_server, status
):
    refusing_server.answer = (status, "bad request:\n header was '{auth}'; " + "x" * 600)
    monkeypatch.setenv(
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT, f"http://127.0.0.1:{refusing_server.server_port}"
    )
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization=Bearer%20{SECRET}")

    status_code, output = run_check(capsys)

    assert status_code == check.EXIT_FAILED
    (failed,) = [line for line in output.splitlines() if line.startswith("Failed:")]
    assert f'({status}: "bad request: header was' in failed
    assert SECRET not in output
    assert len(failed) < 700  # bounded


@pytest.mark.parametrize(
    ("variable", "advice", "not_said"),
    [
        (None, cfg.OTEL_EXPORTER_OTLP_HEADERS, "GRAFANA_CLOUD"),
        (cfg.OTEL_EXPORTER_OTLP_HEADERS, "whoever runs the backend", "GRAFANA_CLOUD"),
    ],
)
def test_a_401_from_a_plain_otlp_endpoint_is_explained_in_its_terms(
    monkeypatch, capsys, refusing_server, variable, advice, not_said
):
    refusing_server.answer = (401, json.dumps({"error": "unauthorized"}))
    monkeypatch.setenv(
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT, f"http://127.0.0.1:{refusing_server.server_port}"
    )
    if variable:
        monkeypatch.setenv(variable, f"X-Api-Key={SECRET}")

    status, output = run_check(capsys)

    assert status == check.EXIT_FAILED
    after = output.split("Sending", 1)[1]
    assert advice in after and not_said not in after
    assert '"unauthorized"' in after
    assert SECRET not in output


def test_credentials_in_the_url_are_masked_sent_and_named_on_a_401(
    monkeypatch, capsys, refusing_server
):
    refusing_server.answer = (401, "who are you")
    url = f"http://user:{SECRET}@127.0.0.1:{refusing_server.server_port}"
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, url)

    status, output = run_check(capsys)

    assert status == check.EXIT_FAILED
    assert SECRET not in output and "user:" not in output.replace("user:password", "")
    assert f"set (masked), from the user:password in {cfg.OTEL_EXPORTER_OTLP_ENDPOINT}" in output
    (failed,) = [line for line in output.splitlines() if line.startswith("Failed:")]
    assert f"of the user:password in {cfg.OTEL_EXPORTER_OTLP_ENDPOINT}" in failed
    assert "none are sent" not in output


@pytest.mark.parametrize(
    "variables",
    [
        {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: f"http://user:{SECRET}@collector.example:4318"},
        {
            cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.example:4318",
            cfg.OTEL_EXPORTER_OTLP_HEADERS: f"api-key={SECRET}",
        },
        {
            cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.example:4318",
            cfg.OTEL_EXPORTER_OTLP_HEADERS: f"X-Api-Key={SECRET}",
        },
    ],
)
def test_credentials_of_any_form_are_not_sent_in_clear_text_to_a_remote_host(
    monkeypatch, capsys, variables
):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    status, output = run_check(capsys)

    assert status == check.EXIT_NOT_CONFIGURED
    assert "in clear text" in output and cfg.ALLOW_INSECURE in output
    assert SECRET not in output


def test_a_header_value_with_a_line_break_is_refused_at_once(monkeypatch, capsys, refusing_server):
    # requests refuses such a header before sending: it was reported as a host that did
    # not answer, after the whole timeout.
    monkeypatch.setenv(
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT, f"http://127.0.0.1:{refusing_server.server_port}"
    )
    monkeypatch.setenv(
        cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization=Bearer%20{SECRET}%0AX-Evil:%201"
    )

    status, output = run_check(capsys)

    assert status == check.EXIT_NOT_CONFIGURED
    assert "line break" in output and "authorization" in output
    assert "unreachable" not in output and SECRET not in output


def test_two_endpoint_variables_are_one_warning_naming_the_winner(monkeypatch, capsys):
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, "https://127.0.0.1:9/otlp")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, "glc_" + SECRET)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:4318")

    _, output = run_check(capsys)

    (warning,) = [line for line in output.splitlines() if "are both set" in line]
    assert f"metrics go to {cfg.GRAFANA_CLOUD_OTLP_ENDPOINT}" in warning
    assert f"{cfg.OTEL_EXPORTER_OTLP_ENDPOINT} is ignored" in warning
    assert SECRET not in output


class _VmagentWithoutNaming:
    """The installed vmagent, as it starts by default (no Prometheus naming)."""

    def __init__(self, remote_write_url: str):
        from tests.backends import _start_on_a_free_port, require_tools

        self._start = _start_on_a_free_port
        self.binary = require_tools("vmagent")["vmagent"]
        self.remote_write_url = remote_write_url

    def __enter__(self):
        import tempfile
        from pathlib import Path

        self._tmp = tempfile.TemporaryDirectory(prefix="vmagent-")
        root = Path(self._tmp.name)
        self._proc, port = self._start(
            "vmagent",
            lambda port: [
                self.binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-remoteWrite.url={self.remote_write_url}",
                f"-remoteWrite.tmpDataPath={root / 'queue'}",
            ],
            root / "vmagent.log",
            "/health",
        )
        self.otlp_base = f"http://127.0.0.1:{port}/opentelemetry"
        return self

    def __exit__(self, *exc):
        self._proc.stop()
        self._tmp.cleanup()
