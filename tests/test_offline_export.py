"""The offline call, exported to a local OTLP receiver: every metric family arrives, and adds up.

This is what a user sees in Grafana after `pipecat-grafana demo` or `python example_bot.py`
without keys: the calls run through real Pipecat pipelines, with their incidents (a tool call,
a barge-in, a rate-limited TTS request) and outcome, the real exporter sends them over
OTLP/HTTP, and what the receiver decodes must match the summaries the exporters logged.
"""

import asyncio
from collections import Counter

import pytest

import pipecat_grafana
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.commands.demo import SERVICE_NAME, OfflineDemo, scripted_outcome
from pipecat_grafana.offline import TOOL_NAME
from pipecat_grafana.summary import CallSummary
from tests.otlp_receiver import OtlpReceiver

TURNS = 3
CALLS = 2
SPEED = 0.05
SEED = 11
# Generous: two concurrent calls of three turns at SPEED take about a second.
RUN_TIMEOUT_S = 60

# The contract's instruments (instruments.py) that every call reports. (Turn latency, errors,
# interruptions, function calls and the like arrive when a call has them.)
METRICS_MD_FAMILIES = (
    *m.LATENCY,
    m.LLM_TOKENS,
    m.TTS_CHARACTERS,
    m.STT_AUDIO,
    m.COST,
    m.SESSION_DURATION,
    m.CALLS,
    m.CALLS_ACTIVE,
)
# What the offline calls have besides: each has a tool call, a barge-in, a rate-limited TTS
# request and an outcome.
CONVERSATION_FAMILIES = (*m.CONVERSATION, m.CALLS_ENDED)
# The summary names each latency after its instrument: voice.<name>.milliseconds.
SUMMARY_NAME = {spec: spec.name.split(".")[1] for spec in m.LATENCY}
SCRIPTED_SERVICES = {
    "stt": "ScriptedSTTService",
    "llm": "ScriptedLLMService",
    "tts": "ScriptedTTSService",
}
# A latency outside this range, in ms, is a unit mistake or a broken measurement.
PLAUSIBLE_MS = (0.0, 10_000.0)


@pytest.fixture
async def offline_calls(export_to, monkeypatch) -> tuple[OtlpReceiver, list[CallSummary]]:
    # Each call's own latency histograms (the switch), so that every figure can be
    # checked per call; tests/test_series_cost.py checks the default, process-wide ones.
    monkeypatch.setenv(cfg.CALL_HISTOGRAMS, "true")
    demo = OfflineDemo(turns=TURNS, calls=CALLS, speed=SPEED, seed=SEED)
    await asyncio.wait_for(demo.run(), RUN_TIMEOUT_S)
    # Every call's end was exported already; shutting down sends nothing new but waits
    # for any export still in flight.
    pipecat_grafana.shutdown(timeout_s=5)
    summaries = demo.summaries
    assert len(summaries) == CALLS
    return export_to, summaries


def test_every_metric_family_arrives_with_plausible_values(offline_calls):
    receiver, summaries = offline_calls
    assert {spec.name for spec in METRICS_MD_FAMILIES} <= receiver.names()
    assert {spec.name for spec in CONVERSATION_FAMILIES} <= receiver.names()
    assert receiver.names() <= {spec.name for spec in m.ALL}
    assert {p.resource["service.name"] for p in receiver.points()} == {SERVICE_NAME}

    for summary in summaries:
        call = summary.call_id
        for spec in m.LATENCY:
            series = [
                p for p in receiver.latest(spec.name).values() if p.attributes[m.CALL_ID] == call
            ]
            assert series, f"{spec.name}: no series for call {call}"
            for point in series:
                assert point.value > 0, spec.name
                low, high = PLAUSIBLE_MS
                assert low <= point.min <= point.max < high, (spec.name, point.attributes)
                assert point.min <= point.sum / point.value <= point.max, spec.name
        # Each service answers once per turn at least.
        for service_type, processor in SCRIPTED_SERVICES.items():
            ttfb = receiver.total(m.TTFB.name, call_id=call, processor=processor)
            assert ttfb >= TURNS, (service_type, ttfb)
        # STT TTFB runs from the end of speech, which the VAD reports 0.2 s after it.
        (stt_ttfb,) = [
            p
            for p in receiver.latest(m.TTFB.name).values()
            if p.attributes[m.CALL_ID] == call and p.attributes[m.SERVICE_TYPE] == "stt"
        ]
        assert stt_ttfb.min >= 200

        prompt = receiver.total(m.LLM_TOKENS.name, call_id=call, token_type="prompt")
        completion = receiver.total(m.LLM_TOKENS.name, call_id=call, token_type="completion")
        assert prompt > completion > 0
        token_types = {
            p.attributes[m.TOKEN_TYPE]
            for p in receiver.latest(m.LLM_TOKENS.name).values()
            if p.attributes[m.CALL_ID] == call
        }
        assert token_types <= set(m.TOKEN_TYPES)
        # A few spoken sentences per turn, and a few seconds of the caller's audio.
        assert 20 * TURNS < receiver.total(m.TTS_CHARACTERS.name, call_id=call) < 400 * TURNS
        assert 0.5 * TURNS < receiver.total(m.STT_AUDIO.name, call_id=call) < 30 * TURNS
        for service_type in SCRIPTED_SERVICES:
            cost = receiver.total(m.COST.name, call_id=call, service_type=service_type)
            assert 0 < cost < 1, (service_type, cost)

    durations = receiver.latest(m.SESSION_DURATION.name).values()
    assert {p.attributes[m.END_REASON] for p in durations} == {"ended"}
    assert receiver.total(m.SESSION_DURATION.name, end_reason="ended") == CALLS
    assert receiver.total(m.CALLS.name) == CALLS
    assert receiver.total(m.CALLS_ACTIVE.name) == 0


def test_each_call_has_its_incidents_and_outcome_and_exports_them(offline_calls):
    receiver, summaries = offline_calls
    for i, summary in enumerate(summaries):
        assert (summary.turns, summary.interruptions) == (TURNS, 1)
        assert summary.turn_latency is not None and summary.turn_latency.count == TURNS
        assert summary.errors == {"rate_limit": 1}
        assert summary.function_calls == {TOOL_NAME: 1}
        # Call i of the demo has the seed SEED + i.
        assert summary.attributes == {"outcome": scripted_outcome(SEED + i)}

    for summary in summaries:
        call = summary.call_id
        assert receiver.total(m.TURNS.name, call_id=call) == summary.turns
        assert receiver.total(m.TURNS.name, call_id=call, interrupted="true") == 1
        assert receiver.total(m.INTERRUPTIONS.name, call_id=call) == summary.interruptions
        for error_type, count in summary.errors.items():
            got = receiver.total(m.ERRORS.name, call_id=call, error_type=error_type)
            assert got == count, error_type
        (error,) = [
            p for p in receiver.latest(m.ERRORS.name).values() if p.attributes[m.CALL_ID] == call
        ]
        assert error.attributes[m.PROCESSOR] == "ScriptedTTSService"
        assert error.attributes[m.SERVICE_TYPE] == "tts"
        assert error.attributes[m.FATAL] == "false"
        for function, count in summary.function_calls.items():
            got = receiver.total(m.FUNCTION_CALLS.name, call_id=call, function=function)
            assert got == count, function
            assert (
                receiver.total(m.FUNCTION_CALLS.name, call_id=call, function=function, status="ok")
                == count
            )
        (latency,) = [
            p
            for p in receiver.latest(m.TURN_LATENCY.name).values()
            if p.attributes[m.CALL_ID] == call
        ]
        assert latency.value == summary.turn_latency.count
        assert latency.sum == pytest.approx(summary.turn_latency.avg_ms * latency.value)
        # Pipecat's breakdown accounts for the whole of each turn's latency (to within the
        # microseconds between its clock readings and the latency's).
        contributions = receiver.total(m.TURN_CONTRIBUTION.name, call_id=call)
        assert contributions == pytest.approx(latency.sum, rel=1e-3)


def test_receiver_totals_equal_the_summaries(offline_calls):
    receiver, summaries = offline_calls

    for summary in summaries:
        call = summary.call_id
        for token_type, count in summary.tokens.items():
            got = receiver.total(m.LLM_TOKENS.name, call_id=call, token_type=token_type)
            assert got == count, token_type
        assert receiver.total(m.TTS_CHARACTERS.name, call_id=call) == summary.tts_characters
        assert receiver.total(m.STT_AUDIO.name, call_id=call) == pytest.approx(
            summary.stt_audio_seconds
        )
        assert summary.costs
        for cost in summary.costs:
            got = receiver.total(
                m.COST.name, call_id=call, service_type=cost.service_type, model=cost.model
            )
            assert got == pytest.approx(cost.usd), cost
        assert receiver.total(m.COST.name, call_id=call) == pytest.approx(summary.total_cost_usd)
        assert summary.latency
        for stats in summary.latency:
            if stats.metric == "function_call":  # per function, not per processor
                got = receiver.total(
                    m.FUNCTION_CALL_LATENCY.name, call_id=call, function=stats.processor
                )
            else:
                (spec,) = [s for s, name in SUMMARY_NAME.items() if name == stats.metric]
                got = receiver.total(spec.name, call_id=call, processor=stats.processor)
            assert got == stats.count, (stats.metric, stats.processor)
        (duration,) = [
            p
            for p in receiver.latest(m.SESSION_DURATION.name).values()
            if p.attributes[m.CALL_ID] == call
        ]
        assert duration.value == 1
        assert duration.sum == pytest.approx(summary.duration_seconds, abs=0.01)

    # Across calls: the fleet-wide series and the sums per label.
    outcomes = Counter(s.attributes["outcome"] for s in summaries)
    for outcome, count in outcomes.items():
        got = receiver.total(m.CALLS_ENDED.name, outcome=outcome, end_reason="ended")
        assert got == count, outcome
    assert receiver.total(m.CALLS_ENDED.name) == len(summaries)
    for token_type in {t for s in summaries for t in s.tokens}:
        assert receiver.total(m.LLM_TOKENS.name, token_type=token_type) == sum(
            s.tokens.get(token_type, 0) for s in summaries
        )
    assert receiver.total(m.TTS_CHARACTERS.name) == sum(s.tts_characters for s in summaries)
    assert receiver.total(m.COST.name) == pytest.approx(sum(s.total_cost_usd for s in summaries))
    assert receiver.total(m.CALLS.name) == len(summaries)
    assert receiver.total(m.SESSION_DURATION.name) == len(summaries)
