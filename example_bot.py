"""An example voice bot, exporting its metrics to Grafana Cloud, runnable anywhere.

With OPENAI_API_KEY, GLADIA_API_KEY and CARTESIA_API_KEY set (in ./.env or the
environment), this is a real voice bot: Gladia STT, OpenAI gpt-4o and Cartesia TTS
in a Pipecat pipeline, run by Pipecat's development runner (open
http://localhost:7860/client and talk), with metrics and usage metrics on,
MetricsLogObserver as the metrics logger and GrafanaMetricsExporter at the end of
the pipeline. Its dependencies come with `pip install -e ".[example]"`.

Without the keys it runs an offline call instead and says so: a scripted caller
talks to a real Pipecat pipeline whose STT, LLM and TTS are scripted services on
Pipecat's service base classes, so every metric comes from Pipecat's own code.
It takes seconds, exports wherever the real bot would, and ends with the call
summary. --turns, --calls and --rounds make it a load generator for the dashboard.

Either way, metrics go where GRAFANA_CLOUD_OTLP_ENDPOINT, GRAFANA_CLOUD_INSTANCE_ID
and GRAFANA_CLOUD_API_TOKEN (or OTEL_EXPORTER_OTLP_*) say; test that with
`pipecat-grafana check`.

    python example_bot.py                      # the real bot, or an offline call without keys
    python example_bot.py --offline --calls 5  # five concurrent offline calls, keys or not
    python example_bot.py -t twilio -x HOST    # real bot, options passed to Pipecat's runner
"""

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pipecat_grafana.commands.demo import OfflineDemo, add_arguments, run_demo, tracing_on
from pipecat_grafana.config import load_env_file

if TYPE_CHECKING:
    from pipecat.runner.types import RunnerArguments
    from pipecat.transports.base_transport import BaseTransport

API_KEYS = ("OPENAI_API_KEY", "GLADIA_API_KEY", "CARTESIA_API_KEY")
"""The keys the real bot needs; without all three, an offline call runs."""
LLM_MODEL = "gpt-4o"
STT_MODEL = "gladia"
TTS_MODEL = "cartesia"
SERVICE_NAME = "voice-rag-bot"
# A voice of Cartesia's library (the one Pipecat's examples use); CARTESIA_VOICE_ID overrides it.
DEFAULT_CARTESIA_VOICE_ID = "71a7ad14-091c-4e8e-a314-022ece01c121"

SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Your answers are spoken aloud: "
    "keep them to one to three short sentences, without lists, markdown or emojis."
)

EPILOG = """\
modes:
  With OPENAI_API_KEY, GLADIA_API_KEY and CARTESIA_API_KEY set (./.env or environment),
  the real bot runs under Pipecat's development runner: open http://localhost:7860/client.
  Other options are passed on to that runner (--host, --port, -t/--transport, -x/--proxy,
  ...). Without all three keys, or with --offline, an offline call runs instead.

examples:
  python example_bot.py                       real bot, or an offline call without keys
  python example_bot.py --turns 8 --calls 5   five concurrent offline calls of 8 turns
  python example_bot.py --offline --calls 10 --rounds 0
                                              load generator: 10 calls at a time until Ctrl-C
  python example_bot.py -t twilio -x my.ngrok.app
                                              real bot on Twilio (needs the keys)
"""


def transport_params() -> dict:
    """Transport parameters per transport the runner may hand us, built on demand."""
    from pipecat.transports.base_transport import TransportParams

    def websocket():
        from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

        # The runner sets the serializer for the telephony provider that connected.
        return FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)

    def daily():
        from pipecat.transports.daily.transport import DailyParams  # pipecat-ai[daily]

        return DailyParams(audio_in_enabled=True, audio_out_enabled=True)

    return {
        "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
        "daily": daily,
        "twilio": websocket,
        "telnyx": websocket,
        "plivo": websocket,
        "exotel": websocket,
        "websocket": websocket,
    }


def build_bot(transport: "BaseTransport", runner_args: "RunnerArguments | None" = None):
    """The example bot on ``transport``: its pipeline in a worker, ready to run.

    Needs the three API keys in the environment; builds everything without
    touching the network (the services connect when the pipeline starts).
    """
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.observers.loggers.metrics_log_observer import MetricsLogObserver
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.gladia.stt import GladiaSTTService
    from pipecat.services.openai.llm import OpenAILLMService

    from pipecat_grafana import GrafanaMetricsExporter

    stt = GladiaSTTService(api_key=os.environ["GLADIA_API_KEY"])
    llm = OpenAILLMService(
        api_key=os.environ["OPENAI_API_KEY"],
        settings=OpenAILLMService.Settings(model=LLM_MODEL, system_instruction=SYSTEM_PROMPT),
    )
    tts = CartesiaTTSService(
        api_key=os.environ["CARTESIA_API_KEY"],
        settings=CartesiaTTSService.Settings(
            voice=os.getenv("CARTESIA_VOICE_ID") or DEFAULT_CARTESIA_VOICE_ID
        ),
    )
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()),
    )
    # Configured from the environment (.env): GRAFANA_CLOUD_* or OTEL_EXPORTER_OTLP_*.
    grafana_exporter = GrafanaMetricsExporter(
        llm_model=LLM_MODEL,
        stt_model=STT_MODEL,
        tts_model=TTS_MODEL,
        service_name=SERVICE_NAME,
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
            grafana_exporter,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        # The metrics logger: every metric in the log, at DEBUG.
        observers=[MetricsLogObserver()],
        idle_timeout_secs=runner_args.pipeline_idle_timeout_secs if runner_args else None,
        conversation_id=runner_args.session_id if runner_args else None,
        # Pipecat's traces (conversation, turns, STT/LLM/TTS) when PIPECAT_GRAFANA_TRACES=true.
        enable_tracing=tracing_on(),
    )
    return worker


def worker_runner(runner_args: "RunnerArguments"):
    """The runner of the bot's worker: it handles the signals the process gives the bot.

    Run directly (Pipecat's runner with Daily or Vonage, or a platform running the bot as
    its process), the bot owns the process's signals: SIGTERM (docker stop, Kubernetes,
    systemd) must end the call as Ctrl-C does, cancelled with its summary and final export,
    or Python dies on the spot. Under the runner's web server, the server owns them: a
    handler here would replace its own, and the server would no longer stop on SIGTERM.
    """
    from pipecat.workers.runner import WorkerRunner

    owns_signals = runner_args.handle_sigint or runner_args.handle_sigterm
    return WorkerRunner(handle_sigint=runner_args.handle_sigint, handle_sigterm=owns_signals)


async def run_bot(transport: "BaseTransport", runner_args: "RunnerArguments"):
    from loguru import logger
    from pipecat.frames.frames import LLMMessagesAppendFrame

    worker = build_bot(transport, runner_args)

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        logger.info("Client connected: the call starts")
        greeting = {"role": "developer", "content": "Greet the caller in one short sentence."}
        await worker.queue_frames([LLMMessagesAppendFrame(messages=[greeting], run_llm=True)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info("Client disconnected: the call ends")
        await worker.cancel()

    runner = worker_runner(runner_args)
    await runner.add_workers(worker)
    await runner.run()


async def bot(runner_args: "RunnerArguments"):
    """Entry point for Pipecat's development runner (and Pipecat Cloud): one call."""
    from pipecat.runner.utils import create_transport

    transport = await create_transport(runner_args, transport_params())
    await run_bot(transport, runner_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="example_bot.py",
        description="The example voice bot with GrafanaMetricsExporter; an offline call "
        "when its API keys are not set.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument(
        "--offline", action="store_true", help="run the offline call even when the keys are set"
    )
    args, runner_argv = parser.parse_known_args(argv)
    load_env_file()
    missing = [name for name in API_KEYS if not os.getenv(name)]

    if args.offline or missing:
        if runner_argv:
            parser.error(f"unrecognized arguments: {' '.join(runner_argv)}")
        if args.offline:
            reason = "--offline: running an offline call."
        else:
            reason = (
                f"No API keys for the real bot ({', '.join(missing)} not set): running an "
                f"offline call instead. Set {', '.join(API_KEYS[:-1])} and {API_KEYS[-1]} in "
                ".env (see .env.example) to run the real bot."
            )
        demo = OfflineDemo(
            turns=args.turns,
            calls=args.calls,
            rounds=args.rounds,
            speed=args.speed,
            seed=args.seed,
        )
        return run_demo(demo, verbose=args.verbose, reason=reason)

    try:
        from pipecat.runner.run import main as runner_main
    except ImportError as e:
        print(
            f"example_bot.py: the real bot needs the example extra ({e}): run "
            '`pip install -e ".[example]"`, or `python example_bot.py --offline`.',
            file=sys.stderr,
        )
        return 1
    # The runner parses sys.argv itself; it gets what this script did not take.
    sys.argv = [sys.argv[0], *runner_argv, *(["-v"] if args.verbose else [])]
    runner_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
