"""``pipecat-grafana demo``: offline calls, measured and exported like real ones.

Someone who installed the package has no API keys yet, or no wish to spend them,
and still needs to see the exporter work: the call summary, and data in Grafana.
This command runs the offline call of ``pipecat_grafana.offline`` (a scripted caller
talking to a real Pipecat pipeline whose STT, LLM and TTS are scripted services on
Pipecat's own base classes) with the observers and exporter of the example bot
(``example_bot.py``), and is what that bot runs when no API keys are set. With
``--calls`` and ``--rounds`` it is a load generator for the dashboard.

Each call has what the dashboard's conversation panels show (a tool call, a
barge-in, a rate-limited TTS request; ``--no-incidents`` leaves them out) and ends
with an outcome, as an application declares and sets it: mostly ``resolved``,
sometimes ``escalated`` or ``abandoned``, drawn from the call's seed.

Ctrl-C, and SIGTERM (``docker stop``, Kubernetes, systemd), end the calls the way
a hang-up would: the pipelines are cancelled, so each exporter records the call as
``cancelled``, logs its summary and exports its final values; the process then
exits with status 130 (Ctrl-C) or 143 (SIGTERM), as if the signal had ended it. A
second signal of either kind quits at once.
"""

import argparse
import asyncio
import itertools
import math
import random
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from loguru import logger

from pipecat_grafana import config as cfg
from pipecat_grafana.commands._arguments import at_least, positive
from pipecat_grafana.scrape_config import resolve_scrape
from pipecat_grafana.summary import CallSummary

if TYPE_CHECKING:
    from pipecat_grafana.processor import GrafanaMetricsExporter

SERVICE_NAME = "voice-rag-bot"
"""The ``service.name`` of the example bot (``example_bot.py``), which the offline calls use."""
DEFAULT_TURNS = 4
DEFAULT_CALLS = 1
DEFAULT_ROUNDS = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
_EXIT_STATUS = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
"""128 + the signal's number, as a shell reports a process the signal ended."""

OUTCOMES = ("resolved", "escalated", "abandoned")
"""The values of the offline calls' ``outcome`` attribute, as a support bot would declare them."""
CALL_ATTRIBUTES = {"outcome": OUTCOMES}
"""The call attributes the offline calls' exporters declare (``call_attributes=``)."""
_OUTCOME_WEIGHTS = (0.75, 0.15, 0.10)

EXAMPLES = """\
examples:
  pipecat-grafana demo                      one call of 4 turns (about 7 s)
  pipecat-grafana demo --turns 8 --calls 5  5 concurrent calls of 8 turns
  pipecat-grafana demo --calls 10 --rounds 0 --speed 2
                                            10 calls at a time, at half pace, until Ctrl-C
  pipecat-grafana demo --no-incidents       questions and answers only: no tool call,
                                            barge-in or rate-limited TTS request
  pipecat-grafana demo --verbose            also log every metric (MetricsLogObserver)

Metrics go where the exporter would send them: GRAFANA_CLOUD_OTLP_ENDPOINT,
GRAFANA_CLOUD_INSTANCE_ID and GRAFANA_CLOUD_API_TOKEN (or OTEL_EXPORTER_OTLP_*),
from the environment or ./.env. Without an endpoint only the summaries are shown.
Test the connection first with `pipecat-grafana check`.
"""


def scripted_outcome(seed: int | None) -> str:
    """The outcome the offline call with ``seed`` ends with: mostly ``resolved``.

    Args:
        seed: The call's seed; ``None`` draws a different outcome every time.

    Returns:
        One of ``OUTCOMES``.
    """
    rng = random.Random(None if seed is None else f"outcome:{seed}")
    return rng.choices(OUTCOMES, weights=_OUTCOME_WEIGHTS)[0]


class OfflineDemo:
    """Offline calls, each with the example bot's metrics logger and Grafana exporter.

    Each call gets a ``MetricsLogObserver`` and a ``GrafanaMetricsExporter``
    configured as in ``example_bot.py`` (``gpt-4o``, ``gladia``, ``cartesia``,
    ``voice-rag-bot``), so what arrives in Grafana looks like the real bot's. The
    exporter declares the ``outcome`` call attribute (``CALL_ATTRIBUTES``), and each
    call sets it (``scripted_outcome``) as an application does once it knows how the
    call went.

    Example::

        demo = OfflineDemo(turns=3, calls=2)
        await demo.run()
        for summary in demo.summaries:
            print(summary.total_cost_usd)
    """

    def __init__(
        self,
        *,
        turns: int = DEFAULT_TURNS,
        calls: int = DEFAULT_CALLS,
        rounds: int = DEFAULT_ROUNDS,
        speed: float = 1.0,
        seed: int | None = None,
        incidents: bool = True,
    ):
        """Describe the calls to run.

        Args:
            turns: How many times the caller speaks in each call.
            calls: How many calls run at once.
            rounds: How many times to run the batch of calls, one after the
                other; 0 runs batches until cancelled.
            speed: Scale of every scripted delay (2 is half the pace).
            seed: Seed of the first call's script and latencies; ``None`` for
                different calls every time.
            incidents: Whether each call has a tool call, a barge-in and a
                rate-limited TTS request (see ``pipecat_grafana.offline``).

        Raises:
            ValueError: A count is out of range or ``speed`` is not positive.
        """
        if turns < 1:
            raise ValueError(f"turns must be at least 1, not {turns}")
        if calls < 1:
            raise ValueError(f"calls must be at least 1, not {calls}")
        if rounds < 0:
            raise ValueError(f"rounds must be 0 (until cancelled) or more, not {rounds}")
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, not {speed}")
        self.turns = turns
        self.calls = calls
        self.rounds = rounds
        self.speed = speed
        self.seed = seed
        self.incidents = incidents
        self._exporters: list[GrafanaMetricsExporter] = []
        self._summaries: list[CallSummary] = []

    @property
    def summaries(self) -> list[CallSummary]:
        """The summary of each call started so far, final once the call has ended."""
        return self._summaries + [
            e.summary for e in self._exporters if e.summary and e.summary.started_at
        ]

    async def run(self) -> None:
        """Run every round of calls; cancelling this ends the calls in progress cleanly."""
        # Imported when a call runs: the other commands never load Pipecat or the offline call.
        from pipecat.observers.loggers.metrics_log_observer import MetricsLogObserver

        from pipecat_grafana.offline import run_offline_calls

        round_number = 0
        while self.rounds == 0 or round_number < self.rounds:
            seed = None if self.seed is None else self.seed + round_number * self.calls
            await run_offline_calls(
                calls=self.calls,
                turns=self.turns,
                processors_factory=self._processors_factory(seed),
                observers_factory=lambda: [MetricsLogObserver()],
                speed=self.speed,
                seed=seed,
                incidents=self.incidents,
                enable_tracing=tracing_on(),
                **_models(),
            )
            # Keep the summaries, not the finished pipelines: a load run can last hours.
            self._summaries, self._exporters = self.summaries, []
            round_number += 1

    def _processors_factory(
        self, seed: int | None
    ) -> Callable[[], Sequence["GrafanaMetricsExporter"]]:
        # Call i of a round has the seed seed + i, and the i-th processors made.
        seeds = itertools.repeat(None) if seed is None else itertools.count(seed)
        return lambda: self._processors(next(seeds))

    def _processors(self, seed: int | None) -> Sequence["GrafanaMetricsExporter"]:
        from pipecat_grafana.processor import GrafanaMetricsExporter

        models = _models()
        exporter = GrafanaMetricsExporter(
            service_name=SERVICE_NAME,
            call_attributes=CALL_ATTRIBUTES,
            llm_model=models["llm_model"],
            stt_model=models["stt_model"],
            tts_model=models["tts_model"],
        )
        # The script knows how the call ends; a bot sets it when it knows (a request
        # done, a transfer to an agent, a hang-up), any time before the call ends.
        exporter.set_call_attributes(outcome=scripted_outcome(seed))
        self._exporters.append(exporter)
        return [exporter]


def tracing_on() -> bool:
    """Whether traces are asked for (``PIPECAT_GRAFANA_TRACES``) and can be sent."""
    try:
        return cfg.resolve().traces_endpoint is not None
    except ValueError:  # a configuration error, said once by the exporter
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the offline call's options, shared by ``pipecat-grafana demo`` and ``example_bot.py``."""
    parser.add_argument(
        "--turns",
        type=at_least(1),
        default=DEFAULT_TURNS,
        metavar="N",
        help=f"times the caller speaks in each call (default {DEFAULT_TURNS})",
    )
    parser.add_argument(
        "--calls",
        type=at_least(1),
        default=DEFAULT_CALLS,
        metavar="N",
        help=f"calls running at once (default {DEFAULT_CALLS})",
    )
    parser.add_argument(
        "--rounds",
        type=at_least(0),
        default=DEFAULT_ROUNDS,
        metavar="N",
        help="run the batch of calls N times in a row; 0 = until Ctrl-C "
        f"(default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--speed",
        type=positive(),
        default=1.0,
        metavar="X",
        help="scale of the scripted latencies and of the audio's pace: 0.1 is ten times "
        "faster, 2 half the pace (default 1, a turn in about 1.5 s)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the script, for repeatable calls"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG: every metric (MetricsLogObserver) and Pipecat's own lines",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run an offline call (no API keys) and export its metrics",
        description="Run scripted calls through a real Pipecat pipeline (scripted STT, LLM "
        "and TTS on Pipecat's service base classes), export their metrics like the real "
        "bot's and log each call's summary. Needs no API keys and no network.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument(
        "--no-incidents",
        dest="incidents",
        action="store_false",
        help="questions and answers only: no tool call, barge-in or rate-limited TTS request",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``pipecat-grafana demo``; returns the exit status."""
    cfg.load_env_file()
    return run_demo(
        OfflineDemo(
            turns=args.turns,
            calls=args.calls,
            rounds=args.rounds,
            speed=args.speed,
            seed=args.seed,
            incidents=args.incidents,
        ),
        verbose=args.verbose,
    )


def configure_logging(*, verbose: bool) -> None:
    """Log to stderr at INFO, so the call summaries stand out; DEBUG with ``verbose``."""
    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if verbose else "INFO")


def run_demo(demo: OfflineDemo, *, verbose: bool = False, reason: str | None = None) -> int:
    """Run an offline demo from the command line, to its end or to Ctrl-C or SIGTERM.

    Configures logging, says what is about to happen and where the metrics go,
    runs the calls, and exports what is left before returning.

    Args:
        demo: The calls to run.
        verbose: Log at DEBUG rather than INFO.
        reason: Why an offline call runs, said first (``example_bot.py`` names
            the missing API keys).

    Returns:
        0 when the calls ended, 130 when interrupted by Ctrl-C, 143 when ended
        by SIGTERM, 2 when the export configuration is malformed.
    """
    configure_logging(verbose=verbose)
    try:
        destination = _destination()
    except cfg.ConfigError as e:
        print(f"pipecat-grafana: configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    rounds = "until Ctrl-C" if demo.rounds == 0 else f"{demo.rounds} round(s)"
    models = _models()
    logger.info(
        "\n".join(
            [
                *([reason] if reason else []),
                f"Offline call: {demo.calls} call(s) at a time, {demo.turns} turns each, {rounds}.",
                "  A scripted caller talks to a real Pipecat pipeline whose STT "
                f"({models['stt_model']}), LLM ({models['llm_model']}) and TTS "
                f"({models['tts_model']})",
                "  are scripted services on Pipecat's service base classes.",
                *_incidents_said(demo),
                f"  Metrics: {destination}.",
                "  Ctrl-C (or SIGTERM) ends the calls cleanly, with their summaries.",
            ]
        )
    )
    received = None
    try:
        received = asyncio.run(run_interruptible(demo))
    except KeyboardInterrupt:
        # A second Ctrl-C, or a platform without loop signal handlers.
        received = signal.SIGINT
    finally:
        import pipecat_grafana

        pipecat_grafana.shutdown()
    summaries = demo.summaries
    ended = sum(s.end_reason == "ended" for s in summaries)
    total = sum(s.total_cost_usd for s in summaries if s.total_cost_usd is not None)
    logger.info(
        f"Offline run finished: {len(summaries)} call(s), {ended} ended, "
        f"{len(summaries) - ended} cancelled; estimated cost ${total:.4f}; metrics: {destination}."
    )
    return _EXIT_STATUS[received] if received is not None else 0


def _incidents_said(demo: OfflineDemo) -> list[str]:
    """What the calls include besides questions and answers, said before Pipecat logs it.

    The rate-limited TTS request reaches the log as Pipecat's own ``ERROR`` line: said
    first, it reads as the script it is, not as a failure of the run.
    """
    if not demo.incidents:
        return []
    barge_in = " a barge-in," if demo.turns > 1 else ""
    return [
        f"  Each call includes a scripted tool call,{barge_in} and a scripted rate limit: the "
        "TTS refuses one request",
        "  (Pipecat logs it as ERROR ... TTS request refused: 429 Too Many Requests) and the "
        "retry speaks the sentence.",
    ]


async def run_interruptible(demo: OfflineDemo) -> signal.Signals | None:
    """Run ``demo``; Ctrl-C or SIGTERM cancels its calls cleanly, a second signal quits at once.

    Without a handler, SIGTERM (how ``docker stop``, Kubernetes and systemd end a
    process) would kill Python on the spot: the calls in progress would end with no
    summary and no final export.

    Returns:
        The signal that ended the run, or ``None`` when the calls ran to their end.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(demo.run())
    received: signal.Signals | None = None

    def on_signal(signum: signal.Signals) -> None:
        nonlocal received
        received = signum
        # Back to the default handlers: a second Ctrl-C raises KeyboardInterrupt, a
        # second SIGTERM ends the process at once.
        for installed in handled:
            loop.remove_signal_handler(installed)
        what = "Interrupted" if signum == signal.SIGINT else "Terminated (SIGTERM)"
        logger.warning(
            f"{what}: ending the call(s) cleanly, with their summaries and final export "
            "(the same signal again to quit at once)."
        )
        task.cancel()

    handled: list[signal.Signals] = []
    for signum in _EXIT_STATUS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows, or not the main thread: Ctrl-C cancels the main task (asyncio.run),
            # which cancels the calls just as cleanly.
            pass
    try:
        await task
    except asyncio.CancelledError:
        if received is None:
            raise
    finally:
        if received is None:
            for signum in handled:
                loop.remove_signal_handler(signum)
    return received


def _models() -> dict[str, str]:
    """The models the offline call's services report, and its exporters are configured with."""
    # The offline call is imported where a call runs, not at the top: it brings
    # Pipecat's transports and services, and every subcommand's module is imported
    # to build the parser, so `pipecat-grafana dashboard` would load them too.
    from pipecat_grafana import offline

    return {
        "llm_model": offline.DEFAULT_LLM_MODEL,
        "stt_model": offline.DEFAULT_STT_MODEL,
        "tts_model": offline.DEFAULT_TTS_MODEL,
    }


def _destination() -> str:
    scrape = resolve_scrape()
    return cfg.resolve().destination(scrape.url if scrape else None)
