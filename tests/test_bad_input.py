"""Bad input never reaches the pipeline as an exception nor a backend as a bad series."""

import math

import pytest
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTFAMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.pricing import PRICE_FILE_ENV
from tests.helpers import Reporter, Trigger, metric, run_pipeline

GRAFANA_CLOUD_LABEL_LIMIT = 2048


class FutureMetricsData(MetricsData):
    reading: float


BAD_VALUES = [
    ("negative", metric(TTFBMetricsData, processor="Neg#1", value=-0.5)),
    ("nan", metric(ProcessingMetricsData, processor="NaN#1", value=math.nan)),
    ("infinite", metric(TTFAMetricsData, processor="Inf#1", ttfa=math.inf)),
    ("absurd", metric(TTFBMetricsData, processor="Slow#1", value=1e9)),
    ("negative usage", metric(TTSUsageMetricsData, processor="TTS#1", value=-10)),
    ("nan usage", STTUsageMetricsData(processor="STT#1", value=STTUsage(audio_seconds=math.nan))),
]


async def test_impossible_values_are_dropped_with_one_warning_each(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider)
    batch = [data for _, data in BAD_VALUES]
    await run_pipeline([Reporter([batch, batch]), exporter], [Trigger("1"), Trigger("2")])

    assert exporter.summary.end_reason == "ended"
    assert exporter.summary.latency == []
    assert exporter.summary.tts_characters == 0 and exporter.summary.stt_audio_seconds == 0
    for name in ("Neg", "NaN", "Inf", "Slow", "TTS", "STT"):
        warnings = [line for line in log_lines if "dropped" in line and f"from {name}" in line]
        assert len(warnings) == 1, (name, warnings)
    for spec in (m.TTFB, m.PROCESSING, m.TTFA, m.TTS_CHARACTERS, m.STT_AUDIO):
        with pytest.raises(AssertionError, match="never recorded"):
            memory_metrics.points(spec.name)


async def test_zero_values_are_recorded_or_skipped_by_rule(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider)
    batch = [
        metric(TTFBMetricsData, processor="LLM#1", value=0.0),  # Pipecat's start marker
        metric(TTSUsageMetricsData, processor="TTS#1", value=0),
        metric(TTFAMetricsData, processor="TTS#1", ttfa=0.0),
    ]
    await run_pipeline([Reporter([batch]), exporter], [Trigger("1")])
    with pytest.raises(AssertionError, match="never recorded"):
        memory_metrics.points(m.TTFB.name)
    assert memory_metrics.value(m.TTS_CHARACTERS.name) == 0
    assert memory_metrics.value(m.TTFA.name) == 1  # a zero TTFA is a (fast) measurement
    assert not [line for line in log_lines if "dropped" in line]


async def test_optional_fields_none_and_unknown_types(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider)
    batch = [
        LLMUsageMetricsData(
            processor="LLM#1",
            model=None,
            value=LLMTokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        ),
        TTFBMetricsData(processor="LLM#1", model=None, value=0.2),
        FutureMetricsData(processor="New#1", reading=3.0),
    ]
    await run_pipeline([Reporter([batch]), exporter], [Trigger("1")])
    assert exporter.summary.tokens == {"prompt": 10, "completion": 5}
    (point,) = memory_metrics.points(m.TTFB.name)
    assert point.attributes[m.MODEL] == "unknown"
    assert not [line for line in log_lines if "ERROR" in line]


async def test_inconsistent_token_totals_are_kept_safe_with_one_warning(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider)
    broken = LLMUsageMetricsData(
        processor="LLM#1",
        model="gpt-4o",
        value=LLMTokenUsage(prompt_tokens=100, completion_tokens=50, total_tokens=20),
    )
    await run_pipeline([Reporter([[broken, broken]]), exporter], [Trigger("1")])
    assert exporter.summary.tokens["prompt"] == 200  # falls back to prompt_tokens
    assert exporter.summary.tokens["completion"] == 100
    assert len([line for line in log_lines if "token usage from LLM" in line]) == 1


ODD_NAMES = [
    "",
    "x" * 5000,
    "Line\nbreak\tand\x00null#3",
    "quotes\"and'backslash\\#1",
    "emoji🎙️service#2",
    "bad-utf8-\ud800-surrogate#4",
]


async def test_odd_processor_and_model_names_make_valid_bounded_labels(export_to, log_lines):
    receiver = export_to
    exporter = GrafanaMetricsExporter()
    batch = [
        metric(TTFBMetricsData, processor=name, model=name or None, value=0.1) for name in ODD_NAMES
    ]
    await run_pipeline([Reporter([batch]), exporter], [Trigger("1")])
    receiver.wait_for(lambda r: r.total(m.TTFB.name) == len(ODD_NAMES), timeout=5)

    for point in receiver.points():
        for value in point.attributes.values():
            text = str(value)
            assert 0 < len(text) <= GRAFANA_CLOUD_LABEL_LIMIT
            text.encode("utf-8")  # valid UTF-8
            assert not any(ord(c) < 0x20 for c in text)
    assert not [line for line in log_lines if "ERROR" in line]


@pytest.mark.parametrize(
    ("variable", "value", "fix"),
    [
        (cfg.OTEL_EXPORTER_OTLP_ENDPOINT, "collector.internal:4318", "include the scheme"),
        (cfg.OTEL_EXPORTER_OTLP_ENDPOINT, "http://[::1", "malformed host"),
        (cfg.OTEL_EXPORTER_OTLP_HEADERS, "Basic abc123", "name=value"),
        (cfg.OTEL_EXPORTER_OTLP_HEADERS, "Authorization=Bearer%20abc%0Adef", "line break"),
        (cfg.OTEL_EXPORTER_OTLP_CERTIFICATE, "/nonexistent/ca.pem", "No such file"),
        (PRICE_FILE_ENV, "/nonexistent/prices.toml", "PIPECAT_GRAFANA_PRICES_FILE"),
    ],
)
async def test_a_setting_with_no_safe_default_is_one_clear_error_and_the_call_goes_on(
    monkeypatch, log_lines, variable, value, fix
):
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, "https://127.0.0.1:9")  # closed port
    monkeypatch.setenv(variable, value)
    exporter = GrafanaMetricsExporter(tts_model="cartesia")
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=5)]]), exporter], [Trigger("1")]
    )
    errors = [line for line in log_lines if "ERROR" in line and variable in line]
    assert len(errors) == 1
    assert fix in errors[0]
    if variable == cfg.OTEL_EXPORTER_OTLP_HEADERS:
        # No part of a header value is shown: it is likely a token.
        assert "abc" not in "\n".join(log_lines)
    # One story: export is off because of that variable, not for want of an endpoint.
    assert not [line for line in log_lines if "no OTLP endpoint" in line]
    assert exporter.summary.tts_characters == 5
