import logging

import pytest
from loguru import logger

import pipecat_grafana
from pipecat_grafana import config as cfg
from pipecat_grafana.labels import once
from tests.helpers import MemoryMetrics
from tests.otlp_receiver import OtlpReceiver

_OUR_VARIABLES = (
    cfg.GRAFANA_CLOUD_OTLP_ENDPOINT,
    cfg.GRAFANA_CLOUD_INSTANCE_ID,
    cfg.GRAFANA_CLOUD_API_TOKEN,
    cfg.OTEL_EXPORTER_OTLP_ENDPOINT,
    cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    cfg.OTEL_EXPORTER_OTLP_HEADERS,
    cfg.OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    cfg.OTEL_METRIC_EXPORT_INTERVAL,
    cfg.OTEL_EXPORTER_OTLP_TIMEOUT,
    cfg.OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    cfg.OTEL_EXPORTER_OTLP_CERTIFICATE,
    cfg.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
    cfg.OTEL_EXPORTER_OTLP_COMPRESSION,
    cfg.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
    cfg.OTEL_EXPORTER_OTLP_PROTOCOL,
    cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    cfg.OTEL_RESOURCE_ATTRIBUTES,
    cfg.CALL_ID_LABEL,
    cfg.FLUSH_TIMEOUT,
    cfg.ALLOW_INSECURE,
    "OTEL_SERVICE_NAME",
    "PIPECAT_GRAFANA_PRICES_FILE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Every test starts with none of our variables set and ends with every pipeline stopped."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Warnings are logged once per process; each test is a process of its own here.
    once.clear()
    yield
    pipecat_grafana.shutdown(timeout_s=2)


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r
        pipecat_grafana.shutdown(timeout_s=2)  # while the receiver still answers


@pytest.fixture
def export_to(monkeypatch, receiver):
    """Point the exporter at the local receiver, exporting every 200 ms."""
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "200")
    return receiver


@pytest.fixture
def memory_metrics():
    metrics = MemoryMetrics()
    yield metrics
    metrics.provider.shutdown()


@pytest.fixture
def log_lines():
    """Every line logged through loguru and the standard logging module during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    yield lines
    logging.getLogger().removeHandler(handler)
    logger.remove(sink)
