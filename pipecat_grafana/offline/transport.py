"""The offline call's phone line: a scripted caller on a Pipecat transport.

``OfflineTransport`` is to the pipeline what a WebRTC or telephony transport is to
a real bot: its input streams the caller's audio in 20 ms chunks, its output plays
the bot's audio at the call's pace. The caller speaks the script, waits for each
answer (or, once a call, talks over it) and hangs up after the last one, which
ends the call. Audio streams fifty times faster than real time, so a call of
several turns takes seconds.

When the caller connects, the input transport says so with a ``ClientConnectedFrame``
and the transport's ``on_client_connected`` event, as Pipecat's WebRTC and telephony
transports do; a bot that greets its callers does it from that event, and the caller
listens to the greeting before speaking.
"""

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import numpy as np
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VAD_STOP_SECS
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ClientConnectedFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipecat_grafana.offline.audio import CHUNK_SECS, audio_secs, synthesize_voice
from pipecat_grafana.offline.script import (
    BARGE_IN_AFTER_SECS,
    LEAD_IN_SECS,
    THINK_SECS,
    USER_WORDS_PER_SEC,
    draw_secs,
)

# Audio streams in, and plays out, this many times faster than real time at
# speed 1.0. Real-time audio would make a four-turn call last half a minute.
_AUDIO_SPEEDUP = 50.0
# The output transport plays 100 ms chunks rather than its default 40 ms. No
# metric depends on it, and every chunk costs a trip through the pipeline's end.
_AUDIO_OUT_10MS_CHUNKS = 10
# Silence after the caller's speech: the VAD's stop_secs and a margin.
_TRAILING_SILENCE_SECS = VAD_STOP_SECS + 0.1
# Silence on the line between the bot's last words and the caller hanging up.
_HANG_UP_SECS = 0.5
# The longest the caller waits for the bot to answer before hanging up.
_REPLY_TIMEOUT_SECS = 30.0
# The longest the line holds the bot's audio for a caller talking over it (wall time).
_HOLD_SECS = 10.0


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

    With ``greeted``, the bot speaks first: the caller waits for its greeting to end
    before the first turn.
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
        greeted: bool = False,
        on_connected: Callable[[], Awaitable[None]] | None = None,
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
            greeted: Whether the bot greets the caller, who then waits for the
                greeting to end before speaking.
            on_connected: Called once the caller is connected.
            **kwargs: Passed on to ``BaseInputTransport``.
        """
        super().__init__(params, **kwargs)
        self._utterances = list(utterances)
        self._rng = rng
        self._np_rng = np.random.default_rng(rng.getrandbits(64))
        self._speed = speed
        self._barge_in_turns = frozenset(barge_in_turns)
        self._line = line or _Line()
        self._greeted = greeted
        self._on_connected = on_connected
        self._pacer = _Pacer()
        self._bot_started = asyncio.Event()
        self._bot_stopped = asyncio.Event()
        self._caller_task: asyncio.Task | None = None

    async def start(self, frame: StartFrame):
        """Connect the caller once the pipeline starts."""
        await super().start(frame)
        await self.set_transport_ready(frame)
        if not self._caller_task:
            await self.push_frame(ClientConnectedFrame())
            if self._on_connected is not None:
                await self._on_connected()
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
        if self._greeted and not await self._wait_for_greeting():
            await self._hang_up()
            return
        for turn, utterance in enumerate(self._utterances):
            barge_in = turn in self._barge_in_turns
            if barge_in:
                # Let the bot say a few words of its answer first, at the audio's pace.
                await asyncio.sleep(
                    draw_secs(self._rng, BARGE_IN_AFTER_SECS, self._speed) / _AUDIO_SPEEDUP
                )
                self._line.talk_over()
            else:
                await asyncio.sleep(draw_secs(self._rng, THINK_SECS, self._speed))
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
        await self._hang_up()

    async def _wait_for_greeting(self) -> bool:
        return await self._wait_for_bot(self._bot_started, -1) and await self._wait_for_bot(
            self._bot_stopped, -1
        )

    async def _hang_up(self):
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
            what = "greeting" if turn < 0 else f"answer to turn {turn + 1}"
            logger.warning(f"{self}: no {what}, hanging up")
            return False
        return True

    async def _speak(self, utterance: str):
        sample_rate = self.sample_rate
        words = len(utterance.split())
        voice = synthesize_voice(
            max(0.6, words / USER_WORDS_PER_SEC),
            sample_rate,
            pitch_hz=self._rng.uniform(110.0, 220.0),
            rng=self._np_rng,
            leading_silence_secs=self._rng.uniform(*LEAD_IN_SECS),
        )
        await self._stream(voice + bytes(int(_TRAILING_SILENCE_SECS * sample_rate) * 2))

    async def _stream(self, audio: bytes):
        sample_rate = self.sample_rate
        chunk_bytes = int(sample_rate * CHUNK_SECS) * 2
        for start in range(0, len(audio), chunk_bytes):
            chunk = audio[start : start + chunk_bytes]
            await self.push_audio_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=sample_rate, num_channels=1)
            )
            await self._pacer.wait(audio_secs(chunk, sample_rate) * self._speed / _AUDIO_SPEEDUP)


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
        secs = audio_secs(frame.audio, frame.sample_rate, frame.num_channels)
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
        greeted: bool = False,
        **kwargs: Any,
    ):
        """Initialize the transport.

        Args:
            utterances: What the caller says, one per turn.
            rng: Source of the caller's pauses and voice.
            speed: Scale of the pauses and of the audio's pace.
            barge_in_turns: Turns (from 1) the caller starts while the bot is speaking.
            greeted: Whether the bot greets the caller (from ``on_client_connected``),
                who then waits for the greeting to end before speaking.
            **kwargs: Passed on to ``BaseTransport``.
        """
        super().__init__(**kwargs)
        self._register_event_handler("on_client_connected")
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
            greeted=greeted,
            on_connected=self._client_connected,
            name=self._input_name,
        )
        self._output = OfflineOutputTransport(
            params, speed=speed, line=line, name=self._output_name
        )

    async def _client_connected(self):
        await self._call_event_handler("on_client_connected", "caller")

    def input(self) -> OfflineInputTransport:
        """The caller's audio, into the pipeline."""
        return self._input

    def output(self) -> OfflineOutputTransport:
        """The bot's audio, out of the pipeline."""
        return self._output
