"""Any OTLP backend, not only Grafana Cloud: one without logs costs no ERROR and no exit 1.

VictoriaMetrics, Prometheus' OTLP receiver and a collector without a logs pipeline take
metrics and answer ``/v1/logs`` with 400 or 404. The bot then turns its call summary records
off, saying so once; ``pipecat-grafana check`` says so per signal, exits 0, and suggests the
query the backend at hand answers. Run against a real VictoriaMetrics and the local receiver.
"""

import argparse

import pytest
from pipecat.metrics.metrics import TTSUsageMetricsData

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.commands import check
from tests.backends import PrometheusWithAgent, VictoriaMetrics
from tests.helpers import Reporter, Trigger, metric, run_pipeline

SERVICE = "vm-bot"


def _serve(monkeypatch, backend):
    base = backend.otlp_metrics_url.removesuffix("/v1/metrics")
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, base)
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "200")


@pytest.fixture
def victoria_metrics(monkeypatch):
    with VictoriaMetrics() as vm:
        _serve(monkeypatch, vm)
        yield vm


@pytest.fixture(params=["victoriametrics", "prometheus+vmagent"])
def backend(request, monkeypatch):
    server = VictoriaMetrics() if request.param == "victoriametrics" else PrometheusWithAgent()
    with server:
        _serve(monkeypatch, server)
        yield server


async def one_call(call_id: str) -> GrafanaMetricsExporter:
    exporter = GrafanaMetricsExporter(service_name=SERVICE, tts_model="cartesia", call_id=call_id)
    reporter = Reporter([[metric(TTSUsageMetricsData, processor="T#1", value=40)]])
    await run_pipeline([reporter, exporter], [Trigger("go")])
    return exporter


def errors_and_logs_lines(log_lines: list[str]) -> tuple[list[str], list[str]]:
    errors = [line for line in log_lines if "ERROR" in line or "Failed to export" in line]
    said = [line for line in log_lines if "does not take OTLP logs" in line]
    return errors, said


@pytest.mark.e2e
async def test_a_backend_without_logs_gets_the_metrics_and_no_error_is_logged(backend, log_lines):
    await one_call("vm-1")
    await one_call("vm-2")

    # Both calls are in the database, under the label it keeps (no `job` there).
    backend.wait_for(
        f'sum(voice_calls_total{{service_name="{SERVICE}"}})',
        predicate=lambda result: result and float(result[0]["value"][1]) == 2,
    )
    backend.wait_for(f'voice_tts_characters_total{{service_name="{SERVICE}"}}')
    errors, said = errors_and_logs_lines(log_lines)
    assert errors == []
    # One plain line, once per process, saying what is off and how to switch it.
    assert len(said) == 1, said
    assert "WARNING" in said[0] and "(400)" in said[0]
    assert f"{cfg.LOGS}=false" in said[0] and cfg.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT in said[0]
    assert "call summary records are off" in said[0]


async def test_a_logs_endpoint_that_is_not_there_is_tried_once_per_process(export_to, log_lines):
    receiver = export_to
    receiver.respond_to("logs", 404)  # a collector without a logs pipeline
    first = await one_call("c-1")
    second = await one_call("c-2")

    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) == 80, timeout=5)
    assert receiver.attempts_of("logs") == 1
    errors, said = errors_and_logs_lines(log_lines)
    assert errors == [] and len(said) == 1 and "(404)" in said[0]
    # The summary itself is untouched: logged and handed to the application.
    assert first.summary.tts_characters == second.summary.tts_characters == 40
    # Nobody waited for a record that will never be sent.
    assert not [line for line in log_lines if "were not exported within" in line]


async def test_logs_that_were_accepted_once_are_failures_again(export_to, log_lines):
    receiver = export_to
    await one_call("ok-1")
    receiver.wait_for(lambda r: len(r.logs) == 1, timeout=5)
    receiver.respond_to("logs", 400)  # the endpoint takes logs; this request it refused
    await one_call("bad-1")

    receiver.wait_for(lambda r: r.attempts_of("logs") == 2, timeout=5)
    errors, said = errors_and_logs_lines(log_lines)
    assert said == []
    assert [line for line in errors if "logs export failing" in line]


def run_check(capsys) -> tuple[int, str]:
    status = check.run(argparse.Namespace(timeout=5.0, service_name=SERVICE))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.mark.e2e
def test_check_against_victoria_metrics_passes_and_suggests_what_it_answers(
    victoria_metrics, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)  # no stray .env
    vm = victoria_metrics

    status, output = run_check(capsys)

    assert status == check.EXIT_ACCEPTED, output
    assert "Accepted: metrics." in output
    assert "Not supported by this endpoint: logs" in output
    assert "logs:write" not in output
    # The suggested query is one VictoriaMetrics answers; Grafana Cloud's `job` it has not.
    (suggested,) = [
        line.strip()
        for line in output.splitlines()
        if line.strip().startswith(check.CHECK_PROMETHEUS_NAME)
    ]
    assert "job=" not in output
    (series,) = vm.wait_for(suggested)
    assert series["value"][1] == "1"
    assert vm.query(f'{check.CHECK_PROMETHEUS_NAME}{{job="{SERVICE}"}}') == []


def test_check_with_a_collector_without_logs_passes_and_gives_both_queries(
    export_to, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    receiver = export_to
    receiver.respond_to("logs", 404)

    status, output = run_check(capsys)

    assert status == check.EXIT_ACCEPTED, output
    assert "Not supported here" in output and "(404)" in output
    # Behind a collector the database is unknown: the query for each kind.
    assert f'{check.CHECK_PROMETHEUS_NAME}{{job="{SERVICE}"}}' in output
    assert f'{check.CHECK_PROMETHEUS_NAME}{{service_name="{SERVICE}"}}' in output
