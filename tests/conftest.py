import logging

import pytest
from loguru import logger
from opentelemetry import trace as otel_trace
from opentelemetry.util._once import Once

import pipecat_grafana
from pipecat_grafana import config as cfg
from pipecat_grafana import notices, traces
from pipecat_grafana.pricing import unpriced
from tests.helpers import MemoryMetrics
from tests.otlp_receiver import OtlpReceiver

_OUR_VARIABLES = tuple(
    value
    for name, value in vars(cfg).items()
    if name.isupper()
    and isinstance(value, str)
    and value.startswith(("GRAFANA_", "OTEL_", "PIPECAT_"))
) + (
    "OTEL_SERVICE_NAME",
    "PIPECAT_GRAFANA_PRICES_FILE",
)


def _forget_tracing() -> None:
    """Undo the global tracer provider a test's exporter installed (a process sets it once)."""
    if traces.TRACING.installed is not None:
        traces.TRACING.installed.shutdown()
        traces.TRACING.installed = None
        otel_trace._TRACER_PROVIDER = None
        otel_trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Every test starts with none of our variables set and ends with every pipeline stopped."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Warnings are logged once per process; each test is a process of its own here.
    notices.forget()
    unpriced.clear()
    yield
    pipecat_grafana.shutdown(timeout_s=1)
    _forget_tracing()


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r
        pipecat_grafana.shutdown(timeout_s=1)  # while the receiver still answers


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
