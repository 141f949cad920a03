"""An offline call: a scripted phone call through a real Pipecat pipeline.

The exporter has to be seen working where there are no API keys and no network:
in ``example_bot.py`` without keys, in ``pipecat-grafana demo``, in the tests and
in the load generator. Hand-built ``MetricsFrame`` objects would only show that
the exporter reads what its author thought Pipecat sends, so this module runs the
shape of a real voice bot instead::

    transport input -> STT -> user aggregator -> LLM -> TTS -> transport output
        -> assistant aggregator -> [your processors]

Only the far ends are scripted. A scripted caller streams 16 kHz audio (silence,
then a voice-like signal, then silence) into the input transport. Pipecat's own
VAD controller, driven by an energy VAD, turns that audio into speech events; its
own turn strategy, driven by a scripted smart-turn model, ends the user's turn;
its own context aggregators run the LLM. The STT, LLM and TTS are scripted
providers built on Pipecat's service base classes, so every metric is measured
and sent by Pipecat's own code: TTFB, processing time, TTFA, TTFAT, text
aggregation, LLM, STT and TTS usage, and the smart-turn prediction.

A call also has what real calls have besides questions and answers, so that the
conversation metrics have something to show. Unless ``incidents=False``, on one
turn the LLM looks the caller's account up with a tool call, run by Pipecat's own
function-calling machinery; on one turn the caller talks over the bot's answer,
which Pipecat's VAD and turn strategy turn into an interruption; and the TTS
provider refuses one request with ``429 Too Many Requests``, which the service
reports as an ``ErrorFrame`` (Pipecat classifies it as a rate limit) before it
retries and speaks the sentence. Which turns, like everything else, follows from
the seed.

Time is compressed: audio streams in and plays out fifty times faster than real
time, while the scripted provider latencies stay of the order of real ones, so a
call of four turns takes about seven seconds. ``speed`` scales all of it; at 0.05 a
turn takes a few tenths of a second, most of it the pipeline's own work on the
audio frames.

Example::

    await run_offline_call(turns=3, observers=[MetricsLogObserver()])
    await run_offline_call(turns=3, incidents=False)  # questions and answers only
"""

import asyncio
import contextlib
import json
import math
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.vad.vad_analyzer import VAD_STOP_SECS, VADAnalyzer
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    ErrorFrame,
    Frame,
    FunctionCallFromLLM,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

__all__ = [
    "DEFAULT_LLM_MODEL",
    "DEFAULT_STT_MODEL",
    "DEFAULT_TTS_MODEL",
    "TOOL_NAME",
    "TTSRateLimitError",
    "run_offline_call",
    "run_offline_calls",
]

DEFAULT_LLM_MODEL = "gpt-4o"
DEFAULT_STT_MODEL = "gladia"
DEFAULT_TTS_MODEL = "cartesia"

# Pipecat's defaults (PipelineParams), so the pipeline needs no resampling.
AUDIO_IN_SAMPLE_RATE = 16000
AUDIO_OUT_SAMPLE_RATE = 24000

# What a WebRTC or telephony transport delivers: 20 ms of 16-bit mono audio.
_CHUNK_SECS = 0.02
# Audio streams in, and plays out, this many times faster than real time at
# speed 1.0. Real-time audio would make a four-turn call last half a minute.
_AUDIO_SPEEDUP = 50.0
# The output transport plays 100 ms chunks rather than its default 40 ms. No
# metric depends on it, and every chunk costs a trip through the pipeline's end.
_AUDIO_OUT_10MS_CHUNKS = 10

# Scripted latencies, in seconds at speed 1.0, drawn uniformly from each range.
# They are of the order a hosted STT, LLM and TTS show, a little on the fast side.
_THINK_SECS = (0.2, 0.4)  # the caller's pause before speaking
_LEAD_IN_SECS = (0.1, 0.25)  # audio (silence) before the caller's speech
_STT_FINALIZE_SECS = (0.08, 0.18)  # speech end (VAD stop) to final transcript
_SMART_TURN_SECS = (0.008, 0.03)  # one end-of-turn model inference
_LLM_TTFB_SECS = (0.2, 0.4)  # request to first streamed chunk
_LLM_FIRST_TOKEN_SECS = (0.005, 0.03)  # first chunk to first answer token
_LLM_TOKEN_SECS = (0.006, 0.015)  # between streamed tokens
_TTS_TTFB_SECS = (0.06, 0.14)  # request to first audio
_TTS_LEADING_SILENCE_SECS = (0.02, 0.15)  # silence the TTS pads its audio with

# Speaking rates for the audio the script speaks.
_USER_WORDS_PER_SEC = 3.0
_TTS_CHARS_PER_SEC = 15.0
# Silence after the caller's speech: the VAD's stop_secs and a margin.
_TRAILING_SILENCE_SECS = VAD_STOP_SECS + 0.1
# Energy above which audio is voice rather than silence, for the VAD and the STT.
_VOICE_DBFS = -45.0
# How much TTS audio the scripted provider streams per frame.
_TTS_FRAME_SECS = 0.1
# The STT sends an interim transcript after this much speech.
_INTERIM_EVERY_SECS = 0.5
# Silence on the line between the bot's last words and the caller hanging up.
_HANG_UP_SECS = 0.5
# The longest the caller waits for the bot to answer before hanging up.
_REPLY_TIMEOUT_SECS = 30.0

# Incidents, in seconds at speed 1.0 like the latencies above.
_TOOL_SECS = (0.15, 0.4)  # the account backend behind the bot's tool
_BARGE_IN_AFTER_SECS = (0.5, 1.0)  # the bot's speech (audio time) before the caller talks over it
_RETRY_AFTER_SECS = (0.2, 0.4)  # the TTS provider's Retry-After when it refuses a request
# The longest the line holds the bot's audio for a caller talking over it (wall time).
_HOLD_SECS = 10.0

TOOL_NAME = "lookup_account"
"""The bot's one tool, which the LLM calls on one turn of every call with incidents."""
_TOOL = FunctionSchema(
    name=TOOL_NAME,
    description="Look up the caller's account: plan, balance, next bill and line status.",
    properties={"question": {"type": "string", "description": "What the caller wants to know."}},
    required=["question"],
)
# What the account backend answers; the bot's scripted answer is worded from it.
_ACCOUNT = {
    "account": "NW-20417",
    "plan": "Unlimited talk and text, 10 GB",
    "balance_usd": 12.40,
    "next_bill_due": "the 5th",
    "line_status": "active",
}

_SYSTEM_PROMPT = (
    "You are Ava, the voice assistant of Northwind Mobile. Answer in one to three short "
    "spoken sentences, without lists, markdown or emojis. Use only the knowledge base "
    "below; if the answer is not there, offer to transfer the caller to an agent."
)


@dataclass(frozen=True)
class _Exchange:
    """One turn of the script: what the caller says and what the bot answers."""

    user: str
    bot: str


# What callers ask a mobile operator's voice bot, and what it answers. A call
# uses a sample of these, in an order set by the seed.
_EXCHANGES = (
    _Exchange(
        "Hi, I'd like to check the balance on my account.",
        "Sure, I can help with that. Your current balance is twelve dollars and forty "
        "cents. Your next bill is due on the fifth.",
    ),
    _Exchange(
        "Why is my bill higher than usual this month?",
        "Your bill includes a one-time roaming charge from your trip last week. "
        "Without it, you would have paid the usual thirty-five dollars.",
    ),
    _Exchange(
        "Can I add more data to my plan?",
        "Yes. A five gigabyte add-on costs ten dollars and lasts until your next bill. "
        "Would you like me to add it now?",
    ),
    _Exchange(
        "Yes please, add it.",
        "Done. The five gigabytes are on your line and ready to use. You'll get a text "
        "confirming it in a minute.",
    ),
    _Exchange(
        "Does my plan work in Canada?",
        "It does. Calls and texts in Canada are included, and data costs five dollars a "
        "day, charged only on days you use it.",
    ),
    _Exchange(
        "My phone has no signal at home since yesterday.",
        "I'm sorry about that. There is maintenance on a tower near you until tonight. "
        "Wi-Fi calling will keep you connected in the meantime.",
    ),
    _Exchange(
        "How do I turn on Wi-Fi calling?",
        "Open your phone settings, then mobile network, then Wi-Fi calling, and switch "
        "it on. It works right away, at no extra cost.",
    ),
    _Exchange(
        "I want to change the due date of my bill.",
        "You can move it to any day between the first and the twenty-eighth. Which day "
        "suits you best?",
    ),
    _Exchange(
        "The fifteenth would be better.",
        "All right, your bill will be due on the fifteenth from next month on. There is "
        "no charge for the change.",
    ),
    _Exchange(
        "Can I keep my number if I switch to a family plan?",
        "Yes, every line keeps its number. A family plan for three lines costs ninety "
        "dollars a month, with unlimited calls and texts.",
    ),
    _Exchange(
        "Is there a fee to cancel my contract?",
        "Your contract ended in March, so there is no cancellation fee. Before you go, "
        "may I tell you about our loyalty discount?",
    ),
    _Exchange(
        "That's all, thank you.",
        "You're welcome. Thanks for calling Northwind Mobile, and have a great day.",
    ),
)

_KNOWLEDGE_BASE = "\n".join(f"- {exchange.bot}" for exchange in _EXCHANGES)

# Words with the whitespace before them: how an LLM streams text.
_TOKEN_PATTERN = re.compile(r"\s*\S+")


def _pick_exchanges(turns: int, rng: random.Random) -> list[_Exchange]:
    """Draw a call's exchanges from the bank, repeating it if the call is longer."""
    exchanges: list[_Exchange] = []
    while len(exchanges) < turns:
        exchanges.extend(rng.sample(_EXCHANGES, min(len(_EXCHANGES), turns - len(exchanges))))
    return exchanges


@dataclass(frozen=True)
class _Incidents:
    """What happens in a call besides questions and answers. Turns count from 0."""

    tool_call_turn: int | None = None
    """The turn the LLM answers by calling the tool first, then from its result."""
    barge_in_turn: int | None = None
    """The turn whose question the caller asks while the bot still answers the one before
    (a call of one turn has none)."""
    rate_limited_answer: int | None = None
    """The answer whose first TTS request the provider refuses with 429 Too Many Requests."""


def _plan_incidents(turns: int, rng: random.Random) -> _Incidents:
    """Draw which turns a call's incidents happen on: one of each."""
    return _Incidents(
        tool_call_turn=rng.randrange(turns),
        barge_in_turn=rng.randrange(1, turns) if turns > 1 else None,
        rate_limited_answer=rng.randrange(turns),
    )


def _uniform(rng: random.Random, bounds: tuple[float, float], speed: float) -> float:
    """A scripted latency, scaled by the call's speed."""
    return rng.uniform(*bounds) * speed


def _count_tokens(text: str) -> int:
    """Estimate tokens the way OpenAI's rule of thumb does: four characters each."""
    return max(1, math.ceil(len(text) / 4))


def _voice(
    duration_secs: float,
    sample_rate: int,
    *,
    pitch_hz: float,
    rng: np.random.Generator,
    leading_silence_secs: float = 0.0,
) -> bytes:
    """Synthesize a voice-like signal as 16-bit mono PCM.

    A few harmonics of a wavering pitch, with a little breath noise, rising and
    falling at a syllable rate of four a second. Loud enough for an energy VAD and
    for Pipecat's speech-onset detection, which is what TTFA measures to.
    """
    n = int(duration_secs * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = pitch_hz * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    signal = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    signal = signal + 0.1 * rng.standard_normal(n)
    syllables = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, np.pi)))
    samples = 0.25 * signal * syllables / 2.1
    silence = np.zeros(int(leading_silence_secs * sample_rate))
    pcm = np.clip(np.concatenate([silence, samples]), -1.0, 1.0)
    return (pcm * 32767).astype(np.int16).tobytes()


class _Pacer:
    """Spaces out audio chunks so that, on average, they take the time they should.

    Sleeping once per chunk would not do: the event loop's timers have a
    granularity of about a millisecond, longer than a compressed 20 ms chunk.
    The pacer keeps a deadline instead and sleeps only when it is ahead of it.
    """

    def __init__(self):
        self._deadline = 0.0

    async def wait(self, secs: float):
        """Let ``secs`` pass since the previous chunk, or catch up if behind."""
        now = asyncio.get_running_loop().time()
        # A pacer idle for a while starts afresh rather than rushing to catch up.
        self._deadline = max(self._deadline, now) + secs
        ahead = self._deadline - now
        await asyncio.sleep(ahead if ahead > 0.002 else 0)


def _audio_secs(audio: bytes, sample_rate: int, num_channels: int = 1) -> float:
    """The duration of 16-bit PCM audio."""
    return len(audio) / (2 * sample_rate * num_channels)


def _rms_dbfs(audio: bytes) -> float:
    """The energy of 16-bit PCM audio, in dB relative to full scale."""
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class EnergyVADAnalyzer(VADAnalyzer):
    """A voice activity detector that hears energy, for audio that is silence or voice.

    Stands in for Silero where the "speech" is synthetic: everything Pipecat does
    with a VAD (start and stop debouncing, the volume gate, the speech events the
    user aggregator broadcasts) runs unchanged around it.
    """

    def __init__(self, *, threshold_dbfs: float = _VOICE_DBFS, **kwargs: Any):
        """Initialize the analyzer.

        Args:
            threshold_dbfs: Energy at which a 20 ms frame counts as half voice.
            **kwargs: Passed on to ``VADAnalyzer`` (``sample_rate``, ``params``).
        """
        super().__init__(**kwargs)
        self._threshold_dbfs = threshold_dbfs

    def num_frames_required(self) -> int:
        """Analyze 20 ms of audio at a time."""
        return int(self.sample_rate * _CHUNK_SECS)

    def voice_confidence(self, buffer: bytes) -> float:
        """Map the frame's energy onto a confidence, 0.5 at the threshold."""
        return min(1.0, max(0.0, 0.5 + (_rms_dbfs(buffer) - self._threshold_dbfs) / 20.0))


class ScriptedTurnAnalyzer(BaseSmartTurn):
    """A smart-turn model that always finds the turn complete, after a scripted inference time.

    ``BaseSmartTurn`` buffers the audio, times the prediction and builds the
    ``TurnMetricsData``; ``TurnAnalyzerUserTurnStopStrategy`` sends it. Only the
    model is replaced.
    """

    def __init__(self, *, rng: random.Random, speed: float = 1.0, **kwargs: Any):
        """Initialize the analyzer.

        Args:
            rng: Source of the scripted inference times and probabilities.
            speed: Scale of the inference time.
            **kwargs: Passed on to ``BaseSmartTurn``.
        """
        super().__init__(**kwargs)
        self._rng = rng
        self._speed = speed

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        # Runs on the analyzer's own thread, like a real model, so blocking is fine.
        time.sleep(_uniform(self._rng, _SMART_TURN_SECS, self._speed))
        return {"prediction": 1, "probability": self._rng.uniform(0.85, 0.99)}


class ScriptedSTTService(STTService):
    """A streaming STT provider that hears the caller's script.

    Behaves like Gladia or Deepgram behind Pipecat's ``STTService``: every audio
    chunk is streamed (and counted as usage), interim transcripts follow the
    speech, and the VAD's end of speech asks for a final transcript, which arrives
    after a scripted latency, finalized, with the usage since the last one. TTFB
    (speech end to final transcript) is measured by the base class.
    """

    def __init__(
        self,
        *,
        transcripts: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        model: str = DEFAULT_STT_MODEL,
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            transcripts: What the caller says, one utterance per turn, in order.
            rng: Source of the scripted latencies.
            speed: Scale of the latencies.
            model: The model name reported with the metrics.
            **kwargs: Passed on to ``STTService``.
        """
        super().__init__(
            settings=STTSettings(model=model, language=Language.EN),
            # Speech end to final transcript, at worst: the VAD's wait and ours.
            ttfs_p99_latency=VAD_STOP_SECS + _STT_FINALIZE_SECS[1] * speed,
            **kwargs,
        )
        self._transcripts = list(transcripts)
        self._rng = rng
        self._speed = speed
        self._utterance = 0
        self._speech_secs = 0.0
        self._interim_secs = 0.0
        self._finalize_task: asyncio.Task | None = None

    def can_generate_metrics(self) -> bool:
        """Report metrics, as every hosted STT service does."""
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Stream a chunk to the scripted provider, which may answer with an interim."""
        if _rms_dbfs(audio) > _VOICE_DBFS and self._utterance < len(self._transcripts):
            self._speech_secs += _audio_secs(audio, self.sample_rate)
            if self._speech_secs - self._interim_secs >= _INTERIM_EVERY_SECS:
                self._interim_secs = self._speech_secs
                words = self._transcripts[self._utterance].split()
                heard = max(1, int(self._speech_secs * _USER_WORDS_PER_SEC))
                yield InterimTranscriptionFrame(
                    " ".join(words[:heard]), self._user_id, time_now_iso8601(), Language.EN
                )
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Ask for a final transcript when the VAD reports the end of speech."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._cancel_finalize()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            # What Deepgram's "Finalize" does: the answer is the final transcript.
            self.request_finalize()
            await self._cancel_finalize()
            self._finalize_task = self.create_task(self._finalize(), name="finalize")

    async def cleanup(self):
        """Stop waiting for a final transcript."""
        await super().cleanup()
        await self._cancel_finalize()

    async def _finalize(self):
        await asyncio.sleep(_uniform(self._rng, _STT_FINALIZE_SECS, self._speed))
        self._finalize_task = None
        if not self._speech_secs:
            # Nothing was said, so there is nothing to transcribe.
            await self.cancel_ttfb_metrics()
            return
        text = self._transcripts[self._utterance]
        self._utterance += 1
        self._speech_secs = self._interim_secs = 0.0
        self.confirm_finalize()
        # Usage first, as Pipecat's services do, so a trace can attach it to the
        # STT span the transcript closes.
        await self.emit_stt_usage_metrics()
        await self.push_frame(
            TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
        )

    async def _cancel_finalize(self):
        if self._finalize_task:
            await self.cancel_task(self._finalize_task)
            self._finalize_task = None


class ScriptedLLMService(LLMService):
    """A chat-completions provider that streams the script's answers.

    Mirrors Pipecat's OpenAI service: one inference per context frame, between an
    ``LLMFullResponseStartFrame`` and an ``LLMFullResponseEndFrame``, timed as
    processing, with TTFB at the first streamed chunk, TTFAT at the first answer
    token and one usage report at the end. Usage follows OpenAI's conventions:
    ``prompt_tokens`` is gross of the cache, ``cache_read_input_tokens`` is 0 on
    the first request and afterwards the prefix the previous request sent (in
    128-token blocks, as OpenAI caches), and ``reasoning_tokens`` is 0.

    On the turns in ``tool_call_turns`` the first inference answers with a call of
    the tool ``TOOL_NAME`` instead, as OpenAI streams one: TTFB and TTFAT end at the
    chunk naming the function, the arguments stream in, and the call goes to
    Pipecat's ``run_function_calls``. Pipecat runs the registered handler, the
    assistant aggregator adds the call and its result to the context and runs the
    LLM again, and that inference speaks the turn's answer.
    """

    def __init__(
        self,
        *,
        replies: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        model: str = DEFAULT_LLM_MODEL,
        tool_call_turns: Collection[int] = (),
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            replies: The bot's answers, one per turn, in order.
            rng: Source of the scripted latencies and tool call IDs.
            speed: Scale of the latencies.
            model: The model name reported with the metrics.
            tool_call_turns: Turns (from 0) the LLM calls ``TOOL_NAME`` on before
                answering; the handler must be registered with ``register_function``.
            **kwargs: Passed on to ``LLMService``.
        """
        super().__init__(
            settings=LLMSettings(
                model=model,
                system_instruction=None,
                temperature=None,
                max_tokens=None,
                top_p=None,
                top_k=None,
                frequency_penalty=None,
                presence_penalty=None,
                seed=None,
                filter_incomplete_user_turns=False,
                user_turn_completion_config=None,
            ),
            **kwargs,
        )
        self._replies = list(replies)
        self._rng = rng
        self._speed = speed
        self._tool_call_turns = frozenset(tool_call_turns)
        self._previous_prompt_tokens = 0

    def can_generate_metrics(self) -> bool:
        """Report metrics, as every hosted LLM service does."""
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Answer each context frame with the script's next reply."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            try:
                await self._stream_reply(frame.context)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)

    async def _stream_reply(self, context: LLMContext):
        messages = [message for message in context.get_messages() if isinstance(message, dict)]
        # The turn is the caller's question count, whatever was said or called in between.
        users = [i for i, message in enumerate(messages) if message.get("role") == "user"]
        turn = max(len(users) - 1, 0)
        asked = users[-1] if users else 0
        question = str(messages[asked].get("content", "")) if users else ""
        called = any("tool_calls" in message for message in messages[asked:])
        if turn in self._tool_call_turns and not called:
            await self._call_tool(context, messages, question)
            return
        reply = self._replies[min(turn, len(self._replies) - 1)]
        usage = self._usage(messages, completion=reply)

        await self.start_ttfb_metrics()
        await asyncio.sleep(_uniform(self._rng, _LLM_TTFB_SECS, self._speed))
        # The first chunk carries only the assistant role: the first byte.
        await self.stop_ttfb_metrics()
        await asyncio.sleep(_uniform(self._rng, _LLM_FIRST_TOKEN_SECS, self._speed))
        for token in _TOKEN_PATTERN.findall(reply):
            await self._push_llm_text(token)
            await asyncio.sleep(_uniform(self._rng, _LLM_TOKEN_SECS, self._speed))
        # OpenAI sends the usage with the stream's last chunk, so a stream cut
        # off by an interruption reports none.
        await self.start_llm_usage_metrics(usage)

    async def _call_tool(self, context: LLMContext, messages: list[dict], question: str):
        arguments = {"question": question}
        call = json.dumps({"name": TOOL_NAME, "arguments": json.dumps(arguments)})
        usage = self._usage(messages, completion=call)
        tool_call_id = f"call_{self._rng.getrandbits(96):024x}"

        await self.start_ttfb_metrics()
        await asyncio.sleep(_uniform(self._rng, _LLM_TTFB_SECS, self._speed))
        await self.stop_ttfb_metrics()
        await asyncio.sleep(_uniform(self._rng, _LLM_FIRST_TOKEN_SECS, self._speed))
        # The chunk naming the function: a turn that only calls a tool has no answer
        # text, so the call is the answer, as Pipecat's OpenAI service measures it.
        await self.stop_ttfat_metrics()
        for _ in _TOKEN_PATTERN.findall(json.dumps(arguments)):
            await asyncio.sleep(_uniform(self._rng, _LLM_TOKEN_SECS, self._speed))
        await self.start_llm_usage_metrics(usage)
        await self.run_function_calls(
            [
                FunctionCallFromLLM(
                    function_name=TOOL_NAME,
                    tool_call_id=tool_call_id,
                    arguments=arguments,
                    context=context,
                )
            ]
        )

    def _usage(self, messages: list[dict], *, completion: str) -> LLMTokenUsage:
        prompt_tokens = 3 + sum(
            # An assistant's tool call has no content; its call counts instead.
            4 + _count_tokens(str(message.get("content") or message.get("tool_calls") or ""))
            for message in messages
        )
        usage = LLMTokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=_count_tokens(completion),
            total_tokens=prompt_tokens + _count_tokens(completion),
            cache_read_input_tokens=self._previous_prompt_tokens // 128 * 128,
            reasoning_tokens=0,
        )
        self._previous_prompt_tokens = prompt_tokens
        return usage


class AccountLookup:
    """The handler of the bot's tool: a scripted account backend.

    Registered with ``llm.register_function(TOOL_NAME, AccountLookup(...))``, it
    answers after a scripted latency, the way an application's handler awaits its
    CRM, through ``params.result_callback``.
    """

    def __init__(self, *, rng: random.Random, speed: float = 1.0):
        """Initialize the handler.

        Args:
            rng: Source of the backend's latencies.
            speed: Scale of the latencies.
        """
        self._rng = rng
        self._speed = speed

    async def __call__(self, params: FunctionCallParams) -> None:
        """Look the account up and hand the result to Pipecat."""
        await asyncio.sleep(_uniform(self._rng, _TOOL_SECS, self._speed))
        await params.result_callback(dict(_ACCOUNT))


class TTSRateLimitError(Exception):
    """What a TTS provider's HTTP client raises for ``429 Too Many Requests``.

    Pipecat reads ``status_code`` off the exception of an ``ErrorFrame`` and
    classifies the error as ``ErrorCategory.RATE_LIMIT``.
    """

    status_code = 429

    def __init__(self, retry_after_secs: float):
        """Initialize the error.

        Args:
            retry_after_secs: The provider's ``Retry-After``, in seconds.
        """
        super().__init__(f"429 Too Many Requests (retry after {retry_after_secs:.2f} s)")
        self.retry_after_secs = retry_after_secs


class ScriptedTTSService(TTSService):
    """An HTTP-style TTS provider that speaks any text in a synthetic voice.

    Set up like Pipecat's OpenAI TTS: the base class opens one audio context per
    bot turn (one TTFB, to the first audio), times each sentence as processing and
    measures TTFA through the provider's leading silence. Usage is the sentence's
    characters, reported when a request is accepted.

    The provider refuses the first request of each answer in ``rate_limited_answers``
    with ``429 Too Many Requests``. The service reports it as Pipecat's HTTP services
    report a failed request, with an ``ErrorFrame`` carrying the exception, waits
    for the ``Retry-After`` and asks again, so the sentence is still spoken, later.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        speed: float = 1.0,
        model: str = DEFAULT_TTS_MODEL,
        rate_limited_answers: Collection[int] = (),
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            rng: Source of the scripted latencies and of the voice's variations.
            speed: Scale of the latencies.
            model: The model name reported with the metrics.
            rate_limited_answers: Answers (from 0, counting only those with speech)
                whose first request the provider refuses with 429.
            **kwargs: Passed on to ``TTSService``.
        """
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=model, voice="ava", language=None),
            **kwargs,
        )
        self._rng = rng
        self._np_rng = np.random.default_rng(rng.getrandbits(64))
        self._speed = speed
        self._rate_limited_answers = frozenset(rate_limited_answers)
        self._answers = 0
        self._context_id: str | None = None

    def can_generate_metrics(self) -> bool:
        """Report metrics, as every hosted TTS service does."""
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Synthesize a sentence and stream it back in 100 ms frames."""
        # Each answer has an audio context of its own.
        refuse = False
        if context_id != self._context_id:
            self._context_id = context_id
            refuse = self._answers in self._rate_limited_answers
            self._answers += 1
        try:
            await self._request(refuse=refuse)
        except TTSRateLimitError as e:
            yield ErrorFrame(error=f"TTS request refused: {e}", exception=e)
            await asyncio.sleep(e.retry_after_secs)
            await self._request(refuse=False)
        await self.start_tts_usage_metrics(text)
        audio = _voice(
            max(0.3, len(text) / _TTS_CHARS_PER_SEC),
            self.sample_rate,
            pitch_hz=190.0,
            rng=self._np_rng,
            leading_silence_secs=self._rng.uniform(*_TTS_LEADING_SILENCE_SECS),
        )
        frame_bytes = int(self.sample_rate * _TTS_FRAME_SECS) * 2
        for start in range(0, len(audio), frame_bytes):
            yield TTSAudioRawFrame(
                audio[start : start + frame_bytes], self.sample_rate, 1, context_id=context_id
            )

    async def _request(self, *, refuse: bool) -> None:
        """Wait for the provider to accept a request (its TTFB), or to refuse it.

        Raises:
            TTSRateLimitError: The provider refused the request.
        """
        await asyncio.sleep(_uniform(self._rng, _TTS_TTFB_SECS, self._speed))
        if refuse:
            raise TTSRateLimitError(_uniform(self._rng, _RETRY_AFTER_SECS, self._speed))


class _Line:
    """What both ends of the offline phone line share: whether the caller talks over the bot.

    Time compression plays an answer of several seconds in a few milliseconds, sooner
    than the pipeline hears the first words of a caller who talks over it; on a real
    line the answer would still be playing, and Pipecat would interrupt it. So while
    the caller talks over the bot, the line holds the bot's audio until the
    interruption reaches the output transport (or ``_HOLD_SECS`` at most).
    """

    def __init__(self):
        self._clear = asyncio.Event()
        self._clear.set()

    def talk_over(self) -> None:
        """The caller starts talking over the bot: hold the bot's audio."""
        self._clear.clear()

    def interrupted(self) -> None:
        """The pipeline interrupted the bot (or the caller stopped): let audio play."""
        self._clear.set()

    async def wait_clear(self) -> None:
        """Wait, before playing the bot's audio, while the caller talks over it."""
        if not self._clear.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear.wait(), _HOLD_SECS)


class OfflineInputTransport(BaseInputTransport):
    """The caller's side of the line: speaks the script, one turn per bot answer.

    Streams each utterance as 20 ms ``InputAudioRawFrame`` chunks (a lead-in of
    silence, the voice, trailing silence), waits for the bot to answer and stop
    speaking, pauses, and speaks the next. After the bot's last answer the caller
    hangs up, which ends the call with an ``EndFrame``.

    On the turns in ``barge_in_turns`` the caller does not wait: a moment after the
    bot starts answering the previous question, the caller asks the next one over
    it, and Pipecat's VAD and user turn strategy interrupt the bot.
    """

    def __init__(
        self,
        params: TransportParams,
        *,
        utterances: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        barge_in_turns: Collection[int] = (),
        line: _Line | None = None,
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            params: Transport parameters; audio input must be enabled.
            utterances: What the caller says, one per turn.
            rng: Source of the pauses and of the voice's variations.
            speed: Scale of the pauses and of the audio's pace.
            barge_in_turns: Turns (from 1, as turn 0 has no answer before it) the
                caller starts while the bot is still speaking.
            line: What this end shares with the output transport.
            **kwargs: Passed on to ``BaseInputTransport``.
        """
        super().__init__(params, **kwargs)
        self._utterances = list(utterances)
        self._rng = rng
        self._np_rng = np.random.default_rng(rng.getrandbits(64))
        self._speed = speed
        self._barge_in_turns = frozenset(barge_in_turns)
        self._line = line or _Line()
        self._pacer = _Pacer()
        self._bot_started = asyncio.Event()
        self._bot_stopped = asyncio.Event()
        self._caller_task: asyncio.Task | None = None

    async def start(self, frame: StartFrame):
        """Connect the caller once the pipeline starts."""
        await super().start(frame)
        await self.set_transport_ready(frame)
        if not self._caller_task:
            self._caller_task = self.create_task(self._call(), name="caller")

    async def cleanup(self):
        """Hang up, if the call ends some other way."""
        await super().cleanup()
        if self._caller_task:
            await self.cancel_task(self._caller_task)
            self._caller_task = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Listen for the bot to start and stop speaking, and pass every frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_stopped.clear()
            self._bot_started.set()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_stopped.set()

    async def _call(self):
        for turn, utterance in enumerate(self._utterances):
            barge_in = turn in self._barge_in_turns
            if barge_in:
                # Let the bot say a few words of its answer first, at the audio's pace.
                await asyncio.sleep(
                    _uniform(self._rng, _BARGE_IN_AFTER_SECS, self._speed) / _AUDIO_SPEEDUP
                )
                self._line.talk_over()
            else:
                await asyncio.sleep(_uniform(self._rng, _THINK_SECS, self._speed))
            self._bot_started.clear()
            await self._speak(utterance)
            # The bot answers: it starts speaking after the caller's question, and
            # then, unless the caller talks over it, stops.
            if not await self._wait_for_bot(self._bot_started, turn):
                break
            if turn + 1 not in self._barge_in_turns and not await self._wait_for_bot(
                self._bot_stopped, turn
            ):
                break
        # The line stays open for a moment after the bot's goodbye. Nothing
        # transcribes that audio, so the STT reports its usage when it stops.
        await self._stream(bytes(int(_HANG_UP_SECS * self.sample_rate) * 2))
        # Audio still queued in the transport would be dropped by the EndFrame
        # overtaking it, and go unbilled.
        await self._audio_in_queue.join()
        self._caller_task = None
        await self.push_frame(EndWorkerFrame(reason="caller hung up"))

    async def _wait_for_bot(self, event: asyncio.Event, turn: int) -> bool:
        try:
            await asyncio.wait_for(event.wait(), _REPLY_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: no answer to turn {turn + 1}, hanging up")
            return False
        return True

    async def _speak(self, utterance: str):
        sample_rate = self.sample_rate
        words = len(utterance.split())
        voice = _voice(
            max(0.6, words / _USER_WORDS_PER_SEC),
            sample_rate,
            pitch_hz=self._rng.uniform(110.0, 220.0),
            rng=self._np_rng,
            leading_silence_secs=self._rng.uniform(*_LEAD_IN_SECS),
        )
        await self._stream(voice + bytes(int(_TRAILING_SILENCE_SECS * sample_rate) * 2))

    async def _stream(self, audio: bytes):
        sample_rate = self.sample_rate
        chunk_bytes = int(sample_rate * _CHUNK_SECS) * 2
        for start in range(0, len(audio), chunk_bytes):
            chunk = audio[start : start + chunk_bytes]
            await self.push_audio_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=sample_rate, num_channels=1)
            )
            await self._pacer.wait(_audio_secs(chunk, sample_rate) * self._speed / _AUDIO_SPEEDUP)


class OfflineOutputTransport(BaseOutputTransport):
    """The bot's side of the line: plays its audio to nobody, at the call's pace."""

    def __init__(
        self,
        params: TransportParams,
        *,
        speed: float = 1.0,
        line: _Line | None = None,
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            params: Transport parameters; audio output must be enabled.
            speed: Scale of the playback time.
            line: What this end shares with the input transport.
            **kwargs: Passed on to ``BaseOutputTransport``.
        """
        super().__init__(params, **kwargs)
        self._speed = speed
        self._pacer = _Pacer()
        self._line = line or _Line()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Let the bot's audio go on once Pipecat interrupts it; pass every frame on."""
        if isinstance(frame, InterruptionFrame):
            self._line.interrupted()
        await super().process_frame(frame, direction)

    async def start(self, frame: StartFrame):
        """Open the line once the pipeline starts."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Take as long to play a chunk as the call's pace says."""
        await self._line.wait_clear()
        secs = _audio_secs(frame.audio, frame.sample_rate, frame.num_channels)
        await self._pacer.wait(secs * self._speed / _AUDIO_SPEEDUP)
        return True


class OfflineTransport(BaseTransport):
    """A phone line with a scripted caller at the far end."""

    def __init__(
        self,
        *,
        utterances: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        barge_in_turns: Collection[int] = (),
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            utterances: What the caller says, one per turn.
            rng: Source of the caller's pauses and voice.
            speed: Scale of the pauses and of the audio's pace.
            barge_in_turns: Turns (from 1) the caller starts while the bot is speaking.
            **kwargs: Passed on to ``BaseTransport``.
        """
        super().__init__(**kwargs)
        params = TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_10ms_chunks=_AUDIO_OUT_10MS_CHUNKS,
            # No extra second of silence after the bot's last words.
            audio_out_end_silence_secs=0,
        )
        line = _Line()
        self._input = OfflineInputTransport(
            params,
            utterances=utterances,
            rng=rng,
            speed=speed,
            barge_in_turns=barge_in_turns,
            line=line,
            name=self._input_name,
        )
        self._output = OfflineOutputTransport(
            params, speed=speed, line=line, name=self._output_name
        )

    def input(self) -> OfflineInputTransport:
        """The caller's audio, into the pipeline."""
        return self._input

    def output(self) -> OfflineOutputTransport:
        """The bot's audio, out of the pipeline."""
        return self._output


def _check_call_arguments(*, turns: int, speed: float):
    if turns < 1:
        raise ValueError(f"turns must be at least 1, not {turns}")
    # Not `speed <= 0`, so that NaN is refused too.
    if not speed > 0:
        raise ValueError(f"speed must be positive, not {speed}")


async def run_offline_call(
    *,
    turns: int = 4,
    processors: Sequence[FrameProcessor] = (),
    observers: Sequence[BaseObserver] = (),
    conversation_id: str | None = None,
    speed: float = 1.0,
    seed: int | None = None,
    llm_model: str = DEFAULT_LLM_MODEL,
    stt_model: str = DEFAULT_STT_MODEL,
    tts_model: str = DEFAULT_TTS_MODEL,
    incidents: bool = True,
) -> None:
    """Run one scripted call through a real Pipecat pipeline, to its end.

    The caller speaks ``turns`` times; the bot answers each time. The call ends
    with an ``EndFrame`` once the bot has answered the last turn, and this
    returns when the pipeline has finished.

    With ``incidents`` (the default) the call also has, on turns the seed picks:
    one tool call (``TOOL_NAME``) before an answer, one barge-in (the caller asks
    a question while the bot still answers the one before; a call of one turn has
    none), and one TTS request refused with 429 and retried. The same seed gives
    the same call without them when ``incidents`` is False.

    Args:
        turns: How many times the caller speaks.
        processors: Processors to run at the end of the pipeline, after the
            assistant aggregator, e.g. ``[GrafanaMetricsExporter(...)]``. They see
            every metric the pipeline sends.
        observers: Observers of the pipeline worker, e.g. ``[MetricsLogObserver()]``.
        conversation_id: The worker's conversation id, which Pipecat's tracing
            puts on its spans.
        speed: Scale of every scripted delay and of the audio's pace. At 1.0 a
            turn takes about a second and a half; at 0.05 a few tenths of a
            second, most of it the pipeline's own work on the audio frames.
        seed: Seed for the script and the latencies; None for a different call
            every time.
        llm_model: The model name the LLM reports with its metrics.
        stt_model: The model name the STT reports with its metrics.
        tts_model: The model name the TTS reports with its metrics.
        incidents: Whether the call has its tool call, barge-in and rate-limited
            TTS request.

    Raises:
        ValueError: If ``turns`` is less than 1 or ``speed`` is not positive.
    """
    _check_call_arguments(turns=turns, speed=speed)

    rng = random.Random(seed)
    exchanges = _pick_exchanges(turns, rng)

    def service_rng() -> random.Random:
        # One generator per component, so a component's draws don't depend on
        # how the others' interleave with it.
        return random.Random(rng.getrandbits(64))

    # Generators in the order they always had, so that a seed's call without
    # incidents stays the call it was before there were any.
    transport_rng, stt_rng, llm_rng, tts_rng, turn_rng = (service_rng() for _ in range(5))
    plan = _plan_incidents(turns, service_rng()) if incidents else _Incidents()

    def turns_of(turn: int | None) -> tuple[int, ...]:
        return () if turn is None else (turn,)

    transport = OfflineTransport(
        utterances=[exchange.user for exchange in exchanges],
        rng=transport_rng,
        speed=speed,
        barge_in_turns=turns_of(plan.barge_in_turn),
    )
    stt = ScriptedSTTService(
        transcripts=[exchange.user for exchange in exchanges],
        rng=stt_rng,
        speed=speed,
        model=stt_model,
    )
    llm = ScriptedLLMService(
        replies=[exchange.bot for exchange in exchanges],
        rng=llm_rng,
        speed=speed,
        model=llm_model,
        tool_call_turns=turns_of(plan.tool_call_turn),
    )
    llm.register_function(TOOL_NAME, AccountLookup(rng=service_rng(), speed=speed))
    tts = ScriptedTTSService(
        rng=tts_rng,
        speed=speed,
        model=tts_model,
        rate_limited_answers=turns_of(plan.rate_limited_answer),
    )

    context = LLMContext(
        messages=[
            {
                "role": "system",
                "content": f"{_SYSTEM_PROMPT}\n\nKnowledge base:\n{_KNOWLEDGE_BASE}",
            }
        ],
        tools=ToolsSchema(standard_tools=[_TOOL]),
    )
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=EnergyVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(
                stop=[
                    TurnAnalyzerUserTurnStopStrategy(
                        turn_analyzer=ScriptedTurnAnalyzer(rng=turn_rng, speed=speed)
                    )
                ]
            ),
        ),
    )

    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
            *processors,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
            audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        observers=list(observers),
        conversation_id=conversation_id,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def run_offline_calls(
    *,
    calls: int,
    turns: int = 4,
    processors_factory: Callable[[], Sequence[FrameProcessor]] = tuple,
    observers_factory: Callable[[], Sequence[BaseObserver]] = tuple,
    speed: float = 1.0,
    seed: int | None = None,
    llm_model: str = DEFAULT_LLM_MODEL,
    stt_model: str = DEFAULT_STT_MODEL,
    tts_model: str = DEFAULT_TTS_MODEL,
    incidents: bool = True,
) -> None:
    """Run several scripted calls at once, each through its own pipeline.

    Each call gets processors and observers of its own, made by the factories,
    as each call of a deployed bot builds its own pipeline: call ``i``'s are the
    ``i``-th the factories make. A call that fails cancels the others.

    Example::

        await run_offline_calls(
            calls=5, turns=4, processors_factory=lambda: [MyMetricsProcessor()]
        )

    Args:
        calls: How many calls to run at once.
        turns: How many times the caller speaks in each call.
        processors_factory: Makes the processors for the end of one call's pipeline.
        observers_factory: Makes the observers of one call's worker.
        speed: Scale of every scripted delay and of the audio's pace.
        seed: Seed for the first call; call ``i`` uses ``seed + i``. None for
            different calls every time.
        llm_model: The model name the LLMs report with their metrics.
        stt_model: The model name the STTs report with their metrics.
        tts_model: The model name the TTSs report with their metrics.
        incidents: Whether each call has its tool call, barge-in and rate-limited
            TTS request (see ``run_offline_call``).

    Raises:
        ValueError: If ``calls`` or ``turns`` is less than 1 or ``speed`` is not
            positive.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, not {calls}")
    # Checked here too, so that a mistake raises a ValueError rather than an
    # ExceptionGroup from the task group.
    _check_call_arguments(turns=turns, speed=speed)
    async with asyncio.TaskGroup() as group:
        for i in range(calls):
            group.create_task(
                run_offline_call(
                    turns=turns,
                    processors=processors_factory(),
                    observers=observers_factory(),
                    speed=speed,
                    seed=None if seed is None else seed + i,
                    llm_model=llm_model,
                    stt_model=stt_model,
                    tts_model=tts_model,
                    incidents=incidents,
                )
            )
