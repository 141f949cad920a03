"""GrafanaMetricsExporter in real Pipecat pipelines, read through the real OTel SDK."""

import asyncio
import os

import pytest
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    MetricsFrame,
    TextFrame,
    TranscriptionFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TextAggregationMetricsData,
    TTFAMetricsData,
    TTFATMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
    TurnMetricsData,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import run_test

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import instruments as m
from pipecat_grafana.pricing import PriceTable
from pipecat_grafana.tokens import TokenCounts
from tests.helpers import FakeClock, Reporter, Trigger, metric, run_pipeline

ALL_TYPES = [
    metric(TTFBMetricsData, processor="OpenAILLMService#7", model="gpt-4o", value=0.8),
    metric(ProcessingMetricsData, processor="OpenAILLMService#7", model="gpt-4o", value=1.2),
    metric(TTFAMetricsData, processor="CartesiaTTSService#2", ttfa=0.35, ttfb=0.3),
    metric(TTFATMetricsData, processor="OpenAILLMService#7", ttfat=0.9, ttfb=0.8),
    metric(TextAggregationMetricsData, processor="CartesiaTTSService#2", value=0.2),
    metric(TurnMetricsData, processor="LocalSmartTurnAnalyzer#1", e2e_processing_time_ms=150.0),
    metric(LLMUsageMetricsData, processor="OpenAILLMService#7", model="gpt-4o"),
    metric(TTSUsageMetricsData, processor="CartesiaTTSService#2", value=57),
    metric(STTUsageMetricsData, processor="GladiaSTTService#1"),
]


def exporter(memory_metrics, **kwargs) -> GrafanaMetricsExporter:
    kwargs = {"llm_model": "gpt-4o", "stt_model": "gladia", "tts_model": "cartesia", **kwargs}
    if "PIPECAT_GRAFANA_CALL_ID_LABEL" not in os.environ:
        kwargs.setdefault("call_id_label", True)  # off by default with a provider; read here
    return GrafanaMetricsExporter(meter_provider=memory_metrics.provider, **kwargs)


async def test_every_frame_passes_through_unchanged_and_in_order(memory_metrics):
    frames = [
        TextFrame("hello"),
        MetricsFrame(data=[metric(TTFBMetricsData)]),
        TranscriptionFrame("hi", "user", "2026-01-01T00:00:00Z"),
        TextFrame("bye"),
    ]
    down, _ = await run_test(exporter(memory_metrics), frames_to_send=frames)
    # The very same frame objects arrive; Pipecat itself lets system frames such as
    # MetricsFrame overtake data frames, so order is checked among data frames.
    assert sorted(id(f) for f in down) == sorted(id(f) for f in frames)
    data = [f for f in down if not isinstance(f, MetricsFrame)]
    assert [f.id for f in data] == [frames[0].id, frames[2].id, frames[3].id]
    assert (data[0].text, data[2].text) == ("hello", "bye")


@pytest.mark.parametrize("position", ["first", "middle", "last"])
async def test_every_metric_counted_exactly_once_wherever_the_exporter_stands(
    memory_metrics, position
):
    before = Reporter([[metric(TTFBMetricsData, processor="STTBefore#1", value=0.1)]])
    after = Reporter([[metric(TTFBMetricsData, processor="TTSAfter#2", value=0.2)]])
    grafana = exporter(memory_metrics)
    order = {
        "first": [grafana, before, after],
        "middle": [before, grafana, after],
        "last": [before, after, grafana],
    }[position]
    await run_pipeline(order, [Trigger("go")])

    for processor in ("STTBefore", "TTSAfter"):
        assert memory_metrics.value(m.TTFB.name, processor=processor) == 1
    stats = {s.processor: s for s in grafana.summary.latency if s.metric == "ttfb"}
    assert stats["STTBefore"].count == 1 and stats["TTSAfter"].count == 1


async def test_metrics_reported_while_stopping_after_the_exporter_are_counted(memory_metrics):
    class ReportsOnEnd(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, (EndFrame, CancelFrame)):
                await self.push_frame(MetricsFrame(data=[metric(STTUsageMetricsData)]))
            await self.push_frame(frame, direction)

    grafana = exporter(memory_metrics)
    await run_pipeline([grafana, ReportsOnEnd()])
    assert grafana.summary.stt_audio_seconds == 3.5


async def test_every_metric_type_is_recorded_in_its_unit(memory_metrics):
    grafana = exporter(memory_metrics)
    await run_pipeline([Reporter([ALL_TYPES]), grafana], [Trigger("go")])

    expected_ms = {
        m.TTFB: (ALL_TYPES[0], ALL_TYPES[0].value * 1000),
        m.PROCESSING: (ALL_TYPES[1], ALL_TYPES[1].value * 1000),
        m.TTFA: (ALL_TYPES[2], ALL_TYPES[2].ttfa * 1000),
        m.TTFAT: (ALL_TYPES[3], ALL_TYPES[3].ttfat * 1000),
        m.TEXT_AGGREGATION: (ALL_TYPES[4], ALL_TYPES[4].value * 1000),
        m.TURN_DETECTION: (ALL_TYPES[5], ALL_TYPES[5].e2e_processing_time_ms),
    }
    for spec, (data, ms) in expected_ms.items():
        (point,) = memory_metrics.points(spec.name)
        assert point.count == 1
        assert point.sum == pytest.approx(ms)
        assert point.attributes[m.PROCESSOR] == data.processor.split("#")[0]
        # Latency histograms are process-wide; the call's latency is in its summary.
        assert m.CALL_ID not in point.attributes

    # The TTFB mirrored inside TTFA/TTFAT is not a second measurement.
    assert memory_metrics.value(m.TTFB.name) == 1
    assert memory_metrics.value(m.TTS_CHARACTERS.name) == 57
    assert memory_metrics.value(m.STT_AUDIO.name) == pytest.approx(3.5)
    assert memory_metrics.value(m.LLM_TOKENS.name, token_type="prompt") == 100
    assert memory_metrics.value(m.LLM_TOKENS.name, token_type="completion") == 20

    (llm_ttfb,) = memory_metrics.points(m.TTFB.name)
    assert llm_ttfb.attributes[m.SERVICE_TYPE] == "llm"
    assert llm_ttfb.attributes[m.MODEL] == "gpt-4o"
    (tts_ttfa,) = memory_metrics.points(m.TTFA.name)
    assert tts_ttfa.attributes[m.SERVICE_TYPE] == "tts"
    assert tts_ttfa.attributes[m.MODEL] == "cartesia"  # the configured model fills in
    (turn,) = memory_metrics.points(m.TURN_DETECTION.name)
    assert turn.attributes[m.SERVICE_TYPE] == "other"


async def test_unknown_metric_types_are_ignored(memory_metrics):
    class FutureMetricsData(MetricsData):
        value: float

    grafana = exporter(memory_metrics)
    future = FutureMetricsData(processor="NewService#1", value=1.0)
    await run_pipeline([Reporter([[future, metric(TTFBMetricsData)]]), grafana], [Trigger("go")])
    assert memory_metrics.value(m.TTFB.name) == 1


async def test_initial_zero_metrics_are_not_measurements(memory_metrics):
    class Service(FrameProcessor):
        def can_generate_metrics(self) -> bool:
            return True

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    grafana = exporter(memory_metrics)
    seen: list[MetricsData] = []

    class Spy(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, MetricsFrame):
                seen.extend(frame.data)
            await self.push_frame(frame, direction)

    await run_pipeline([Service(), Spy(), grafana])
    # Pipecat did send its zeros; none of them became a point.
    assert any(isinstance(d, TTFBMetricsData) and d.value == 0 for d in seen)
    with pytest.raises(AssertionError, match="never recorded"):
        memory_metrics.points(m.TTFB.name)
    assert grafana.summary.latency == []


@pytest.mark.parametrize(
    "usage",
    [
        # OpenAI-compatible: prompt_tokens is gross (includes the cached tokens).
        LLMTokenUsage(
            prompt_tokens=1000, completion_tokens=50, total_tokens=1050, cache_read_input_tokens=800
        ),
        # Anthropic/Bedrock: prompt_tokens is net of the cache; total is gross.
        LLMTokenUsage(
            prompt_tokens=200, completion_tokens=50, total_tokens=1050, cache_read_input_tokens=800
        ),
    ],
    ids=["gross", "net"],
)
async def test_tokens_are_normalised_to_gross_prompt(memory_metrics, usage):
    grafana = exporter(memory_metrics)
    data = LLMUsageMetricsData(processor="LLM#1", model="gpt-4o", value=usage)
    await run_pipeline([Reporter([[data]]), grafana], [Trigger("go")])

    assert memory_metrics.value(m.LLM_TOKENS.name, token_type="prompt") == 1000
    assert memory_metrics.value(m.LLM_TOKENS.name, token_type="cache_read") == 800
    assert memory_metrics.value(m.LLM_TOKENS.name, token_type="completion") == 50
    # Not reported means no series, not a zero.
    types = {p.attributes[m.TOKEN_TYPE] for p in memory_metrics.points(m.LLM_TOKENS.name)}
    assert types == {"prompt", "completion", "cache_read"}
    assert grafana.summary.tokens == {"prompt": 1000, "completion": 50, "cache_read": 800}


async def test_call_ended_by_end_frame(memory_metrics):
    clock = FakeClock()
    grafana = exporter(memory_metrics, time_source=clock)
    await run_pipeline([ClockAdvancer(clock, 12.5), grafana], [Trigger("go")])

    (point,) = memory_metrics.points(m.SESSION_DURATION.name)
    assert point.count == 1 and point.sum == pytest.approx(12.5)
    assert point.attributes[m.END_REASON] == "ended"
    assert grafana.summary.end_reason == "ended"
    assert grafana.summary.duration_seconds == pytest.approx(12.5)
    assert memory_metrics.value(m.CALLS.name) == 1
    assert memory_metrics.value(m.CALLS_ACTIVE.name) == 0


@pytest.mark.parametrize("how", ["cancel_frame", "worker_cancel"])
async def test_call_ended_by_cancel(memory_metrics, how):
    grafana = exporter(memory_metrics)
    if how == "cancel_frame":
        await run_pipeline([grafana], end=CancelFrame())
    else:
        await run_pipeline([grafana], cancel=True)

    (point,) = memory_metrics.points(m.SESSION_DURATION.name)
    assert point.count == 1
    assert point.attributes[m.END_REASON] == "cancelled"
    assert grafana.summary.end_reason == "cancelled"
    assert memory_metrics.value(m.CALLS_ACTIVE.name) == 0


async def test_call_id_comes_from_conversation_id_else_argument_else_uuid(memory_metrics):
    from_worker = exporter(memory_metrics)
    await run_pipeline([from_worker], conversation_id="conv-42")
    assert from_worker.summary.call_id == "conv-42"

    passed = exporter(memory_metrics, call_id="mine-1")
    await run_pipeline([passed], conversation_id="conv-43")
    assert passed.summary.call_id == "mine-1"

    generated = exporter(memory_metrics)
    await run_pipeline([generated])
    assert len(generated.summary.call_id) == 36


async def test_summary_figures_and_cost(memory_metrics):
    prices = PriceTable()
    batches = [
        [
            metric(TTFBMetricsData, processor="OpenAILLMService#1", model="gpt-4o", value=v)
            for v in (0.2, 0.4, 0.6, 0.8, 1.0)
        ]
        + [
            metric(LLMUsageMetricsData, processor="OpenAILLMService#1", model="gpt-4o"),
            metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=300),
            metric(STTUsageMetricsData, processor="GladiaSTTService#1"),
        ]
    ]
    received: list = []
    grafana = exporter(memory_metrics, service_name="voice-rag-bot")

    @grafana.event_handler("on_call_summary")
    async def on_summary(processor, summary):
        received.append(summary)

    await run_pipeline([Reporter(batches), grafana], [Trigger("go")])
    summary = grafana.summary
    assert received == [summary]
    assert summary.service_name == "voice-rag-bot"
    assert (summary.llm_model, summary.stt_model, summary.tts_model) == (
        "gpt-4o",
        "gladia",
        "cartesia",
    )
    (ttfb,) = summary.latency
    assert (ttfb.metric, ttfb.processor, ttfb.count) == ("ttfb", "OpenAILLMService", 5)
    assert ttfb.avg_ms == pytest.approx(600)
    assert (ttfb.min_ms, ttfb.max_ms) == (pytest.approx(200), pytest.approx(1000))
    assert ttfb.p50_ms == pytest.approx(600, rel=0.02)
    assert ttfb.p95_ms == pytest.approx(1000, rel=0.02)

    counts, _ = TokenCounts.from_usage(batches[0][5].value)
    expected = {
        ("llm", "gpt-4o"): prices.llm_cost("gpt-4o", counts),
        ("tts", "cartesia"): prices.tts_cost("cartesia", 300),
        ("stt", "gladia"): prices.stt_cost("gladia", 3.5),
    }
    assert all(v is not None and v > 0 for v in expected.values())
    assert {(c.service_type, c.model): c.usd for c in summary.costs} == pytest.approx(expected)
    assert summary.total_cost_usd == pytest.approx(sum(expected.values()))
    assert summary.unpriced_models == []
    for (service_type, model), usd in expected.items():
        assert memory_metrics.value(
            m.COST.name, service_type=service_type, model=model
        ) == pytest.approx(usd)


async def test_unpriced_model_is_reported_not_zero(memory_metrics, log_lines):
    grafana = exporter(memory_metrics, llm_model="my-finetune-v3")
    usage = metric(LLMUsageMetricsData, processor="LLM#1", model=None)
    await run_pipeline([Reporter([[usage, usage]]), grafana], [Trigger("go")])

    assert grafana.summary.unpriced_models == ["llm:my-finetune-v3"]
    assert grafana.summary.costs == []
    with pytest.raises(AssertionError, match="never recorded"):
        memory_metrics.points(m.COST.name)
    warnings = [line for line in log_lines if "no price for llm model 'my-finetune-v3'" in line]
    assert len(warnings) == 1
    assert "partial: no price for llm:my-finetune-v3" in grafana.summary.format()


async def test_price_override_by_argument(memory_metrics):
    grafana = exporter(memory_metrics, prices={"my-finetune-v3": {"input": 1.0, "output": 2.0}})
    usage = LLMUsageMetricsData(
        processor="LLM#1",
        model="my-finetune-v3",
        value=LLMTokenUsage(
            prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000
        ),
    )
    await run_pipeline([Reporter([[usage]]), grafana], [Trigger("go")])
    assert grafana.summary.total_cost_usd == pytest.approx(1.0 + 1.0)


async def test_two_concurrent_calls_do_not_mix(memory_metrics):
    first = exporter(memory_metrics, call_id="call-a")
    second = exporter(memory_metrics, call_id="call-b")
    await asyncio.gather(
        run_pipeline(
            [Reporter([[metric(TTSUsageMetricsData, value=10)]] * 3), first],
            [Trigger("1"), Trigger("2"), Trigger("3")],
        ),
        run_pipeline(
            [Reporter([[metric(TTSUsageMetricsData, value=7)]] * 2), second],
            [Trigger("1"), Trigger("2")],
        ),
    )
    assert first.summary.tts_characters == 30
    assert second.summary.tts_characters == 14
    assert memory_metrics.value(m.TTS_CHARACTERS.name, call_id="call-a") == 30
    assert memory_metrics.value(m.TTS_CHARACTERS.name, call_id="call-b") == 14
    assert memory_metrics.value(m.CALLS.name) == 2


async def test_call_id_label_can_be_switched_off(memory_metrics, monkeypatch):
    monkeypatch.setenv("PIPECAT_GRAFANA_CALL_ID_LABEL", "false")
    grafana = exporter(memory_metrics)
    await run_pipeline([Reporter([ALL_TYPES]), grafana], [Trigger("go")])
    # What this call reports (no turns, greeting, TTS audio; the health series are
    # process-wide whatever the setting).
    for spec in set(m.ALL) - set(m.CONVERSATION) - set(m.HEALTH) - {m.TTS_AUDIO}:
        for point in memory_metrics.points(spec.name):
            assert m.CALL_ID not in point.attributes, spec.name
    assert grafana.summary.tts_characters == 57  # the summary is still per call


async def test_summary_handler_that_raises_does_not_stop_the_call(memory_metrics, log_lines):
    grafana = exporter(memory_metrics)

    @grafana.event_handler("on_call_summary")
    async def broken(processor, summary):
        raise RuntimeError("storage down")

    await run_pipeline([grafana])
    assert grafana.summary.end_reason == "ended"
    assert any("storage down" in line for line in log_lines)


class ClockAdvancer(FrameProcessor):
    """Moves a fake clock forward when a Trigger passes: a call of a chosen length."""

    def __init__(self, clock: FakeClock, seconds: float):
        super().__init__()
        self._clock, self._seconds = clock, seconds

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, Trigger):
            self._clock.now += self._seconds
        await self.push_frame(frame, direction)
