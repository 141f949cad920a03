"""Metrics flags left off: said at the call's start, and "not measured", never $0.

Pipecat's default ``PipelineParams()`` reports no metrics at all; with ``enable_metrics`` but
not ``enable_usage_metrics`` it reports latency but no tokens, characters or audio seconds.
A real pipeline (the package's scripted LLM and TTS, on Pipecat's service classes, which
obey the flags as hosted services do) exports to the local receiver.
"""

import asyncio

import pytest
from pipecat.frames.frames import EndFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.workers.runner import WorkerRunner

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import instruments as m
from pipecat_grafana.offline import ScriptedLLMService, ScriptedTTSService
from pipecat_grafana.summary import CallSummary


async def one_call(params: PipelineParams, call_id: str) -> CallSummary:
    user, assistant = LLMContextAggregatorPair(LLMContext())
    exporter = GrafanaMetricsExporter(llm_model="gpt-4o", tts_model="cartesia", call_id=call_id)
    llm, tts = (
        ScriptedLLMService(replies=["It renews on the 3rd."], speed=0.1),
        ScriptedTTSService(speed=0.1),
    )
    worker = PipelineWorker(Pipeline([user, llm, tts, assistant, exporter]), params=params)
    question = {"role": "user", "content": "When does my plan renew?"}
    await worker.queue_frames([LLMMessagesAppendFrame([question], run_llm=True), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(runner.run(), timeout=30)
    return exporter.summary


def said(log_lines: list[str], flag: str) -> list[str]:
    return [line for line in log_lines if "WARNING" in line and f"{flag} is off" in line]


async def test_pipecats_default_params_measure_nothing_and_say_so(export_to, log_lines):
    receiver = export_to
    first = await one_call(PipelineParams(), "default-1")
    await one_call(PipelineParams(), "default-2")

    # Said once, at the first call's start (before its summary), naming both flags.
    (warning,) = [line for line in log_lines if "WARNING" in line and "never zero" in line]
    assert "enable_metrics and enable_usage_metrics are off" in warning
    assert "cost" in warning and "TTFB" in warning
    assert log_lines.index(warning) < next(
        i for i, line in enumerate(log_lines) if "Call Summary" in line
    )
    # The summary: not measured, never zero (no VAD here: no turns either).
    assert first.not_measured == ["latency", "usage", "turns"]
    assert first.total_cost_usd is None
    assert first.tokens is None and first.tts_characters is None
    assert first.stt_audio_seconds is None and first.latency == []
    text = first.format()
    assert "Total cost: not measured" in text and "$0.0000" not in text
    assert "LLM tokens: not measured" in text and "Latency:    not measured" in text
    # The summary record: the figures absent, and why.
    receiver.wait_for(lambda r: len(r.logs) == 2, timeout=5)
    record = next(r for r in receiver.logs if r.attributes["call_id"] == "default-1")
    assert record.attributes["not_measured"] == "latency,usage,turns"
    assert not {"cost_usd", "tts_characters", "stt_audio_seconds"} & set(record.attributes)
    assert "cost not measured" in record.body
    # The metrics: no cost series at all (unknown, not $0), and the calls whose cost is
    # unknown counted on the process-wide calls-ended counter.
    receiver.wait_for(
        lambda r: r.total(m.CALLS_ENDED.name, not_measured="latency,usage") == 2, timeout=5
    )
    assert m.COST.name not in receiver.names()
    assert m.TTFB.name not in receiver.names()


async def test_latency_without_usage_is_measured_and_the_cost_is_not(export_to, log_lines):
    receiver = export_to
    summary = await one_call(PipelineParams(enable_metrics=True), "no-usage")

    (warning,) = said(log_lines, "enable_usage_metrics")
    assert "PipelineParams enable_usage_metrics is off" in warning
    assert summary.not_measured == ["usage", "turns"]
    assert summary.total_cost_usd is None
    assert {stats.processor for stats in summary.latency} == {
        "ScriptedLLMService",
        "ScriptedTTSService",
    }
    receiver.wait_for(lambda r: r.total(m.CALLS_ENDED.name, not_measured="usage") == 1, 5)
    assert receiver.total(m.TTFB.name) >= 2
    assert m.COST.name not in receiver.names()


async def test_a_measured_call_has_no_not_measured_label_or_field(export_to, log_lines):
    receiver = export_to
    summary = await one_call(
        PipelineParams(enable_metrics=True, enable_usage_metrics=True), "measured"
    )

    # Measured but for the turns: this bot has no VAD (see the test below).
    assert summary.not_measured == ["turns"] and summary.total_cost_usd > 0
    assert not [line for line in log_lines if "WARNING" in line and "not measured" in line]
    assert summary.format().count("not measured") == 1
    receiver.wait_for(lambda r: r.total(m.CALLS_ENDED.name) == 1, timeout=5)
    (ended,) = receiver.latest(m.CALLS_ENDED.name).values()
    assert m.NOT_MEASURED not in ended.attributes
    assert receiver.total(m.COST.name) == pytest.approx(summary.total_cost_usd)


async def test_a_bot_without_vad_has_its_turns_not_measured_not_zero(export_to):
    """Two questions answered, straight into the LLM (no transport, no VAD): no turn seen."""
    receiver = export_to
    user, assistant = LLMContextAggregatorPair(LLMContext())
    exporter = GrafanaMetricsExporter(llm_model="gpt-4o", tts_model="cartesia", call_id="no-vad")
    llm = ScriptedLLMService(replies=["It renews on the 3rd.", "It costs $10."], speed=0.1)
    worker = PipelineWorker(
        Pipeline([user, llm, ScriptedTTSService(speed=0.1), assistant, exporter]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
    )
    questions = ["When does my plan renew?", "How much is it?"]
    await worker.queue_frames(
        [LLMMessagesAppendFrame([{"role": "user", "content": q}], run_llm=True) for q in questions]
        + [EndFrame()]
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(runner.run(), timeout=30)
    summary = exporter.summary

    assert summary.turns is None and "turns" in summary.not_measured
    text = summary.format()
    assert "Turns:      not measured (no user speaking frames" in text
    assert "Turns:      0" not in text
    receiver.wait_for(lambda r: len(r.logs) >= 1, timeout=5)
    (record,) = receiver.logs  # the summary, and no turn record
    assert record.attributes["event_name"] == "pipecat_call_summary"
    assert "turns" not in record.attributes
    assert "turns" in record.attributes["not_measured"].split(",")
    assert "turns not measured" in record.body
