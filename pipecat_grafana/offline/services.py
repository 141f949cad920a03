"""The offline call's providers: scripted STT, LLM, TTS and smart-turn model.

Each is built on the Pipecat base class a hosted provider's service is built on
(``STTService``, ``LLMService``, ``TTSService``, ``BaseSmartTurn``); only the
network is replaced, by the script's latencies. So every metric of the call
(TTFB, processing time, TTFA, TTFAT, text aggregation, usage, the smart-turn
prediction) is measured and sent by Pipecat's own code, as for a real provider.
"""

import asyncio
import json
import math
import random
import re
import time
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from typing import Any

import numpy as np
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.vad.vad_analyzer import VAD_STOP_SECS
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    FunctionCallFromLLM,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from pipecat_grafana.offline.audio import VOICE_DBFS, audio_secs, rms_dbfs, synthesize_voice
from pipecat_grafana.offline.script import (
    ACCOUNT,
    EXCHANGES,
    LLM_FIRST_TOKEN_SECS,
    LLM_TOKEN_SECS,
    LLM_TTFB_SECS,
    RETRY_AFTER_SECS,
    SMART_TURN_SECS,
    STT_FINALIZE_SECS,
    TOOL_NAME,
    TOOL_SECS,
    TTS_LEADING_SILENCE_SECS,
    TTS_TTFB_SECS,
    USER_WORDS_PER_SEC,
    draw_secs,
)

# The models the scripted services report, those of the example bot in example_bot.py.
DEFAULT_LLM_MODEL = "gpt-4o"
DEFAULT_STT_MODEL = "gladia"
DEFAULT_TTS_MODEL = "cartesia"

# How fast the TTS speaks.
_TTS_CHARS_PER_SEC = 15.0
# How much TTS audio the scripted provider streams per frame.
_TTS_FRAME_SECS = 0.1
# The STT sends an interim transcript after this much speech.
_INTERIM_EVERY_SECS = 0.5
# Words with the whitespace before them: how an LLM streams text.
_TOKEN_PATTERN = re.compile(r"\s*\S+")


def _count_tokens(text: str) -> int:
    """Estimate tokens the way OpenAI's rule of thumb does: four characters each."""
    return max(1, math.ceil(len(text) / 4))


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
        time.sleep(draw_secs(self._rng, SMART_TURN_SECS, self._speed))
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
            ttfs_p99_latency=VAD_STOP_SECS + STT_FINALIZE_SECS[1] * speed,
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
        if rms_dbfs(audio) > VOICE_DBFS and self._utterance < len(self._transcripts):
            self._speech_secs += audio_secs(audio, self.sample_rate)
            if self._speech_secs - self._interim_secs >= _INTERIM_EVERY_SECS:
                self._interim_secs = self._speech_secs
                words = self._transcripts[self._utterance].split()
                heard = max(1, int(self._speech_secs * USER_WORDS_PER_SEC))
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
        await asyncio.sleep(draw_secs(self._rng, STT_FINALIZE_SECS, self._speed))
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

    Every parameter is listed in the docs' "Offline services (API reference)" page.

    Example::

        llm = ScriptedLLMService(replies=["Your plan renews on the 3rd."], tool_call_turns=[0])

        async def lookup_account(params):  # your tool's handler, as with any Pipecat LLM
            await params.result_callback({"plan": "pro", "renews": "the 3rd"})

        llm.register_function(TOOL_NAME, lookup_account)
    """

    def __init__(
        self,
        *,
        replies: Sequence[str] = (),
        rng: random.Random | None = None,
        speed: float = 1.0,
        model: str = DEFAULT_LLM_MODEL,
        tool_call_turns: Collection[int] = (),
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            replies: The bot's answers, one per turn, in order (the last one repeats);
                by default the script's answers.
            rng: Source of the scripted latencies and tool call IDs (default: a new one,
                a different call every time).
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
        self._replies = list(replies) or [exchange.bot for exchange in EXCHANGES]
        self._rng = rng or random.Random()
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
        await asyncio.sleep(draw_secs(self._rng, LLM_TTFB_SECS, self._speed))
        # The first chunk carries only the assistant role: the first byte.
        await self.stop_ttfb_metrics()
        await asyncio.sleep(draw_secs(self._rng, LLM_FIRST_TOKEN_SECS, self._speed))
        for token in _TOKEN_PATTERN.findall(reply):
            await self._push_llm_text(token)
            await asyncio.sleep(draw_secs(self._rng, LLM_TOKEN_SECS, self._speed))
        # OpenAI sends the usage with the stream's last chunk, so a stream cut
        # off by an interruption reports none.
        await self.start_llm_usage_metrics(usage)

    async def _call_tool(
        self, context: LLMContext, messages: Sequence[Mapping], question: str
    ) -> None:
        arguments = {"question": question}
        call = json.dumps({"name": TOOL_NAME, "arguments": json.dumps(arguments)})
        usage = self._usage(messages, completion=call)
        tool_call_id = f"call_{self._rng.getrandbits(96):024x}"

        await self.start_ttfb_metrics()
        await asyncio.sleep(draw_secs(self._rng, LLM_TTFB_SECS, self._speed))
        await self.stop_ttfb_metrics()
        await asyncio.sleep(draw_secs(self._rng, LLM_FIRST_TOKEN_SECS, self._speed))
        # The chunk naming the function: a turn that only calls a tool has no answer
        # text, so the call is the answer, as Pipecat's OpenAI service measures it.
        await self.stop_ttfat_metrics()
        for _ in _TOKEN_PATTERN.findall(json.dumps(arguments)):
            await asyncio.sleep(draw_secs(self._rng, LLM_TOKEN_SECS, self._speed))
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

    def _usage(self, messages: Sequence[Mapping], *, completion: str) -> LLMTokenUsage:
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
        await asyncio.sleep(draw_secs(self._rng, TOOL_SECS, self._speed))
        await params.result_callback(dict(ACCOUNT))


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
        rng: random.Random | None = None,
        speed: float = 1.0,
        model: str = DEFAULT_TTS_MODEL,
        rate_limited_answers: Collection[int] = (),
        **kwargs: Any,
    ):
        """Initialize the service.

        Args:
            rng: Source of the scripted latencies and of the voice's variations (default:
                a new one).
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
        self._rng = rng = rng or random.Random()
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
        audio = synthesize_voice(
            max(0.3, len(text) / _TTS_CHARS_PER_SEC),
            self.sample_rate,
            pitch_hz=190.0,
            rng=self._np_rng,
            leading_silence_secs=self._rng.uniform(*TTS_LEADING_SILENCE_SECS),
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
        await asyncio.sleep(draw_secs(self._rng, TTS_TTFB_SECS, self._speed))
        if refuse:
            raise TTSRateLimitError(draw_secs(self._rng, RETRY_AFTER_SECS, self._speed))
