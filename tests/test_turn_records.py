"""Turn records: one per turn of a real offline call, read back from a real OTLP receiver.

The offline call runs Pipecat's own VAD, turn strategy, latency observer and function
calling; the exporter sends its records to the local receiver, which decodes them. What a
record must say comes from Pipecat (the latencies its ``UserBotLatencyObserver`` reported,
read from the exporter's own observer), from the summary, or from the offline script.
"""

import pytest
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana.offline import GREETING, TOOL_NAME, run_offline_call
from pipecat_grafana.offline.script import EXCHANGES
from pipecat_grafana.summary import EVENT_NAME, MAX_KEYS_PER_COUNT
from pipecat_grafana.turns import MAX_TEXT_CHARS, TURN_EVENT_NAME, TurnRecord

TURNS = 4
SPEED = 0.05
SEED = 3
SENTENCES = [GREETING] + [s for e in EXCHANGES for s in (e.user, e.bot)]


class LatencyTap(FrameProcessor):
    """Collects the latencies Pipecat's ``UserBotLatencyObserver`` of the exporter reports."""

    def __init__(self, exporter: GrafanaMetricsExporter):
        super().__init__()
        self._exporter = exporter
        self.latencies_ms: list[float] = []

    async def setup(self, setup):
        await super().setup(setup)  # after the exporter's: it stands before this one
        observer = self._exporter.latency_observer
        assert observer is not None

        @observer.event_handler("on_latency_measured")
        async def measured(observer, seconds: float):
            self.latencies_ms.append(seconds * 1000)

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def offline_call(receiver, *, tracing: bool = False, **arguments):
    exporter = GrafanaMetricsExporter(**arguments)
    tap = LatencyTap(exporter)
    await run_offline_call(
        turns=TURNS, processors=[exporter, tap], speed=SPEED, seed=SEED, enable_tracing=tracing
    )
    summary = exporter.summary
    receiver.wait_for(lambda r: len(turn_records(r)) == summary.turns, timeout=10)
    receiver.wait_for(lambda r: r.records(EVENT_NAME), timeout=10)
    return summary, tap.latencies_ms


def turn_records(receiver):
    return sorted(receiver.records(TURN_EVENT_NAME), key=lambda r: r.attributes["turn"])


async def test_one_record_per_turn_with_pipecats_latencies(export_to):
    receiver = export_to
    summary, latencies = await offline_call(receiver)

    records = turn_records(receiver)
    assert summary.turns == TURNS == len(records)
    assert [r.attributes["turn"] for r in records] == list(range(1, TURNS + 1))
    assert {r.attributes["call_id"] for r in records} == {summary.call_id}
    starts = [r.attributes["started_at"] for r in records]
    assert starts == sorted(starts)
    # Each turn's latency is the one Pipecat's observer reported for it, in order.
    assert len(latencies) == TURNS
    assert [r.attributes["latency_ms"] for r in records] == [round(v, 1) for v in latencies]
    # Where it went: Pipecat's contributions, which add up to the latency.
    for record, latency in zip(records, latencies, strict=True):
        parts = [v for k, v in record.attributes.items() if k.startswith("contribution_")]
        assert parts and sum(parts) == pytest.approx(latency, abs=0.1 * len(parts))
        assert {"ttfb_llm_ms", "ttfb_tts_ms"} <= set(record.attributes)
    # The barge-in marks one turn, not the last (the caller spoke over it, then on).
    interrupted = [r.attributes["turn"] for r in records if r.attributes["interrupted"]]
    assert len(interrupted) == summary.interruptions == 1
    assert interrupted[0] < TURNS
    # The tool call and the rate-limited TTS request are in the turns they happened in.
    with_tools = [r for r in records if r.attributes["tool_calls"]]
    assert sum(r.attributes["tool_calls"] for r in records) == sum(summary.function_calls.values())
    assert len(with_tools) == 1 and TOOL_NAME in with_tools[0].attributes["tool_call_list"]
    assert "(ok, " in with_tools[0].attributes["tool_call_list"]
    assert sum(r.attributes["errors"] for r in records) == sum(summary.errors.values())
    assert sum(r.attributes.get("errors_rate_limit", 0) for r in records) == 1
    # No words by default.
    assert not any({"user_text", "bot_text"} & set(r.attributes) for r in records)
    # The summary's record counts them.
    (summary_record,) = receiver.records(EVENT_NAME)
    assert summary_record.attributes["turns"] == len(records)


async def test_by_default_no_word_of_the_call_leaves_the_process(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.TRACES, "true")
    summary, _ = await offline_call(receiver, tracing=True)
    receiver.wait_for(lambda r: any(s.name == "turn" for s in r.spans), timeout=10)

    records = turn_records(receiver)
    assert len(records) == summary.turns == TURNS
    # Each turn record links to its turn's span in the call's trace.
    (conversation,) = [s for s in receiver.spans if s.name == "conversation"]
    turn_spans = {s.span_id for s in receiver.spans if s.name == "turn"}
    assert {r.trace_id for r in records} == {conversation.trace_id}
    assert {r.span_id for r in records} <= turn_spans
    # Metrics, log records and spans, byte for byte: none of the script's sentences.
    sent = receiver.received()
    assert receiver.requests and receiver.spans  # metrics and traces did arrive
    leaked = [s for s in SENTENCES if s.encode() in sent]
    assert not leaked


async def test_transcripts_carry_the_words_through_the_redactor(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.TRANSCRIPTS, "true")
    summary, _ = await offline_call(receiver, redact=str.upper)

    records = turn_records(receiver)
    assert len(records) == summary.turns == TURNS
    users = {e.user.upper() for e in EXCHANGES}
    bots = [e.bot.upper() for e in EXCHANGES]
    for record in records:
        user_text, bot_text = record.attributes["user_text"], record.attributes["bot_text"]
        assert user_text in users  # the caller's words, redacted
        assert bot_text and any(bot.startswith(bot_text) for bot in bots)
        assert len(user_text) <= MAX_TEXT_CHARS and len(bot_text) <= MAX_TEXT_CHARS
    # Not redacted, they would be the script's words: none of those left the process.
    assert not [s for s in SENTENCES if s.encode() in receiver.received()]


async def test_transcripts_off_by_argument_wins_over_the_variable(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.TRANSCRIPTS, "true")
    await offline_call(receiver, transcripts=False)
    assert not any({"user_text", "bot_text"} & set(r.attributes) for r in turn_records(receiver))


async def test_a_redactor_that_raises_drops_the_words_and_is_said_once(export_to, log_lines):
    receiver = export_to

    def redact(text: str) -> str:
        raise RuntimeError(f"cannot redact {text}")

    summary, _ = await offline_call(receiver, transcripts=True, redact=redact)

    records = turn_records(receiver)
    assert summary.end_reason == "ended" and len(records) == TURNS
    assert not any({"user_text", "bot_text"} & set(r.attributes) for r in records)
    said = [line for line in log_lines if "redact= function raised RuntimeError" in line]
    assert len(said) == 1
    assert not [s for s in SENTENCES if s in said[0]]  # the message holds no words either


def test_a_turn_records_keys_are_bounded_and_distinct():
    names = {f"step-{i}": float(i + 1) for i in range(3 * MAX_KEYS_PER_COUNT)}
    names |= {"step_1": 0.5}  # collides with "step-1" once made a key
    record = TurnRecord(call_id="c", turn=1, interrupted=False, contributions_ms=names)

    attributes = record.log_attributes()
    keys = [k for k in attributes if k.startswith("contribution_")]
    assert len(keys) == MAX_KEYS_PER_COUNT + 1  # and the rest in contribution_other_ms
    assert "contribution_other_ms" in keys
    assert sum(attributes[k] for k in keys) == pytest.approx(sum(names.values()))
    assert list(attributes)[:4] == ["event_name", "call_id", "turn", "interrupted"]
    assert "latency_ms" not in attributes  # not measured: absent, not 0


def test_a_redact_argument_that_is_not_a_function_is_refused():
    with pytest.raises(ValueError, match="redact"):
        GrafanaMetricsExporter(redact="card numbers")
