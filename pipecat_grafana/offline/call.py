"""Running an offline call: the pipeline of a voice bot, scripted at both ends.

``run_offline_call`` puts the scripted transport and services where a real bot has
its transport and hosted services, with Pipecat's own VAD controller, turn
strategy and context aggregators between them, and runs the pipeline until the
caller hangs up. ``run_offline_calls`` runs several at once, as a deployed bot
serves several callers.
"""

import asyncio
import random
from collections.abc import Callable, Sequence

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from pipecat_grafana.offline.audio import EnergyVADAnalyzer
from pipecat_grafana.offline.script import (
    GREETING,
    KNOWLEDGE_BASE,
    SYSTEM_PROMPT,
    TOOL,
    TOOL_NAME,
    Incidents,
    pick_exchanges,
    plan_incidents,
)
from pipecat_grafana.offline.services import (
    DEFAULT_LLM_MODEL,
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_MODEL,
    AccountLookup,
    ScriptedLLMService,
    ScriptedSTTService,
    ScriptedTTSService,
    ScriptedTurnAnalyzer,
)
from pipecat_grafana.offline.transport import OfflineTransport

# Pipecat's defaults (PipelineParams), so the pipeline needs no resampling.
AUDIO_IN_SAMPLE_RATE = 16000
AUDIO_OUT_SAMPLE_RATE = 24000


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
    enable_tracing: bool = False,
) -> None:
    """Run one scripted call through a real Pipecat pipeline, to its end.

    The bot greets the caller when the caller connects, as a deployed bot does from
    its transport's ``on_client_connected``; then the caller speaks ``turns`` times
    and the bot answers each time. The call ends
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
        enable_tracing: Run the worker with Pipecat's tracing (``conversation``,
            ``turn`` and service spans, through the global tracer provider).

    Raises:
        ValueError: If ``turns`` is less than 1 or ``speed`` is not positive.
    """
    _check_call_arguments(turns=turns, speed=speed)

    rng = random.Random(seed)
    exchanges = pick_exchanges(turns, rng)

    def service_rng() -> random.Random:
        # One generator per component, so a component's draws don't depend on
        # how the others' interleave with it.
        return random.Random(rng.getrandbits(64))

    # Generators in the order they always had, so that a seed's call without
    # incidents stays the call it was before there were any.
    transport_rng, stt_rng, llm_rng, tts_rng, turn_rng = (service_rng() for _ in range(5))
    plan = plan_incidents(turns, service_rng()) if incidents else Incidents()

    def turns_of(turn: int | None) -> tuple[int, ...]:
        return () if turn is None else (turn,)

    transport = OfflineTransport(
        utterances=[exchange.user for exchange in exchanges],
        rng=transport_rng,
        speed=speed,
        barge_in_turns=turns_of(plan.barge_in_turn),
        greeted=True,
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
        # The greeting is the TTS's first answer: the refused one is an answer to a turn.
        rate_limited_answers=tuple(turn + 1 for turn in turns_of(plan.rate_limited_answer)),
    )

    context = LLMContext(
        messages=[
            {
                "role": "system",
                "content": f"{SYSTEM_PROMPT}\n\nKnowledge base:\n{KNOWLEDGE_BASE}",
            }
        ],
        tools=ToolsSchema(standard_tools=[TOOL]),
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
        enable_tracing=enable_tracing,
    )

    @transport.event_handler("on_client_connected")
    async def greet(transport, client):
        await worker.queue_frames([TTSSpeakFrame(GREETING)])

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
    enable_tracing: bool = False,
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
        enable_tracing: Run each worker with Pipecat's tracing.

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
                    enable_tracing=enable_tracing,
                )
            )
