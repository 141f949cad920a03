"""What a bot says about a misconfigured environment: one story, naming the variable.

Each test runs a real call against a local receiver (or a port nothing listens on)
and reads every log line: a problem is named once, with its variable and the fix,
and the call goes on.
"""

import pytest
from pipecat.metrics.metrics import TTSUsageMetricsData

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.helpers import Reporter, Trigger, metric, run_pipeline


async def one_call(characters: int = 5) -> GrafanaMetricsExporter:
    exporter = GrafanaMetricsExporter(tts_model="cartesia")
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=characters)]]), exporter], [Trigger("1")]
    )
    return exporter


async def test_base_url_with_the_metrics_path_exports_with_one_warning(
    monkeypatch, receiver, log_lines
):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.metrics_url)

    await one_call()
    await one_call()

    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) == 10, timeout=5)
    assert not receiver.rejected
    warnings = [line for line in log_lines if "WARNING" in line and "base URL" in line]
    assert len(warnings) == 1
    assert cfg.OTEL_EXPORTER_OTLP_ENDPOINT in warnings[0]


async def test_wrong_full_metrics_url_is_explained_as_used_as_is(monkeypatch, receiver, log_lines):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, receiver.endpoint + "/otlp")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, "1")

    await one_call()

    (explained,) = [line for line in log_lines if "not found (404" in line]
    assert f"{cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT} is used as is" in explained
    assert "appends" not in explained


@pytest.mark.parametrize(
    ("argument", "value"), [("export_interval_s", 1e300), ("flush_timeout_s", 301)]
)
def test_an_argument_out_of_range_raises(argument, value):
    # A programmer's mistake fails fast; only the environment is logged and let go.
    with pytest.raises(ValueError, match=argument):
        GrafanaMetricsExporter(**{argument: value})
