"""Where metrics go, said the same way everywhere: pushed, scraped, both or neither.

The call-start banner, `pipecat-grafana check`, `ExportConfig.describe()` and the offline
run's banner each name the OTLP endpoint when metrics are pushed and the scrape URL when the
Prometheus endpoint serves them; "off" only when neither is on.
"""

import argparse

import pytest

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana.commands import check, demo
from pipecat_grafana.scrape_config import ScrapeConfig
from tests.backends import free_port
from tests.helpers import run_pipeline

PUSH = {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318"}
PUSH_URL = "http://127.0.0.1:4318/v1/metrics"
SCRAPE = ScrapeConfig(addr="127.0.0.1", port=9464)


@pytest.mark.parametrize(
    "env, scrape, named, off",
    [
        (PUSH, SCRAPE, [PUSH_URL, SCRAPE.url], False),
        (PUSH, None, [PUSH_URL], False),
        ({}, SCRAPE, [SCRAPE.url], False),
        ({}, None, [], True),
    ],
    ids=["both", "push", "scrape", "neither"],
)
def test_describe_names_each_destination_that_is_on(env, scrape, named, off):
    described = cfg.resolve(env).describe(scrape.url if scrape else None)

    metrics = described["metrics"]
    for url in named:
        assert url in metrics
    assert metrics.startswith("off") == off
    assert described["scrape endpoint"] == (scrape.url if scrape else "off")


async def test_the_call_banner_names_the_scrape_endpoint_without_push(log_lines):
    port = free_port()
    await run_pipeline([GrafanaMetricsExporter(prometheus_port=port)])

    (banner,) = [line for line in log_lines if "call started" in line]
    assert f"http://127.0.0.1:{port}/metrics" in banner
    assert "export off" not in banner and "Metrics:  off" not in banner


async def test_the_call_banner_names_both_when_both_are_on(monkeypatch, receiver, log_lines):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    port = free_port()
    await run_pipeline([GrafanaMetricsExporter(prometheus_port=port)])

    (banner,) = [line for line in log_lines if "call started" in line]
    assert receiver.metrics_url in banner
    assert f"http://127.0.0.1:{port}/metrics" in banner


def test_check_with_the_scrape_endpoint_alone_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, "9464")

    status = check.run(argparse.Namespace(timeout=2.0, service_name=None))
    output = capsys.readouterr().out

    assert status == check.EXIT_ACCEPTED
    assert "http://127.0.0.1:9464/metrics" in output
    assert "export is off" not in output


def test_check_with_neither_names_both_ways_to_turn_metrics_on(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)

    status = check.run(argparse.Namespace(timeout=2.0, service_name=None))
    output = capsys.readouterr().out

    assert status == check.EXIT_NOT_CONFIGURED
    assert cfg.OTEL_EXPORTER_OTLP_ENDPOINT in output and cfg.PROMETHEUS_PORT in output


def test_the_offline_run_names_the_scrape_endpoint(monkeypatch):
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, "9464")

    assert "http://127.0.0.1:9464/metrics" in demo._destination()
