"""An offline call: a scripted phone call through a real Pipecat pipeline.

The exporter has to be seen working where there are no API keys and no network:
in ``example_bot.py`` without keys, in ``pipecat-grafana demo``, in the tests and
in the load generator. Hand-built ``MetricsFrame`` objects would only show that
the exporter reads what its author thought Pipecat sends, so this package runs the
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

The caller connects as on a real line: the input transport pushes a
``ClientConnectedFrame`` and the bot greets the caller (a ``TTSSpeakFrame`` queued
from the transport's ``on_client_connected``), so the greeting latency and the
transport's connection time are measured as Pipecat measures them; the caller
listens to the greeting before the first question.

A call also has what real calls have besides questions and answers, so that the
conversation metrics have something to show. Unless ``incidents=False``, on one
turn the LLM looks the caller's account up with a tool call, run by Pipecat's own
function-calling machinery; on one turn the caller talks over the bot's answer,
which Pipecat's VAD and turn strategy turn into an interruption; and the TTS
provider refuses one request with ``429 Too Many Requests``, which the service
reports as an ``ErrorFrame`` (Pipecat classifies it as a rate limit) before it
retries and speaks the sentence. Which turns, like everything else, follows from
``seed``.

Time is compressed: audio streams in and plays out fifty times faster than real
time, while the scripted provider latencies stay of the order of real ones, so a
call of four turns takes about seven seconds. ``speed`` scales all of it; at 0.05 a
turn takes a few tenths of a second, most of it the pipeline's own work on the
audio frames.

The offline call stands for a bot: it imports nothing of the rest of this package,
and the exporter joins it as it joins any bot, through ``processors`` or
``observers``. By concern: ``script`` (what is said, and when), ``audio`` (the
synthetic voice and the VAD that hears it), ``services`` (the scripted providers),
``transport`` (the caller's phone line) and ``call`` (the pipeline, run to its end).

The scripted services are a public API of their own: ``ScriptedLLMService``,
``ScriptedTTSService`` and ``ScriptedSTTService`` stand in for hosted providers in a bot's
own pipeline, so that the exporter can be tried there without API keys
(``examples/own_bot.py`` in the repository is such a bot).

Example::

    await run_offline_call(turns=3, observers=[MetricsLogObserver()])
    await run_offline_call(turns=3, incidents=False)  # questions and answers only

    llm = ScriptedLLMService(replies=["Your plan renews on the 3rd."])  # in your pipeline
    tts = ScriptedTTSService()
"""

from pipecat_grafana.offline.call import run_offline_call, run_offline_calls
from pipecat_grafana.offline.script import GREETING, TOOL_NAME
from pipecat_grafana.offline.services import (
    DEFAULT_LLM_MODEL,
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_MODEL,
    ScriptedLLMService,
    ScriptedSTTService,
    ScriptedTTSService,
    TTSRateLimitError,
)
from pipecat_grafana.offline.transport import OfflineTransport

__all__ = [
    "DEFAULT_LLM_MODEL",
    "DEFAULT_STT_MODEL",
    "DEFAULT_TTS_MODEL",
    "GREETING",
    "TOOL_NAME",
    "OfflineTransport",
    "ScriptedLLMService",
    "ScriptedSTTService",
    "ScriptedTTSService",
    "TTSRateLimitError",
    "run_offline_call",
    "run_offline_calls",
]
