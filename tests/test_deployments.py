"""What real deployments do that a single well-behaved call does not.

A module-level exporter put into every pipeline, a call ID reused, a malformed
frame, attributes set at the wrong time, model names without end, exporters with
different settings: each drives real pipelines through the real SDK to the test
receiver, and checks that no call's data is lost, mixed or mislabelled.
"""

import asyncio

import pytest
from pipecat.frames.frames import (
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData, TTSUsageMetricsData
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.helpers import LiveCall, Reporter, Trigger, metric, run_pipeline


def tts(characters: int, processor: str = "CartesiaTTSService#1") -> list:
    return [metric(TTSUsageMetricsData, processor=processor, value=characters)]


def tts_total(receiver, call_id: str) -> float:
    return receiver.total(m.TTS_CHARACTERS.name, **{m.CALL_ID: call_id})


def values_over_time(receiver, name: str, call_id: str) -> list[float]:
    """Every value the series of ``call_id`` took, request by request."""
    return [p.value for p in receiver.points(name) if p.attributes.get(m.CALL_ID) == call_id]


async def test_one_exporter_in_two_overlapping_calls_is_refused_and_the_first_call_is_whole(
    export_to,
):
    receiver = export_to
    shared = GrafanaMetricsExporter(tts_model="cartesia", call_id="first")
    async with LiveCall([Reporter([tts(40)] * 3), shared]) as first:
        await first.report()
        with pytest.raises(RuntimeError, match="one exporter belongs to one pipeline"):
            LiveCall([Reporter([tts(7)]), shared])  # the second call's Pipeline([...])
        await first.report()
        await first.report()
        await first.end()

    assert shared.summary.tts_characters == 120
    assert shared.summary.end_reason == "ended"
    receiver.wait_for(lambda r: tts_total(r, "first") == 120, timeout=5)
    receiver.wait_for(lambda r: r.total(m.CALLS_ACTIVE.name) == 0, timeout=5)
    assert receiver.total(m.CALLS.name) == 1


async def test_one_exporter_for_calls_one_after_another_keeps_working(export_to):
    receiver = export_to
    reused = GrafanaMetricsExporter(tts_model="cartesia")
    ids = []
    for characters in (40, 25):
        await run_pipeline([Reporter([tts(characters)]), reused], [Trigger("go")])
        ids.append(reused.call_id)
        assert reused.summary.tts_characters == characters
    assert ids[0] != ids[1]
    receiver.wait_for(lambda r: tts_total(r, ids[1]) == 25, timeout=5)
    assert tts_total(receiver, ids[0]) == 40
    assert receiver.total(m.CALLS.name) == 2


async def test_a_call_id_live_twice_gets_series_of_its_own(export_to, log_lines):
    receiver = export_to
    first = GrafanaMetricsExporter(tts_model="cartesia")
    second = GrafanaMetricsExporter(tts_model="cartesia")
    async with LiveCall([Reporter([tts(80)]), first], conversation_id="room-7") as one:
        async with LiveCall([Reporter([tts(40)]), second], conversation_id="room-7") as two:
            await one.report()
            await two.report()
            await two.end()
        await one.end()

    # The summaries keep the ID the application gave; the series are told apart.
    assert first.summary.call_id == second.summary.call_id == "room-7"
    receiver.wait_for(lambda r: tts_total(r, "room-7~2") == 40, timeout=5)
    receiver.wait_for(lambda r: tts_total(r, "room-7") == 80, timeout=5)
    warnings = [line for line in log_lines if "'room-7' was already used" in line]
    assert len(warnings) == 1 and "call_id='room-7~2'" in warnings[0]


async def test_a_call_id_reused_call_after_call_never_resets_a_series(export_to):
    receiver = export_to
    for characters in (80, 40, 10):
        exporter = GrafanaMetricsExporter(tts_model="cartesia", call_id="fixed")
        await run_pipeline([Reporter([tts(characters)]), exporter], [Trigger("go")])
        assert exporter.summary.call_id == "fixed"
    receiver.wait_for(lambda r: tts_total(r, "fixed~3") == 10, timeout=5)
    for call_id, characters in (("fixed", 80), ("fixed~2", 40), ("fixed~3", 10)):
        values = values_over_time(receiver, m.TTS_CHARACTERS.name, call_id)
        assert values == sorted(values), f"{call_id} went down: {values}"  # never reset
        assert values[-1] == characters


class Malformed(FrameProcessor):
    """Pushes a MetricsFrame whose data is not a list of MetricsData, on each Trigger."""

    def __init__(self, bad: list, **kwargs):
        super().__init__(**kwargs)
        self._bad = list(bad)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, Trigger) and self._bad:
            await self.push_frame(MetricsFrame(data=self._bad.pop(0)))


async def test_a_malformed_metrics_frame_is_skipped_and_the_call_goes_on(export_to, log_lines):
    receiver = export_to
    exporter = GrafanaMetricsExporter(tts_model="cartesia", call_id="malformed")
    bad = [None, ["not metrics data", tts(5)[0]], None]
    await run_pipeline(
        [Malformed(bad), Reporter([tts(40)] * 3), exporter], [Trigger("a"), Trigger("b")] * 2
    )
    # 3 good reports of 40, and the good item beside the bad one.
    assert exporter.summary.tts_characters == 125
    receiver.wait_for(lambda r: tts_total(r, "malformed") == 125, timeout=5)
    skipped = [line for line in log_lines if "skipped a MetricsFrame item" in line]
    assert len(skipped) == 2  # once per kind of bad item: NoneType, str


async def test_call_attributes_belong_to_one_call(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(
        meter_provider=memory_metrics.provider, call_attributes={"outcome": ["resolved", "lost"]}
    )
    exporter.set_call_attributes(outcome="resolved")
    await run_pipeline([exporter])
    assert exporter.summary.attributes == {"outcome": "resolved"}
    exporter.set_call_attributes(outcome="lost")  # too late: the call has ended
    exporter.set_call_attributes(outcome="lost")
    await run_pipeline([exporter])
    assert exporter.summary.attributes == {}
    ended = memory_metrics.points(m.CALLS_ENDED.name)
    assert {p.attributes["outcome"]: p.value for p in ended} == {"resolved": 1, "unset": 1}
    late = [line for line in log_lines if "came after call" in line]
    assert len(late) == 1 and "is ignored" in late[0]


async def test_model_and_processor_labels_are_bounded(export_to, log_lines):
    receiver = export_to
    reports = [
        metric(TTSUsageMetricsData, processor=f"Tts{i}#1", model=f"voice-{i}", value=1)
        for i in range(300)
    ]
    exporter = GrafanaMetricsExporter(call_id="many", max_label_values=20)
    await run_pipeline([Reporter([reports]), exporter], [Trigger("go")])
    receiver.wait_for(lambda r: tts_total(r, "many") == 300, timeout=5)
    series = receiver.latest(m.TTS_CHARACTERS.name)
    models = {dict(key)[m.MODEL] for key in series}
    # The bound is the process's: the pipeline's own processors (start-up times) count too.
    processors = {
        dict(key)[m.PROCESSOR]
        for spec in (m.TTS_CHARACTERS, m.STARTUP)
        for key in receiver.latest(spec.name)
    }
    assert len(models) == len(processors) == 21 and m.OTHER in models and m.OTHER in processors
    assert sum(p.value for p in series.values() if p.attributes[m.MODEL] == m.OTHER) == 280
    assert exporter.summary.tts_characters == 300
    assert len([line for line in log_lines if "distinct model values" in line]) == 1
    assert len([line for line in log_lines if "distinct processor values" in line]) == 1


async def test_the_label_bound_comes_from_its_variable(export_to, monkeypatch, log_lines):
    monkeypatch.setenv(cfg.MAX_LABEL_VALUES, "abc")
    GrafanaMetricsExporter()
    assert any(cfg.MAX_LABEL_VALUES in line and "whole number" in line for line in log_lines)
    monkeypatch.setenv(cfg.MAX_LABEL_VALUES, "3")
    with pytest.raises(ValueError, match="max_label_values=3 conflicts with max_label_values=100"):
        GrafanaMetricsExporter()  # the process already exports with 100 to this endpoint
    with pytest.raises(ValueError, match="max_label_values"):
        GrafanaMetricsExporter(max_label_values=0)


async def test_a_conflicting_function_name_bound_is_refused_naming_both(export_to):
    GrafanaMetricsExporter(max_function_names=50)
    with pytest.raises(ValueError, match="max_function_names=10 conflicts with .*=50"):
        GrafanaMetricsExporter(max_function_names=10)


async def test_the_summary_keeps_every_tool_name_while_the_label_is_bounded(export_to, log_lines):
    receiver = export_to
    exporter = GrafanaMetricsExporter(call_id="tools", max_function_names=3)
    frames = []
    for i in range(6):
        frames.append(FunctionCallInProgressFrame(f"tool_{i}", f"id-{i}", {}))
        frames.append(FunctionCallResultFrame(f"tool_{i}", f"id-{i}", {}, "ok"))
    await run_pipeline([exporter], frames)
    assert exporter.summary.function_calls == {f"tool_{i}": 1 for i in range(6)}
    receiver.wait_for(lambda r: r.total(m.FUNCTION_CALLS.name, call_id="tools") == 6, timeout=5)
    functions = {dict(k)[m.FUNCTION] for k in receiver.latest(m.FUNCTION_CALLS.name)}
    assert functions == {"tool_0", "tool_1", "tool_2", m.OTHER}
    assert len([line for line in log_lines if "distinct function values" in line]) == 1


async def test_each_exporter_waits_its_own_flush_timeout(export_to, log_lines):
    receiver = export_to
    GrafanaMetricsExporter(flush_timeout_s=5)  # the first one creates the shared pipeline
    receiver.hang()
    try:
        quick = GrafanaMetricsExporter(call_id="quick", flush_timeout_s=0.3)
        await run_pipeline([Reporter([tts(4)]), quick], [Trigger("go")])
    finally:
        receiver.unhang()
    (late,) = [line for line in log_lines if "were not exported within" in line]
    assert "call quick" in late and "within 0.3s" in late


class SlowToSetUp(FrameProcessor):
    """A processor whose setup takes longer than the caller is willing to wait."""

    async def setup(self, setup):
        await super().setup(setup)
        await asyncio.sleep(10)


async def test_a_call_cancelled_before_it_started_ends_as_cancelled(memory_metrics, log_lines):
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider)
    summaries = []

    @exporter.event_handler("on_call_summary")
    async def _summary(exporter, summary):
        summaries.append(summary)

    call = LiveCall([SlowToSetUp(), exporter])
    await call._runner.add_workers(call.worker)
    task = asyncio.create_task(call._runner.run())
    await asyncio.sleep(0.3)
    await call.worker.cancel()
    await asyncio.wait_for(task, timeout=30)

    assert exporter.summary.end_reason == "cancelled"
    assert [s.end_reason for s in summaries] == ["cancelled"]
    assert any("Call Summary" in line and exporter.call_id in line for line in log_lines)
    # It never started, so it is not counted as a call started or ended.
    assert memory_metrics.value(m.CALLS.name) == 0
    with pytest.raises(AssertionError):
        memory_metrics.points(m.CALLS_ENDED.name)


async def test_usage_reported_by_the_llm_is_still_counted_after_a_refused_second_pipeline(
    export_to,
):
    """The refusal does not disturb the call in progress: its links and tasks are kept."""
    receiver = export_to
    shared = GrafanaMetricsExporter(llm_model="gpt-4o", call_id="kept")
    usage = [metric(LLMUsageMetricsData, processor="OpenAILLMService#1")]
    async with LiveCall([Reporter([usage] * 2), shared]) as call:
        await call.report()
        with pytest.raises(RuntimeError):
            LiveCall([shared])
        await call.report()
        await call.end()
    receiver.wait_for(
        lambda r: r.total(m.LLM_TOKENS.name, call_id="kept", token_type="prompt") == 200, timeout=5
    )
