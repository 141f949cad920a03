"""The offline call runs a real Pipecat pipeline whose metrics come from Pipecat's own code.

Two calls of the same seed: one with its incidents (a tool call, a barge-in, a rate-limited
TTS request), whose frames must show Pipecat's own handling of each, and one without, whose
metrics are counted exactly.
"""

import asyncio
from collections import Counter
from typing import TypeVar

import pytest
import pytest_asyncio
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ClientConnectedFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.metrics.metrics import (
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
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory

from pipecat_grafana.offline import (
    DEFAULT_LLM_MODEL,
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_MODEL,
    GREETING,
    TOOL_NAME,
    TTSRateLimitError,
    run_offline_call,
    run_offline_calls,
)

TURNS = 3
ANSWERS = TURNS + 1  # the bot speaks the greeting, then answers each turn
SPEED = 0.05
SEED = 1
# Generous: a call of three turns at SPEED takes about a second.
CALL_TIMEOUT_SECS = 30

EXPECTED_TYPES = (
    TTFBMetricsData,
    ProcessingMetricsData,
    TTFAMetricsData,
    TTFATMetricsData,
    TextAggregationMetricsData,
    LLMUsageMetricsData,
    TTSUsageMetricsData,
    STTUsageMetricsData,
    TurnMetricsData,
)

# The VAD's stop_secs: STT TTFB runs from the end of speech, which the VAD
# reports this long after it, so no STT TTFB can be shorter.
VAD_STOP_SECS = 0.2

M = TypeVar("M", bound=MetricsData)


CONVERSATION_FRAMES = (
    ClientConnectedFrame,
    UserStartedSpeakingFrame,
    InterruptionFrame,
    TranscriptionFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    ErrorFrame,
)


class CallRecorder(BaseObserver):
    """Sees each frame once: the metrics, the sentences the bot spoke, the conversation."""

    def __init__(self):
        super().__init__(observe_every_push=False)
        self.metrics: list[MetricsData] = []
        self.spoken: list[str] = []
        self.conversation: list[Frame] = []
        self._siblings: set[int] = set()

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if isinstance(frame, MetricsFrame):
            self.metrics.extend(frame.data)
        elif isinstance(frame, TTSTextFrame):
            self.spoken.append(frame.text)
        elif isinstance(frame, CONVERSATION_FRAMES) and frame.id not in self._siblings:
            # A broadcast frame travels both ways as two frames: keep the first.
            if frame.broadcast_sibling_id is not None:
                self._siblings.add(frame.broadcast_sibling_id)
            self.conversation.append(frame)

    def of_type(self, cls: type[Frame]) -> list:
        return [frame for frame in self.conversation if isinstance(frame, cls)]

    def barge_ins(self) -> list[int]:
        """Where in ``conversation`` the caller started speaking while the bot was speaking."""
        speaking, found = False, []
        for index, frame in enumerate(self.conversation):
            if isinstance(frame, BotStartedSpeakingFrame):
                speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                speaking = False
            elif isinstance(frame, UserStartedSpeakingFrame) and speaking:
                found.append(index)
        return found


class EndOfPipeline(FrameProcessor):
    """Stands where the exporter stands: records what reaches the end of the pipeline."""

    def __init__(self):
        super().__init__()
        self.metrics: list[MetricsData] = []
        self.audio_in_secs = 0.0
        self.ended = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, MetricsFrame):
            self.metrics.extend(frame.data)
        elif isinstance(frame, InputAudioRawFrame):
            self.audio_in_secs += len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
        elif isinstance(frame, EndFrame):
            self.ended = True
        await self.push_frame(frame, direction)


def of_type(metrics: list[MetricsData], cls: type[M]) -> list[M]:
    # Exact type: every metric type subclasses MetricsData directly, but an
    # isinstance check would still let a subclass pass for its parent.
    return [m for m in metrics if type(m) is cls]


def from_service(metrics: list[MetricsData], service: str) -> list[MetricsData]:
    return [m for m in metrics if m.processor.startswith(service)]


def is_initial(metric: MetricsData) -> bool:
    # The worker's zero TTFB and processing values, sent at start before any
    # service has set its model.
    return type(metric) in (TTFBMetricsData, ProcessingMetricsData) and metric.model is None


def measured(metrics: list[MetricsData], cls: type[M]) -> list[M]:
    return [m for m in of_type(metrics, cls) if not is_initial(m)]


class Call:
    def __init__(self, recorder: CallRecorder, end: EndOfPipeline):
        self.recorder = recorder
        self.end = end


async def _run_call(*, incidents: bool) -> Call:
    recorder = CallRecorder()
    end = EndOfPipeline()
    await asyncio.wait_for(
        run_offline_call(
            turns=TURNS,
            processors=[end],
            observers=[recorder],
            speed=SPEED,
            seed=SEED,
            incidents=incidents,
        ),
        CALL_TIMEOUT_SECS,
    )
    return Call(recorder, end)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call() -> Call:
    """A call of questions and answers only, whose metrics are counted exactly."""
    return await _run_call(incidents=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def incident_call() -> Call:
    """The same call with its incidents, as `pipecat-grafana demo` runs it."""
    return await _run_call(incidents=True)


def test_the_call_ends_with_an_end_frame(call: Call):
    assert call.end.ended


def test_a_call_without_incidents_has_none(call: Call):
    assert not call.recorder.of_type(ErrorFrame)
    assert not call.recorder.of_type(FunctionCallInProgressFrame)
    assert not call.recorder.barge_ins()


# --------------------------------------------------------------------------------------------
# Incidents, through Pipecat's own code paths


def test_the_llm_calls_the_tool_and_answers_from_its_result(incident_call: Call):
    recorder = incident_call.recorder
    (started,) = recorder.of_type(FunctionCallInProgressFrame)
    (result,) = recorder.of_type(FunctionCallResultFrame)
    assert started.function_name == result.function_name == TOOL_NAME
    assert result.tool_call_id == started.tool_call_id
    assert started.arguments["question"] in [t.text for t in recorder.of_type(TranscriptionFrame)]
    assert result.error is None
    assert result.result["balance_usd"] == 12.40
    # The tool call is an inference of its own; the answer from its result is another.
    llm_ttfb = from_service(measured(recorder.metrics, TTFBMetricsData), "ScriptedLLMService")
    assert len(llm_ttfb) == TURNS + 1
    after = recorder.conversation[recorder.conversation.index(result) :]
    assert any(isinstance(frame, BotStartedSpeakingFrame) for frame in after)


def test_the_caller_barges_in_and_pipecat_interrupts_the_bot(incident_call: Call):
    recorder = incident_call.recorder
    (barge_in,) = recorder.barge_ins()
    after = recorder.conversation[barge_in:]
    # Pipecat's user turn strategy interrupts the bot, which stops before answering again.
    assert isinstance(after[1], InterruptionFrame)
    stopped = next(i for i, f in enumerate(after) if isinstance(f, BotStoppedSpeakingFrame))
    started = next(i for i, f in enumerate(after) if isinstance(f, BotStartedSpeakingFrame))
    assert stopped < started
    # Every question is still answered: one transcript and one answer per turn.
    assert len(recorder.of_type(TranscriptionFrame)) == TURNS
    assert len(recorder.of_type(BotStartedSpeakingFrame)) == ANSWERS


def test_the_tts_is_rate_limited_once_and_speaks_the_sentence_anyway(incident_call: Call):
    recorder = incident_call.recorder
    (error,) = recorder.of_type(ErrorFrame)
    assert error.category is ErrorCategory.RATE_LIMIT
    assert error.processor.name.startswith("ScriptedTTSService")
    assert isinstance(error.exception, TTSRateLimitError)
    assert error.exception.status_code == 429
    assert not error.fatal
    # The refused request is retried: every answer gets its audio and one TTFB.
    tts_ttfb = from_service(measured(recorder.metrics, TTFBMetricsData), "ScriptedTTSService")
    assert len(tts_ttfb) == ANSWERS
    # Every spoken sentence was billed once, the refused request not at all; the answer
    # the caller talked over was billed for sentences it never got to speak.
    billed = iter(m.value for m in measured(recorder.metrics, TTSUsageMetricsData))
    assert all(len(sentence) in billed for sentence in recorder.spoken)


def test_the_caller_connects_and_the_bot_greets_before_the_first_question(call: Call):
    conversation = call.recorder.conversation
    assert isinstance(conversation[0], ClientConnectedFrame)
    greeting, stopped, question = (
        next(i for i, f in enumerate(conversation) if isinstance(f, kind))
        for kind in (BotStartedSpeakingFrame, BotStoppedSpeakingFrame, UserStartedSpeakingFrame)
    )
    assert greeting < stopped < question  # the caller listens to the greeting first
    assert call.recorder.spoken[0] == GREETING
    assert not call.recorder.barge_ins()


def test_incidents_leave_the_script_as_the_seed_wrote_it(call: Call, incident_call: Call):
    def transcripts(c: Call) -> list[str]:
        return [frame.text for frame in c.recorder.of_type(TranscriptionFrame)]

    assert transcripts(incident_call) == transcripts(call)


@pytest.mark.parametrize("cls", EXPECTED_TYPES, ids=lambda cls: cls.__name__)
def test_every_metric_type_appears(call: Call, cls: type[MetricsData]):
    assert measured(call.recorder.metrics, cls)


def test_the_processor_at_the_end_sees_what_the_observer_sees(call: Call):
    def census(metrics: list[MetricsData]) -> Counter:
        return Counter((type(m).__name__, m.processor) for m in metrics)

    assert call.end.metrics
    assert census(call.end.metrics) == census(call.recorder.metrics)


def test_the_worker_starts_with_zero_ttfb_and_processing_per_service(call: Call):
    for cls in (TTFBMetricsData, ProcessingMetricsData):
        initial = [m for m in of_type(call.recorder.metrics, cls) if is_initial(m)]
        assert sorted(m.processor.split("#")[0] for m in initial) == [
            "ScriptedLLMService",
            "ScriptedSTTService",
            "ScriptedTTSService",
        ]
        assert all(m.value == 0 for m in initial)


def test_each_service_reports_its_model(call: Call):
    metrics = [m for m in call.recorder.metrics if m.model is not None]
    assert metrics
    models = {m.processor.split("#")[0]: m.model for m in metrics}
    assert models == {
        "ScriptedSTTService": DEFAULT_STT_MODEL,
        "ScriptedLLMService": DEFAULT_LLM_MODEL,
        "ScriptedTTSService": DEFAULT_TTS_MODEL,
    }


@pytest.mark.parametrize(
    "service", ["ScriptedSTTService", "ScriptedLLMService", "ScriptedTTSService"]
)
def test_one_ttfb_per_turn_and_service_in_seconds(call: Call, service: str):
    ttfb = from_service(measured(call.recorder.metrics, TTFBMetricsData), service)
    assert len(ttfb) == (ANSWERS if service == "ScriptedTTSService" else TURNS)
    assert all(0 < m.value < 5 for m in ttfb)


def test_stt_ttfb_runs_from_the_end_of_speech(call: Call):
    ttfb = from_service(measured(call.recorder.metrics, TTFBMetricsData), "ScriptedSTTService")
    assert ttfb
    assert all(m.value >= VAD_STOP_SECS for m in ttfb)


def test_ttfa_adds_the_leading_silence_to_the_tts_ttfb(call: Call):
    ttfa = measured(call.recorder.metrics, TTFAMetricsData)
    tts_ttfb = from_service(measured(call.recorder.metrics, TTFBMetricsData), "ScriptedTTSService")
    assert len(ttfa) == ANSWERS
    assert [m.ttfb for m in ttfa] == [m.value for m in tts_ttfb]
    for m in ttfa:
        assert m.leading_silence > 0
        assert m.ttfa == pytest.approx(m.ttfb + m.leading_silence)


def test_ttfat_follows_the_llm_ttfb(call: Call):
    ttfat = measured(call.recorder.metrics, TTFATMetricsData)
    llm_ttfb = from_service(measured(call.recorder.metrics, TTFBMetricsData), "ScriptedLLMService")
    assert len(ttfat) == TURNS
    assert [m.ttfb for m in ttfat] == [m.value for m in llm_ttfb]
    assert all(m.ttfat > m.ttfb and m.thinking_time > 0 for m in ttfat)


def test_processing_time_per_llm_inference_and_tts_sentence(call: Call):
    processing = measured(call.recorder.metrics, ProcessingMetricsData)
    assert len(from_service(processing, "ScriptedLLMService")) == TURNS
    assert len(from_service(processing, "ScriptedTTSService")) == len(call.recorder.spoken)
    # A streaming STT reports its latency as TTFB only.
    assert not from_service(processing, "ScriptedSTTService")
    assert all(0 < m.value < 5 for m in processing)


def test_text_aggregation_at_least_once_per_turn(call: Call):
    aggregation = measured(call.recorder.metrics, TextAggregationMetricsData)
    assert len(aggregation) >= TURNS
    assert all(0 <= m.value < 5 for m in aggregation)


def test_one_smart_turn_prediction_per_turn_in_milliseconds(call: Call):
    turns = of_type(call.recorder.metrics, TurnMetricsData)
    assert len(turns) == TURNS
    for m in turns:
        assert m.is_complete
        assert 0 < m.probability <= 1
        assert 0 < m.e2e_processing_time_ms < 1000


def test_llm_usage_once_per_turn_with_cache_reads_after_the_first(call: Call):
    usage = [m.value for m in measured(call.recorder.metrics, LLMUsageMetricsData)]
    assert len(usage) == TURNS
    for tokens in usage:
        assert tokens.prompt_tokens > 0
        assert tokens.completion_tokens > 0
        assert tokens.total_tokens == tokens.prompt_tokens + tokens.completion_tokens
        assert tokens.reasoning_tokens == 0
    # The context grows by a user and an assistant message every turn.
    assert [t.prompt_tokens for t in usage] == sorted(t.prompt_tokens for t in usage)
    assert usage[0].cache_read_input_tokens == 0
    for previous, tokens in zip(usage, usage[1:], strict=False):
        assert tokens.cache_read_input_tokens is not None
        assert 0 < tokens.cache_read_input_tokens <= previous.prompt_tokens


def test_tts_usage_counts_the_characters_of_each_spoken_sentence(call: Call):
    characters = [m.value for m in measured(call.recorder.metrics, TTSUsageMetricsData)]
    assert len(call.recorder.spoken) >= TURNS
    assert characters == [len(sentence) for sentence in call.recorder.spoken]


def test_stt_usage_adds_up_to_the_audio_fed_including_an_end_of_call_report(call: Call):
    usage = measured(call.end.metrics, STTUsageMetricsData)
    # One report per final transcript, and one when the STT stops, for the audio
    # streamed after the last transcript.
    assert len(usage) == TURNS + 1
    assert all(m.value.audio_seconds > 0 for m in usage)
    assert call.end.audio_in_secs > 0
    assert sum(m.value.audio_seconds for m in usage) == pytest.approx(call.end.audio_in_secs)


async def test_a_seed_makes_a_call_repeatable():
    async def spoken(seed: int) -> list[str]:
        recorder = CallRecorder()
        await asyncio.wait_for(
            run_offline_call(turns=1, observers=[recorder], speed=SPEED, seed=seed),
            CALL_TIMEOUT_SECS,
        )
        return recorder.spoken

    first = await spoken(7)
    assert first
    assert await spoken(7) == first


async def test_a_seed_makes_the_incidents_repeatable():
    async def incidents(seed: int) -> list[tuple[str, str]]:
        recorder = CallRecorder()
        await asyncio.wait_for(
            run_offline_call(turns=2, observers=[recorder], speed=SPEED, seed=seed),
            CALL_TIMEOUT_SECS,
        )
        # Which question the tool is called for, and which sentence the 429 delays. What the
        # bot gets to say before the barge-in cuts it off depends on timing, so it is left out.
        (started,) = recorder.of_type(FunctionCallInProgressFrame)
        (error,) = recorder.of_type(ErrorFrame)
        assert len(recorder.barge_ins()) == 1
        return [(started.arguments["question"], str(error.exception))]

    first = await incidents(3)
    assert await incidents(3) == first


async def test_concurrent_calls_each_finish_with_their_own_processors():
    ends: list[EndOfPipeline] = []

    def processors() -> list[FrameProcessor]:
        ends.append(EndOfPipeline())
        return [ends[-1]]

    await asyncio.wait_for(
        run_offline_calls(calls=2, turns=2, processors_factory=processors, speed=SPEED, seed=SEED),
        CALL_TIMEOUT_SECS,
    )

    assert len(ends) == 2
    for end in ends:
        assert end.ended
        # Two answers, and the tool call before one of them.
        llm_ttfb = from_service(measured(end.metrics, TTFBMetricsData), "ScriptedLLMService")
        assert len(llm_ttfb) == 3
        assert len(of_type(end.metrics, TurnMetricsData)) == 2


@pytest.mark.parametrize(
    "arguments", [{"turns": 0}, {"speed": 0.0}, {"speed": -1.0}], ids=["turns", "zero", "negative"]
)
async def test_a_call_refuses_bad_arguments(arguments: dict):
    with pytest.raises(ValueError):
        await run_offline_call(**arguments)


@pytest.mark.parametrize(
    "arguments", [{"calls": 0}, {"calls": 2, "turns": 0}], ids=["calls", "turns"]
)
async def test_calls_refuse_bad_arguments_with_a_plain_value_error(arguments: dict):
    with pytest.raises(ValueError):
        await run_offline_calls(**arguments)
