"""Turn latency, interruptions, errors, tool calls and call outcomes, on a controlled clock.

The test plays a call's frames in the order a real pipeline pushes them (user
speaking, transcription, bot speaking, a barge-in, a tool call, a rate-limited
TTS built on Pipecat's ``TTSService``) and moves a fake clock between them, so
every expected value follows from the timeline written here.
"""

import asyncio

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import instruments as m
from tests.helpers import FakeClock, LiveCall

STOP_SECS = 0.2


class ProviderError(Exception):
    """What an HTTP client raises for a provider's error status."""

    def __init__(self, status_code: int):
        super().__init__(f"provider answered {status_code}")
        self.status_code = status_code


class RateLimitedTTS(TTSService):
    """A TTS provider that answers every request with 429 Too Many Requests."""

    def __init__(self):
        super().__init__(settings=TTSSettings(model="sonic-2", voice="ava", language=None))

    async def run_tts(self, text: str, context_id: str):
        raise ProviderError(429)
        yield  # an async generator, like every TTS service


class Timeline:
    """Plays frames into a call at given times of a fake clock."""

    def __init__(self, call: LiveCall, clock: FakeClock):
        self._call, self._clock = call, clock

    async def at(self, seconds: float, *frames) -> None:
        self._clock.now = 1_800_000_000.0 + seconds
        for frame in frames:
            await self._call.worker.queue_frame(frame)
        await asyncio.sleep(0.05)  # let the frames flow; values come from the clock

    def user_stops(self, seconds: float):
        return [
            VADUserStoppedSpeakingFrame(stop_secs=STOP_SECS, timestamp=1_800_000_000.0 + seconds),
            UserStoppedSpeakingFrame(),
        ]


def user_starts():
    return [VADUserStartedSpeakingFrame(), UserStartedSpeakingFrame()]


async def test_a_call_with_a_barge_in_a_tool_call_and_a_rate_limited_tts(memory_metrics):
    clock = FakeClock()
    exporter = GrafanaMetricsExporter(
        meter_provider=memory_metrics.provider,
        call_id_label=True,  # read per call below
        tts_model="sonic-2",
        time_source=clock,
        call_attributes={"outcome": ["resolved", "escalated", "abandoned"]},
    )
    async with LiveCall([RateLimitedTTS(), exporter]) as call:
        t = Timeline(call, clock)
        # Turn 1: the user stops at 10.8 (VAD says so at 11.0); the bot speaks at 11.9.
        await t.at(10.0, *user_starts())
        await t.at(11.0, *t.user_stops(11.0), TranscriptionFrame("hi", "user", "now"))
        await t.at(11.9, BotStartedSpeakingFrame())
        await t.at(14.0, BotStoppedSpeakingFrame())
        # Turn 2: a tool call of 450 ms, the bot speaks at 22.3, the user barges in at 23.
        await t.at(20.0, *user_starts())
        await t.at(21.0, *t.user_stops(21.0), TranscriptionFrame("my order?", "user", "now"))
        await t.at(21.2, FunctionCallInProgressFrame("lookup_order", "call-1", {}))
        await t.at(21.65, FunctionCallResultFrame("lookup_order", "call-1", {}, {"ok": True}))
        await t.at(22.3, BotStartedSpeakingFrame())
        await t.at(23.0, *user_starts())
        await t.at(23.1, BotStoppedSpeakingFrame())
        # Turn 3: the TTS is rate limited, the bot answers anyway at 25.5.
        await t.at(24.0, *t.user_stops(24.0), TTSSpeakFrame("One moment please."))
        await t.at(25.5, BotStartedSpeakingFrame())
        await t.at(27.0, BotStoppedSpeakingFrame())
        exporter.set_call_attributes(outcome="resolved")
        await call.end()

    # Turn latency: from the user's real silence (VAD time - stop_secs) to bot speech.
    latencies = [11.9 - (11.0 - STOP_SECS), 22.3 - (21.0 - STOP_SECS), 25.5 - (24.0 - STOP_SECS)]
    (turn_latency,) = memory_metrics.points(m.TURN_LATENCY.name)
    assert turn_latency.count == 3
    assert turn_latency.sum == pytest.approx(sum(latencies) * 1000)

    assert memory_metrics.value(m.TURNS.name, interrupted="false") == 2
    assert memory_metrics.value(m.TURNS.name, interrupted="true") == 1
    assert memory_metrics.value(m.INTERRUPTIONS.name) == 1

    (function_latency,) = memory_metrics.points(m.FUNCTION_CALL_LATENCY.name)
    assert function_latency.attributes[m.FUNCTION] == "lookup_order"
    assert function_latency.sum == pytest.approx(450)
    assert memory_metrics.value(m.FUNCTION_CALLS.name, function="lookup_order", status="ok") == 1

    (error,) = memory_metrics.points(m.ERRORS.name)
    assert error.value == 1
    assert error.attributes == {
        m.CALL_ID: exporter.call_id,
        m.PROCESSOR: "RateLimitedTTS",
        m.SERVICE_TYPE: "tts",
        m.FATAL: "false",
        m.ERROR_TYPE: "rate_limit",
    }
    assert memory_metrics.value(m.CALLS_ENDED.name, outcome="resolved", end_reason="ended") == 1

    contributions = {
        p.attributes[m.CONTRIBUTION]: p.value
        for p in memory_metrics.points(m.TURN_CONTRIBUTION.name)
    }
    # Pipecat's breakdown accounts for the whole interval of each turn.
    assert sum(contributions.values()) == pytest.approx(sum(latencies) * 1000, rel=1e-6)
    assert contributions["endpointing_wait"] == pytest.approx(3 * STOP_SECS * 1000)
    assert set(contributions) <= set(m.CONTRIBUTIONS) | {m.OTHER}

    summary = exporter.summary
    assert (summary.turns, summary.interruptions) == (3, 1)
    assert summary.turn_latency.count == 3
    assert summary.turn_latency.max_ms == pytest.approx(max(latencies) * 1000)
    assert summary.errors == {"rate_limit": 1}
    assert summary.function_calls == {"lookup_order": 1}
    assert summary.attributes == {"outcome": "resolved"}
    assert "Turns:      3 (1 interrupted by the user)" in summary.format()


async def test_hanging_up_right_after_the_bot_spoke_is_not_a_barge_in(memory_metrics):
    clock = FakeClock()
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider, time_source=clock)
    async with LiveCall([exporter]) as call:
        t = Timeline(call, clock)
        await t.at(1.0, *user_starts())
        await t.at(2.0, *t.user_stops(2.0))
        await t.at(3.0, BotStartedSpeakingFrame())
        await t.at(4.0, BotStoppedSpeakingFrame())
        await call.end()
    assert memory_metrics.value(m.TURNS.name, interrupted="false") == 1
    with pytest.raises(AssertionError, match="never recorded"):
        memory_metrics.points(m.INTERRUPTIONS.name)


def test_call_attributes_are_declared_and_validated():
    exporter = GrafanaMetricsExporter(call_attributes={"outcome": ["resolved", "escalated"]})
    with pytest.raises(ValueError, match="not one of the declared values"):
        exporter.set_call_attributes(outcome="great")
    with pytest.raises(ValueError, match="was not declared"):
        exporter.set_call_attributes(sentiment="positive")
    with pytest.raises(ValueError, match="cannot be a label"):
        GrafanaMetricsExporter(call_attributes={"Outcome-Type": ["x"]})
    with pytest.raises(ValueError, match="cannot be a label"):
        GrafanaMetricsExporter(call_attributes={"call_id": ["x"]})


async def test_function_names_are_bounded(memory_metrics):
    from pipecat_grafana.labels import BoundedLabel

    names = BoundedLabel("function", 2)
    assert [names(n) for n in ("a", "b", "c", "a")] == ["a", "b", m.OTHER, "a"]


async def test_a_tool_call_ends_at_its_final_result_not_a_progress_update(memory_metrics):
    from pipecat.frames.frames import FunctionCallResultProperties

    clock = FakeClock()
    exporter = GrafanaMetricsExporter(meter_provider=memory_metrics.provider, time_source=clock)
    progress = FunctionCallResultProperties(is_final=False)
    async with LiveCall([exporter]) as call:
        t = Timeline(call, clock)
        started = FunctionCallInProgressFrame("search", "call-9", {})
        await t.at(1.0, started)
        await t.at(1.1, FunctionCallInProgressFrame("search", "call-9", {}))  # the broadcast twin
        await t.at(1.2, FunctionCallResultFrame("search", "call-9", {}, "50%", properties=progress))
        await t.at(1.5, FunctionCallResultFrame("search", "call-9", {}, {"hits": 3}))
        await call.end()
    (latency,) = memory_metrics.points(m.FUNCTION_CALL_LATENCY.name)
    assert latency.count == 1
    assert latency.sum == pytest.approx(500)
