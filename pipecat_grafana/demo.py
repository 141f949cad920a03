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

Time is compressed: audio streams in and plays out fifty times faster than real
time, while the scripted provider latencies stay of the order of real ones, so a
call of four turns takes about six seconds. ``speed`` scales all of it; at 0.05 a
turn takes a few tenths of a second, most of it the pipeline's own work on the
audio frames.

Example::

    await run_offline_call(turns=3, observers=[MetricsLogObserver()])
"""

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.vad.vad_analyzer import VAD_STOP_SECS, VADAnalyzer
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
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
from pipecat.services.llm_service import LLMService
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
    """

    def __init__(
        self,
        *,
        replies: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        model: str = DEFAULT_LLM_MODEL,
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            replies: The bot's answers, one per inference, in order.
            rng: Source of the scripted latencies.
            speed: Scale of the latencies.
            model: The model name reported with the metrics.
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
        self._inferences = 0
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
        reply = self._replies[min(self._inferences, len(self._replies) - 1)]
        self._inferences += 1
        prompt_tokens = 3 + sum(
            4 + _count_tokens(str(message.get("content", "")))
            for message in context.get_messages()
            if isinstance(message, dict)
        )
        usage = LLMTokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=_count_tokens(reply),
            total_tokens=prompt_tokens + _count_tokens(reply),
            cache_read_input_tokens=self._previous_prompt_tokens // 128 * 128,
            reasoning_tokens=0,
        )
        self._previous_prompt_tokens = prompt_tokens

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


class ScriptedTTSService(TTSService):
    """An HTTP-style TTS provider that speaks any text in a synthetic voice.

    Set up like Pipecat's OpenAI TTS: the base class opens one audio context per
    bot turn (one TTFB, to the first audio), times each sentence as processing and
    measures TTFA through the provider's leading silence. Usage is the sentence's
    characters, reported when the request is made.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        speed: float = 1.0,
        model: str = DEFAULT_TTS_MODEL,
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            rng: Source of the scripted latencies and of the voice's variations.
            speed: Scale of the latencies.
            model: The model name reported with the metrics.
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

    def can_generate_metrics(self) -> bool:
        """Report metrics, as every hosted TTS service does."""
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Synthesize a sentence and stream it back in 100 ms frames."""
        await self.start_tts_usage_metrics(text)
        await asyncio.sleep(_uniform(self._rng, _TTS_TTFB_SECS, self._speed))
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


class OfflineInputTransport(BaseInputTransport):
    """The caller's side of the line: speaks the script, one turn per bot answer.

    Streams each utterance as 20 ms ``InputAudioRawFrame`` chunks (a lead-in of
    silence, the voice, trailing silence), waits for the bot to stop speaking,
    pauses, and speaks the next. After the bot's last answer the caller hangs
    up, which ends the call with an ``EndFrame``.
    """

    def __init__(
        self,
        params: TransportParams,
        *,
        utterances: Sequence[str],
        rng: random.Random,
        speed: float = 1.0,
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            params: Transport parameters; audio input must be enabled.
            utterances: What the caller says, one per turn.
            rng: Source of the pauses and of the voice's variations.
            speed: Scale of the pauses and of the audio's pace.
            **kwargs: Passed on to ``BaseInputTransport``.
        """
        super().__init__(params, **kwargs)
        self._utterances = list(utterances)
        self._rng = rng
        self._np_rng = np.random.default_rng(rng.getrandbits(64))
        self._speed = speed
        self._pacer = _Pacer()
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
        """Listen for the bot to stop speaking, and pass every frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_stopped.set()

    async def _call(self):
        for turn, utterance in enumerate(self._utterances, start=1):
            await asyncio.sleep(_uniform(self._rng, _THINK_SECS, self._speed))
            self._bot_stopped.clear()
            await self._speak(utterance)
            try:
                await asyncio.wait_for(self._bot_stopped.wait(), _REPLY_TIMEOUT_SECS)
            except TimeoutError:
                logger.warning(f"{self}: no answer to turn {turn}, hanging up")
                break
        # The line stays open for a moment after the bot's goodbye. Nothing
        # transcribes that audio, so the STT reports its usage when it stops.
        await self._stream(bytes(int(_HANG_UP_SECS * self.sample_rate) * 2))
        # Audio still queued in the transport would be dropped by the EndFrame
        # overtaking it, and go unbilled.
        await self._audio_in_queue.join()
        self._caller_task = None
        await self.push_frame(EndWorkerFrame(reason="caller hung up"))

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

    def __init__(self, params: TransportParams, *, speed: float = 1.0, **kwargs: Any):
        """Initialize the transport.

        Args:
            params: Transport parameters; audio output must be enabled.
            speed: Scale of the playback time.
            **kwargs: Passed on to ``BaseOutputTransport``.
        """
        super().__init__(params, **kwargs)
        self._speed = speed
        self._pacer = _Pacer()

    async def start(self, frame: StartFrame):
        """Open the line once the pipeline starts."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Take as long to play a chunk as the call's pace says."""
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
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            utterances: What the caller says, one per turn.
            rng: Source of the caller's pauses and voice.
            speed: Scale of the pauses and of the audio's pace.
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
        self._input = OfflineInputTransport(
            params, utterances=utterances, rng=rng, speed=speed, name=self._input_name
        )
        self._output = OfflineOutputTransport(params, speed=speed, name=self._output_name)

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
) -> None:
    """Run one scripted call through a real Pipecat pipeline, to its end.

    The caller speaks ``turns`` times; the bot answers each time. The call ends
    with an ``EndFrame`` once the bot has answered the last turn, and this
    returns when the pipeline has finished.

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

    transport = OfflineTransport(
        utterances=[exchange.user for exchange in exchanges], rng=service_rng(), speed=speed
    )
    stt = ScriptedSTTService(
        transcripts=[exchange.user for exchange in exchanges],
        rng=service_rng(),
        speed=speed,
        model=stt_model,
    )
    llm = ScriptedLLMService(
        replies=[exchange.bot for exchange in exchanges],
        rng=service_rng(),
        speed=speed,
        model=llm_model,
    )
    tts = ScriptedTTSService(rng=service_rng(), speed=speed, model=tts_model)

    context = LLMContext(
        messages=[
            {
                "role": "system",
                "content": f"{_SYSTEM_PROMPT}\n\nKnowledge base:\n{_KNOWLEDGE_BASE}",
            }
        ]
    )
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=EnergyVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(
                stop=[
                    TurnAnalyzerUserTurnStopStrategy(
                        turn_analyzer=ScriptedTurnAnalyzer(rng=service_rng(), speed=speed)
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
) -> None:
    """Run several scripted calls at once, each through its own pipeline.

    Each call gets processors and observers of its own, made by the factories,
    as each call of a deployed bot builds its own pipeline. A call that fails
    cancels the others.

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
                )
            )
