"""Secrets stay secret, credentials never travel in clear text, TLS is verified."""

import base64
import subprocess

import pytest
from loguru import logger
from pipecat.metrics.metrics import TTSUsageMetricsData

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.recorder import CallRecorder
from tests.helpers import Reporter, Trigger, metric, run_pipeline
from tests.otlp_receiver import OtlpReceiver
from tests.test_exporter import ALL_TYPES

TOKEN = "glc_" + "TOPSECRETtokenvalue0123456789abcdef"  # fake, built so no scanner mistakes it


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, as a private CA would issue."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def use_grafana_cloud(monkeypatch, endpoint: str) -> None:
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, endpoint)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, TOKEN)
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "100")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")


@pytest.mark.slow
async def test_no_secret_in_any_log_line_even_with_diagnose_and_backtrace(
    monkeypatch, receiver, certificate, log_lines
):
    """A full run against failing endpoints: rejected, TLS failure, refused, plus a bug."""

    def bug(self, data):
        raise ValueError("a bug of ours while recording tokens")

    monkeypatch.setattr(CallRecorder, "_record_tokens", bug)
    diagnosed: list[str] = []
    sink = logger.add(lambda message: diagnosed.append(str(message)), diagnose=True, backtrace=True)
    encoded = base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    try:
        receiver.respond_with(401)
        with OtlpReceiver(tls=certificate) as untrusted:
            endpoints = [receiver.endpoint, untrusted.endpoint, "http://127.0.0.1:9"]
            for endpoint in endpoints:
                use_grafana_cloud(monkeypatch, endpoint)
                exporter = GrafanaMetricsExporter(llm_model="gpt-4o")
                # A failing on_call_summary handler logs its exception with its locals.
                exporter.add_event_handler("on_call_summary", _handler_that_fails)
                await run_pipeline([Reporter([ALL_TYPES]), exporter], [Trigger("go")])
                pipecat_grafana.shutdown(timeout_s=1)
    finally:
        logger.remove(sink)

    everything = log_lines + diagnosed
    assert any("rejected the credentials (401)" in line for line in everything)
    assert any("TLS failed" in line for line in everything)
    assert any("connection was refused" in line for line in everything)
    assert any("summary handler failed" in line for line in everything)
    assert any("could not record LLMUsageMetricsData" in line for line in diagnosed)
    for line in everything:
        assert TOKEN not in line
        assert encoded not in line


async def _handler_that_fails(exporter, summary):
    config = exporter._pipeline.config  # a local holding the configuration
    raise RuntimeError(f"summary handler failed for {config!r}")


async def test_credentials_over_plain_http_to_a_remote_host_are_refused(monkeypatch, log_lines):
    use_grafana_cloud(monkeypatch, "http://otlp.example.com/otlp")
    exporter = GrafanaMetricsExporter()
    await run_pipeline([exporter])
    (error,) = [line for line in log_lines if "clear text" in line]
    assert cfg.ALLOW_INSECURE in error and "https://" in error
    assert not exporter._pipeline.config.enabled


async def test_tls_is_verified_and_a_custom_ca_bundle_is_honoured(monkeypatch, certificate):
    with OtlpReceiver(tls=certificate) as receiver:
        use_grafana_cloud(monkeypatch, receiver.endpoint)
        batch = [metric(TTSUsageMetricsData, value=12)]

        # Not trusted: the self-signed certificate is refused, nothing is accepted.
        await run_pipeline([Reporter([batch]), GrafanaMetricsExporter()], [Trigger("go")])
        pipecat_grafana.shutdown(timeout_s=1)
        assert receiver.requests == []

        # Trusted through the standard variable: accepted.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certificate[0])
        await run_pipeline([Reporter([batch]), GrafanaMetricsExporter()], [Trigger("go")])
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) == 12, timeout=5)
        pipecat_grafana.shutdown(timeout_s=1)
