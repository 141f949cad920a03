"""What ``GrafanaMetricsExporter`` costs a voice bot, against baselines measured in the same run.

The exporter sits in every call's pipeline and runs on the event loop that also
carries the call's audio, so its cost has to be known, not guessed. This script
measures it on a realistic frame mix and prints each figure next to a baseline
measured in the same run, the ratio, the goal and PASS/MISS. It is not part of
the test suite and decides no test's outcome; run it by hand::

    .venv/bin/python benchmarks/bench.py           # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/bench.py --quick   # about 3 minutes, noisier

What it measures, exporting every second to a live local receiver:

1. Per-frame cost. The same mix of frames through real pipelines
   (``PipelineWorker`` + ``WorkerRunner``, metrics on) holding a bare
   pass-through ``FrameProcessor`` or the exporter, fed batch by batch in turn:
   CPU time of the event-loop thread per frame. A third pipeline holds the
   pass-through plus as many idle observers as the exporter adds, which tells
   Pipecat's cost of an observer from the exporter's own work. Also
   ``process_frame`` and the exporter's observers alone.
2. Recording cost. One ``MetricsData`` through the exporter's observers
   (points, cost, summary upkeep) against Pipecat's ``MetricsLogObserver``
   handling the same ``FramePushed``, in turn. Loguru logs into a sink that
   drops every message at DEBUG, so the logger does its formatting work and no
   terminal I/O is timed, for either.
3. Event-loop lag. A task sleeping 1 ms over and over records how late it wakes
   while scripted calls (``pipecat_grafana.offline``) arrive every second: without
   the exporter, with it and export off, against a live receiver, and against
   one that never answers. Alternated rounds, samples pooled per scenario.
4. Memory and traffic. RSS and Python objects after 1,000 and 10,000 calls run
   through the exporter's call lifecycle without a pipeline (as the test suite
   does), bytes exported per call, threads, export requests and export-thread
   CPU per interval with 1 and 100 calls in progress. Bytes each ended call
   leaves behind (``tracemalloc``, 2,000 calls) with nothing pushed or scraped
   (summaries only) and with the application's own ``MeterProvider``.
5. The event-loop lag sampler. Loop CPU with the sampler on and off, in
   alternated one-second windows of an idle loop (nothing else to charge it to),
   and the per-frame cost of a real pipeline holding the exporter with the
   sampler on and off, in alternated segments, against a bare pass-through.
6. What a call costs on Grafana Cloud. The offline call (8 turns at speed 4,
   no incidents; 1 call, then 3 at once) to an in-process receiver, today's way
   (per-call latency histograms with 14 bounds, every series every export) and
   the new default: series, data points per minute while in progress, and
   billable series-equivalents (the higher of the two) per call. Then the bytes of the
   call's log records (its summary and one record per turn), which Loki bills by: per turn
   record and per call of 8 turns, with the words off (the default) and on.
7. One process per call, as Pipecat Cloud runs bots. Fresh processes running the
   same offline call (``pipecat-grafana demo``, seeds 7, 8, ...) against a receiver,
   with classic and with native histograms side by side: series per process (a native
   histogram counts one), the native histograms' buckets as Mimir counts them, data
   points per minute over the call, and the billable series of a fleet starting 10
   calls a minute of 3 minutes each, against the figures measured before this work.
8. The fleet gateway (deploy/fleet/). Fresh one-call processes into a VictoriaMetrics,
   straight and through the shipped vmagent gateway: series stored and bytes per minute
   for 4 and 40 processes (4 with ``--quick``), 400 extrapolated (about 3 minutes).

The OTLP receiver runs in a child process (``benchmarks/receiver.py``), as
Grafana Cloud would: in this process it would compete for the GIL and memory.
CPU times are those of the event-loop thread (``time.thread_time``): other
processes on the machine slow them down less than wall time, but they do, so
compare the ratios, which are measured side by side, before the absolute values.
"""

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from loguru import logger
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TextAggregationMetricsData,
    TTFAMetricsData,
    TTFATMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
    TurnMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.loggers.metrics_log_observer import MetricsLogObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.tracing.tracing_context import TracingContext
from pipecat.workers.runner import WorkerRunner

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, loop_lag
from pipecat_grafana import instruments as m
from pipecat_grafana.commands.demo import OfflineDemo
from pipecat_grafana.offline import run_offline_call
from tests import process_cost
from tests.backends import free_port
from tests.otlp_receiver import OtlpReceiver
from tests.process_cost import ProcessCost, run_call_process

FLEET_SIZES = (4, 40, 400)

HERE = Path(__file__).resolve().parent
ENDPOINT, COMPRESSION = "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_COMPRESSION"
DOWN = FrameDirection.DOWNSTREAM
MODELS = {"llm_model": "gpt-4o", "stt_model": "gladia", "tts_model": "cartesia"}
STT, LLM, TTS = "GladiaSTTService#3", "OpenAILLMService#4", "CartesiaTTSService#5"
TURN_ANALYZER = "LocalSmartTurnAnalyzerV3#2"
BATCH = 2  # frames queued at a time: a 20 ms tick of the mix carries 1.75 on average
NOTES: list[str] = []  # details printed under the table


@dataclass(frozen=True)
class Scale:
    """How much work each section does (``--quick`` trades precision for time)."""

    frames: int = 10_000  # frames per pipeline (about 2 minutes of a call)
    segments: int = 5  # the ratios are taken per segment, then their median
    records: int = 20_000  # MetricsData recorded by each
    lag_rounds: int = 3  # alternated rounds of the four lag scenarios
    lag_seconds: int = 5  # call arrivals measured per scenario and round
    calls: int = 10_000
    calls_checkpoint: int = 1_000
    calls_at_once: int = 100
    sampler_rounds: int = 10  # alternated one-second windows of the sampler on and off
    processes: int = 3  # fresh processes of one call each, per histogram form
    fleet: tuple[int, ...] = (4, 40)  # one-call processes measured with and without the gateway


FULL = Scale()
QUICK = Scale(
    frames=3_000,
    segments=3,
    records=5_000,
    lag_rounds=1,
    calls=3_000,
    sampler_rounds=4,
    processes=1,
    fleet=(4,),
)


# ---------------------------------------------------------------- the frame mix


def turn_metrics(rng: random.Random) -> list[tuple[int, MetricsData]]:
    """One turn's metrics with the 20 ms tick each arrives at, as Pipecat's services send them.

    16 a turn, as the scripted calls of ``pipecat_grafana.offline`` report them: the
    STT's TTFB, processing time and usage and the turn analyzer's verdict when
    the caller stops; the LLM's TTFB, TTFAT, processing time and usage; the TTS's
    TTFB and TTFA, and for each of two sentences its text aggregation, usage and
    processing time.
    """
    u = rng.uniform
    usage = LLMTokenUsage(
        prompt_tokens=rng.randint(600, 1500), completion_tokens=rng.randint(20, 60), total_tokens=0
    )
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return [
        (180, TTFBMetricsData(processor=STT, model="gladia", value=u(0.08, 0.2))),
        (180, ProcessingMetricsData(processor=STT, model="gladia", value=u(0.08, 0.2))),
        (180, STTUsageMetricsData(processor=STT, model="gladia", value=STTUsage(audio_seconds=4))),
        (
            180,
            TurnMetricsData(
                processor=TURN_ANALYZER,
                is_complete=True,
                probability=u(0.85, 0.99),
                e2e_processing_time_ms=u(8, 30),
            ),
        ),
        (195, TTFBMetricsData(processor=LLM, model="gpt-4o", value=u(0.2, 0.4))),
        (
            196,
            TTFATMetricsData(
                processor=LLM, model="gpt-4o", ttfat=u(0.3, 0.5), ttfb=0.3, thinking_time=0.02
            ),
        ),
        (198, TextAggregationMetricsData(processor=TTS, model="cartesia", value=u(0.05, 0.2))),
        (198, TTSUsageMetricsData(processor=TTS, model="cartesia", value=rng.randint(40, 90))),
        (200, TTFBMetricsData(processor=TTS, model="cartesia", value=u(0.06, 0.14))),
        (
            200,
            TTFAMetricsData(
                processor=TTS, model="cartesia", ttfa=u(0.1, 0.3), ttfb=0.1, leading_silence=0.05
            ),
        ),
        (216, ProcessingMetricsData(processor=LLM, model="gpt-4o", value=u(0.4, 0.8))),
        (216, LLMUsageMetricsData(processor=LLM, model="gpt-4o", value=usage)),
        (300, TextAggregationMetricsData(processor=TTS, model="cartesia", value=u(0.0, 0.01))),
        (300, TTSUsageMetricsData(processor=TTS, model="cartesia", value=rng.randint(40, 90))),
        (300, ProcessingMetricsData(processor=TTS, model="cartesia", value=u(0.1, 0.3))),
        (599, ProcessingMetricsData(processor=TTS, model="cartesia", value=u(0.1, 0.3))),
    ]


def turn_frames(rng: random.Random, *, metrics: bool = True) -> list[Frame]:
    """The frames of one 12-second turn, in the order the end of a pipeline sees them.

    In 20 ms ticks: the caller's audio all along (16 kHz, 600 frames), the bot's
    audio for the last 8 s (24 kHz, 400 frames), six interim transcripts and a
    final one, 22 LLM tokens, two sentences sent to TTS, and ``turn_metrics``,
    each in its own ``MetricsFrame`` as services push them: 87 frames a second,
    1.5 % of them metrics.
    """
    caller_audio, bot_audio = bytes(640), bytes(960)
    events: defaultdict[int, list[Frame]] = defaultdict(list)
    for tick in range(25, 151, 25):
        events[tick].append(InterimTranscriptionFrame(text="I'd like", user_id="c", timestamp=""))
    events[180].append(TranscriptionFrame(text="Why is my bill higher?", user_id="c", timestamp=""))
    for tick in range(195, 217):
        events[tick].append(LLMTextFrame(text=" word"))
    for tick in (200, 300):
        events[tick].append(TTSTextFrame(text="A sentence.", text_type="sentence"))
    if metrics:
        for tick, data in turn_metrics(rng):
            events[tick].append(MetricsFrame(data=[data]))
    frames: list[Frame] = []
    for tick in range(600):
        frames.append(InputAudioRawFrame(audio=caller_audio, sample_rate=16000, num_channels=1))
        if tick >= 200:
            frames.append(
                TTSAudioRawFrame(audio=bot_audio, sample_rate=24000, num_channels=1, context_id="t")
            )
        frames.extend(events.get(tick, ()))
    return frames


def frame_mix(count: int, *, metrics: bool, seed: int = 1) -> list[Frame]:
    """``count`` new frames of consecutive turns (a pipeline never sees a frame twice)."""
    rng = random.Random(seed)
    frames: list[Frame] = []
    while len(frames) < count:
        frames.extend(turn_frames(rng, metrics=metrics))
    return frames[:count]


def pushed(frames: Sequence[Frame]) -> list[FramePushed]:
    """``frames`` as observers are handed them: first pushes, downstream."""
    source = PassThrough()
    return [
        FramePushed(
            source=source, destination=source, frame=frame, direction=DOWN, timestamp=time.time_ns()
        )
        for frame in frames
    ]


# ----------------------------------------------------------------- the harness


class Receiver:
    """``benchmarks/receiver.py`` in a child process: a live or hanging OTLP endpoint."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(HERE / "receiver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.endpoint = self._process.stdout.readline().strip()
        if not self.endpoint.startswith("http"):
            raise RuntimeError("the receiver process did not start")

    def command(self, command: str = "stats") -> dict[str, int]:
        """Send a command; return the totals: accepted, bytes, last_bytes, unanswered."""
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        """Stop the child."""
        if self._process.poll() is None:
            self.command("quit")
            self._process.wait(timeout=10)


def configure_export() -> None:
    """Set what exporters read when they are built.

    Export every second; give up on an endpoint that does not answer after 2 s,
    and let a call's end wait at most 2 s for its final export.
    """
    os.environ.update(
        {
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            "PIPECAT_GRAFANA_FLUSH_TIMEOUT": "2",
        }
    )
    for name in ("GRAFANA_CLOUD_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", COMPRESSION):
        os.environ.pop(name, None)


def export_to(receiver: Receiver | None, *, compression: str | None = None) -> None:
    """Exporters built from now on export to ``receiver`` (None: nowhere), in a fresh pipeline.

    The exporters of a process share one export pipeline per configuration; shutting
    it down gives the next scenario its own threads and series.
    """
    pipecat_grafana.shutdown(timeout_s=1)
    os.environ.pop(ENDPOINT, None)
    os.environ.pop(COMPRESSION, None)
    if receiver is not None:
        os.environ[ENDPOINT] = receiver.endpoint
    if compression is not None:
        os.environ[COMPRESSION] = compression


class PassThrough(FrameProcessor):
    """The baseline: a processor that does nothing but pass every frame on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class IdleObserver(BaseObserver):
    """An observer that wants each frame once, like the exporter's, and does nothing."""

    def __init__(self):
        super().__init__(observe_every_push=False)


class Arrivals(PassThrough):
    """The pipeline's last processor: counts the benchmark's frames as they arrive."""

    def __init__(self, frames: Sequence[Frame]):
        super().__init__()
        self._ids = {frame.id for frame in frames}
        self._count = 0
        self._wanted = 0
        self._arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if frame.id in self._ids:
            self._count += 1
            if self._count >= self._wanted:
                self._arrived.set()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` of the benchmark's frames have arrived."""
        self._wanted = count
        while self._count < count:
            self._arrived.clear()
            await self._arrived.wait()


class Discard(FrameProcessor):
    """A next processor that drops what it is given, for calling ``process_frame`` alone."""

    async def queue_frame(self, frame, direction=DOWN, callback=None):
        pass


class FakeWorker:
    """What the exporter's ``_open_call`` needs of a ``PipelineWorker``."""

    _conversation_id = None

    def __init__(self) -> None:
        self.observers: list[BaseObserver] = []

    def add_observer(self, observer: BaseObserver) -> None:
        self.observers.append(observer)

    async def remove_observer(self, observer: BaseObserver) -> None:
        self.observers.remove(observer)

    def add_event_handler(self, event: str, handler) -> None:
        pass  # the pipeline's start and end: the benchmark calls _start_call/_end_call


class Call:
    """One call through the exporter's lifecycle without a pipeline, as the tests drive it.

    ``export=False`` builds the exporter as if no endpoint were configured: its
    points go to OpenTelemetry's no-op meters, the summary is kept as usual.
    """

    def __init__(self, *, export: bool = True, **kwargs) -> None:
        endpoint = os.environ.get(ENDPOINT)
        if not export:
            os.environ.pop(ENDPOINT, None)
        try:
            self.exporter = GrafanaMetricsExporter(**MODELS, **kwargs)
        finally:
            if endpoint is not None:
                os.environ[ENDPOINT] = endpoint
        worker = FakeWorker()
        self.exporter._open_call(worker)  # what setup() does
        self.observers = worker.observers
        self.exporter._start_call()  # what the StartFrame does
        self._started = False

    async def start(self) -> None:
        """Tell the observers the pipeline started, as the worker does (one of them leaves)."""
        if not self._started:
            self._started = True
            for observer in list(self.observers):
                await observer.on_pipeline_started()

    async def observe(self, data: FramePushed) -> None:
        """Hand a frame to the exporter's observers, as the worker would."""
        await self.start()
        for observer in self.observers:
            await observer.on_push_frame(data)

    async def end(self) -> None:
        """End the call as an EndFrame and clean-up do: summary, final export awaited."""
        self.exporter._end_call("ended")
        await self.exporter._finish_call()


class Lane:
    """A real pipeline under test, fed a batch of frames at a time.

    Frames are queued a few at a time, each batch once the previous one has left
    the pipeline, as a call's frames arrive: queueing them all at once would
    measure long queues instead. A batch is done when its frames have left the
    pipeline and every observer has been handed every event: the exporter works
    in observers, whose work would otherwise be left out.
    """

    def __init__(
        self,
        processor: FrameProcessor,
        frames: Sequence[Frame],
        observers: Sequence[BaseObserver] = (),
        *,
        tracing: bool = False,
    ):
        self.frames = frames
        self.cpu = 0.0  # event-loop CPU seconds spent on this lane's batches
        self._sink = Arrivals(frames)
        self._worker = PipelineWorker(
            Pipeline([processor, self._sink]),
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
            observers=list(observers),
            cancel_on_idle_timeout=False,
            enable_tracing=tracing,
        )
        self._running: asyncio.Task | None = None

    async def start(self) -> None:
        """Run the pipeline until its StartFrame has gone through."""
        started = asyncio.Event()

        @self._worker.event_handler("on_pipeline_started")
        async def on_started(worker, frame):
            started.set()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self._worker)
        self._running = asyncio.create_task(runner.run())
        await asyncio.wait_for(started.wait(), 10)

    async def feed(self, start: int, end: int) -> None:
        """Push ``frames[start:end]`` through, adding the loop CPU it took to ``cpu``."""
        begin = time.thread_time()
        await self._worker.queue_frames(self.frames[start:end])
        await self._sink.wait_for(end)
        # Pipecat has no public "observers are idle": join the worker observer's queues.
        for proxy in (self._worker._observer._proxies or {}).values():
            await proxy.queue.join()
        self.cpu += time.thread_time() - begin

    async def stop(self) -> None:
        """End the pipeline (an EndFrame, so the exporter finishes its call)."""
        await self._worker.queue_frame(EndFrame())
        await asyncio.wait_for(self._running, 30)


async def interleave(lanes: dict[str, Lane], segments: int) -> dict[str, list[float]]:
    """Feed the lanes their frames batch by batch, in turn: µs per frame of each, per segment.

    Lanes take turns batch by batch, in an order reversed at every round, so that
    other processes, CPU frequency and caches weigh on every lane alike.
    """
    count = min(len(lane.frames) for lane in lanes.values())
    for lane in lanes.values():
        await lane.start()
    await asyncio.sleep(0.05)  # let the start-up frames settle
    gc.collect()
    order = list(lanes.values())
    per_segment: dict[str, list[float]] = defaultdict(list)
    bounds = [round(count * i / segments) for i in range(segments + 1)]
    for first, last in pairwise(bounds):
        before = {name: lane.cpu for name, lane in lanes.items()}
        for start in range(first, last, BATCH):
            for lane in order:
                await lane.feed(start, min(start + BATCH, last))
            order.reverse()
        for name, lane in lanes.items():
            per_segment[name].append((lane.cpu - before[name]) / (last - first) * 1e6)
    for lane in lanes.values():
        await lane.stop()
    return per_segment


async def cpu_per_item(items: Sequence, handle: Callable[[object], Awaitable[None]]) -> float:
    """Event-loop CPU microseconds per ``await handle(item)``."""
    begin = time.thread_time()
    for item in items:
        await handle(item)
    return (time.thread_time() - begin) / len(items) * 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def rss_mb() -> float:
    """Resident set size of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def export_threads_cpu() -> float:
    """CPU seconds used by every thread but the loop's: the export pipeline's (Linux)."""
    total = 0
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and thread.native_id is not None:
            try:
                stat = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text()
            except OSError:  # the thread has just ended
                continue
            total += int(stat.split()[0])
    return total / 1e9


async def settled_threads() -> int:
    """The number of threads once those of shut-down export pipelines have ended."""
    for _ in range(50):
        if threading.active_count() == 1:
            break
        await asyncio.sleep(0.1)
    return threading.active_count()


def fmt(values: Sequence[float], digits: int = 1) -> str:
    """Several values, for a note."""
    return "/".join(f"{v:.{digits}f}" for v in values)


# ------------------------------------------------------------------- the table


@dataclass
class Row:
    """One line of the report."""

    figure: str
    value: str
    baseline: str = "—"
    versus: str = "—"
    goal: str = "—"
    passed: bool | None = None  # None: no goal, the figure is for information

    @property
    def result(self) -> str:
        return "info" if self.passed is None else ("PASS" if self.passed else "MISS")


def us(value: float) -> str:
    return f"{value:.2f} µs" if value < 10 else f"{value:.1f} µs"


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def print_table(rows: list[Row]) -> None:
    headers = ("Figure", "Exporter", "Baseline", "vs baseline", "Goal", "Result")
    cells = [headers] + [(r.figure, r.value, r.baseline, r.versus, r.goal, r.result) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if n == 0:
            print("  ".join("-" * width for width in widths))


# ------------------------------------------------------------- memory held per call


async def bench_held() -> list[Row]:
    """Bytes each ended call leaves behind: summaries only, and the application's provider.

    With nothing pushed or scraped, or with the application's own ``MeterProvider``, a call
    that ended must leave nothing but its summary (which the caller keeps or drops). Measured
    with ``tracemalloc`` after a full collection, over 2,000 calls after 200 to warm up.
    """
    rng = random.Random(5)
    frames = pushed([MetricsFrame(data=[d]) for _ in range(4) for _, d in turn_metrics(rng)])
    calls = 2_000

    async def held_per_call(**kwargs) -> float:
        async def run(count: int) -> None:
            for _ in range(count):
                call = Call(export=False, **kwargs)
                for data in frames:
                    await call.observe(data)
                await call.end()

        await run(200)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await run(calls)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / calls

    export_to(None)
    alone = await held_per_call()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provided = await held_per_call(meter_provider=provider)
    points = sum(
        len(metric.data.data_points)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )
    provider.shutdown()
    goal = 64.0  # bytes a call: noise, not a record per call
    return [
        Row(
            f"Bytes held per ended call, summaries only ({calls:,} calls)",
            f"{alone:.0f} B",
            goal=f"<= {goal:.0f} B",
            passed=alone <= goal,
        ),
        Row(
            f"Bytes held per ended call, the application's provider ({calls:,} calls)",
            f"{provided:.0f} B",
            goal=f"<= {goal:.0f} B",
            passed=provided <= goal,
        ),
        Row(
            f"  points the provider collects after {calls + 200:,} calls",
            f"{points:,}",
        ),
    ]


# --------------------------------------------------------------- scraped in a loop


async def bench_scrape() -> list[Row]:
    """What clients scraping the Prometheus endpoint in a loop cost the bot.

    100 calls in progress are served; 8 clients (gzip, as Prometheus asks) scrape as fast as
    they are answered for 3 s, against the same 3 s with nobody scraping: the process's CPU,
    the event loop's lag (a task sleeping 1 ms), scrapes answered and CPU per scrape.
    """
    port = free_port()
    os.environ["PIPECAT_GRAFANA_PROMETHEUS_PORT"] = str(port)
    export_to(None)
    rng = random.Random(9)
    frames = pushed([MetricsFrame(data=[d]) for _ in range(4) for _, d in turn_metrics(rng)])
    calls = [Call(export=False) for _ in range(100)]
    for call in calls:
        for data in frames:
            await call.observe(data)

    async def lag(seconds: float) -> tuple[list[float], float]:
        late: list[float] = []
        cpu = time.process_time()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - asked - 0.001) * 1000)
        return late, time.process_time() - cpu

    idle, idle_cpu = await lag(3.0)
    stop, answered = threading.Event(), Counter()

    def scrape_loop(client: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Accept-Encoding": "gzip", "User-Agent": f"loop/{client}"},
        )
        while not stop.is_set():
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            answered[client] += 1

    clients = [threading.Thread(target=scrape_loop, args=(n,), daemon=True) for n in range(8)]
    for client in clients:
        client.start()
    loaded, loaded_cpu = await lag(3.0)
    stop.set()
    for client in clients:
        client.join(15)
    for call in calls:
        await call.end()
    os.environ.pop("PIPECAT_GRAFANA_PROMETHEUS_PORT", None)
    export_to(None)
    scrapes = sum(answered.values())
    # The clients run in this process too: their share is in the CPU, which overstates it.
    return [
        Row(
            "Scrapes answered in 3 s, 8 clients in a loop (100 calls served)",
            f"{scrapes:,}",
        ),
        Row(
            "  process CPU while they scrape",
            f"{loaded_cpu / 3:.2f} cores",
            f"{idle_cpu / 3:.2f} cores nobody scraping",
            f"{(loaded_cpu - idle_cpu) / 3:+.2f} cores",
        ),
        Row(
            "  CPU per scrape (clients' share included)",
            ms((loaded_cpu - idle_cpu) * 1000 / max(scrapes, 1)),
        ),
        Row(
            "  event-loop lag p99 while they scrape",
            ms(percentile(loaded, 0.99)),
            ms(percentile(idle, 0.99)),
            f"{percentile(loaded, 0.99) / max(percentile(idle, 0.99), 0.001):.1f}x",
            goal="<= 2 frames (40 ms)",
            passed=percentile(loaded, 0.99) <= 40,
        ),
    ]


# ------------------------------------------------------------------ 1. frames


async def bench_frames(scale: Scale, live: Receiver) -> list[Row]:
    """The exporter's cost per frame, against a bare pass-through processor."""
    export_to(live)
    probe = Call()
    await probe.start()
    observers = len(probe.observers)  # as many as stay once the pipeline has started
    await probe.end()

    other, mix = frame_mix(scale.frames, metrics=False), frame_mix(scale.frames, metrics=True)
    # Each lane gets frames of its own: Pipecat tells a frame's first push by its id.
    lanes = {
        "bare": Lane(PassThrough(), other),
        "exporter": Lane(GrafanaMetricsExporter(**MODELS), frame_mix(scale.frames, metrics=False)),
        "idle": Lane(
            PassThrough(),
            frame_mix(scale.frames, metrics=False),
            [IdleObserver() for _ in range(observers)],
        ),
        "mix bare": Lane(PassThrough(), mix),
        "mix exporter": Lane(
            GrafanaMetricsExporter(**MODELS), frame_mix(scale.frames, metrics=True)
        ),
        # Pipecat's tracing, through the provider this package installs when asked
        # (traces=True): the same SDK TracerProvider and BatchSpanProcessor Pipecat's
        # setup_tracing builds, so the bare lane is Pipecat's tracing as set up by hand.
        "traced exporter": Lane(
            GrafanaMetricsExporter(**MODELS, traces=True),
            frame_mix(scale.frames, metrics=True),
            tracing=True,
        ),
        "traced bare": Lane(PassThrough(), frame_mix(scale.frames, metrics=True), tracing=True),
    }
    segments = await interleave(lanes, scale.segments)
    cost = {name: statistics.median(values) for name, values in segments.items()}

    def ratios(name: str, base: str) -> list[float]:
        return [x / y for x, y in zip(segments[name], segments[base], strict=True)]

    NOTES.append(
        f"per frame: {scale.segments} segments of {scale.frames // scale.segments} frames, "
        "ratio to bare per segment: "
        + "; ".join(
            f"{name} {fmt(ratios(name, base), 2)}"
            for name, base in (
                ("exporter", "bare"),
                ("idle", "bare"),
                ("mix exporter", "mix bare"),
                ("traced exporter", "traced bare"),
            )
        )
    )

    alone: dict[str, list[float]] = defaultdict(list)
    for _ in range(5):
        for name, processor in (
            ("bare", PassThrough()),
            ("exporter", GrafanaMetricsExporter(**MODELS)),
        ):
            processor.link(Discard())
            alone[name].append(
                await cpu_per_item(other, lambda f, p=processor: p.process_frame(f, DOWN))
            )
        call = Call()
        alone["observers"].append(await cpu_per_item(pushed(other), call.observe))
        await call.end()
    alone_cost = {name: statistics.median(values) for name, values in alone.items()}

    def row(name: str, base: str, label: str, goal: bool = False) -> Row:
        ratio = statistics.median(ratios(name, base))
        return Row(
            label,
            us(cost[name]),
            f"{us(cost[base])} bare pass-through",
            f"{ratio:.3f}x",
            "<= 1.10x" if goal else "—",
            ratio <= 1.10 if goal else None,
        )

    return [
        row("exporter", "bare", "per frame, pipeline, non-metrics frames", goal=True),
        row("idle", "bare", f"  bare + {observers} idle observers (as many as exporter)"),
        row("mix exporter", "mix bare", "per frame, pipeline, realistic mix"),
        Row(
            "per frame, traced pipeline, realistic mix",
            us(cost["traced exporter"]),
            f"{us(cost['traced bare'])} Pipecat's tracing alone",
            f"{statistics.median(ratios('traced exporter', 'traced bare')):.3f}x",
            "<= mix ratio",
            statistics.median(ratios("traced exporter", "traced bare"))
            <= statistics.median(ratios("mix exporter", "mix bare")) * 1.02,
        ),
        Row(
            "process_frame alone, non-metrics frames",
            us(alone_cost["exporter"]),
            f"{us(alone_cost['bare'])} bare pass-through",
            f"{alone_cost['exporter'] / alone_cost['bare']:.3f}x",
        ),
        Row(f"exporter's {observers} observers alone, non-metrics", us(alone_cost["observers"])),
    ]


# --------------------------------------------------------------- 2. recording


async def bench_recording(scale: Scale, live: Receiver) -> list[Row]:
    """One MetricsData through the exporter's observers, against MetricsLogObserver's.

    The two take turns a turn's metrics at a time, on the same frames. Calls last
    15 turns (about 3 minutes), then the next call starts: a series' first point
    costs more than the next ones.
    """
    export_to(live)
    rng = random.Random(2)
    turns = [pushed([MetricsFrame(data=[d]) for _, d in turn_metrics(rng)]) for _ in range(15)]
    log_observer = MetricsLogObserver()
    cpu = {"exporter": 0.0, "log": 0.0, "off": 0.0}
    records = 0
    while records < scale.records:
        call, unexported = Call(), Call(export=False)
        for turn in turns:
            cpu["exporter"] += await cpu_per_item(turn, call.observe) * len(turn)
            cpu["log"] += await cpu_per_item(turn, log_observer.on_push_frame) * len(turn)
            cpu["off"] += await cpu_per_item(turn, unexported.observe) * len(turn)
            records += len(turn)
        await call.end()
        await unexported.end()
    by_type: dict[str, list[float]] = defaultdict(list)
    call = Call()
    for turn in turns[1:]:  # a series' first point costs more: see the mean above
        for data in turn:
            kind = type(data.frame.data[0]).__name__.removesuffix("MetricsData")
            by_type[kind].append(await cpu_per_item([data], call.observe))
    await call.end()
    exporter, baseline, off = (cpu[name] / records for name in ("exporter", "log", "off"))
    plain, linked, traced = await exemplar_cost(turns, scale.records)
    NOTES.append(
        "record one MetricsData after a series' first point, median µs by type: "
        + ", ".join(f"{kind} {statistics.median(v):.1f}" for kind, v in sorted(by_type.items()))
    )
    return [
        Row(
            "record one MetricsData, incl. summary upkeep",
            us(exporter),
            f"{us(baseline)} MetricsLogObserver",
            f"{exporter / baseline:.2f}x",
            "< 20 µs",
            exporter < 20,
        ),
        Row("  of which without OTel SDK (export off)", us(off)),
        Row(
            "  with exemplars (call ID), against without",
            us(linked),
            f"{us(plain)} without exemplars",
            f"{linked / plain:.3f}x",
            "<= 1.05x",
            linked / plain <= 1.05,
        ),
        Row(
            "  with exemplars and a traced call (trace, span IDs)",
            us(traced),
            f"{us(plain)} without exemplars",
            f"{traced / plain:.3f}x",
            "<= 1.05x",
            traced / plain <= 1.05,
        ),
    ]


async def exemplar_cost(turns: list[list[FramePushed]], records: int) -> tuple[float, float, float]:
    """µs per MetricsData without exemplars, with them, and with them on a traced call.

    Interleaved on the same turns: a call whose recorder links nothing (as before
    exemplars), one as it is, and one whose recorder reads a real Pipecat
    ``TracingContext`` with a turn span open.
    """
    tracer = TracerProvider().get_tracer("bench")
    conversation, turn = tracer.start_span("conversation"), tracer.start_span("turn")
    tracing = TracingContext()
    tracing.set_conversation_context(conversation.get_span_context(), "bench")
    tracing.set_turn_context(turn.get_span_context())
    cpu, done = {"plain": 0.0, "linked": 0.0, "traced": 0.0}, 0
    while done < records:
        calls = {"plain": Call(), "linked": Call(), "traced": Call()}
        calls["plain"].exporter._recorder.exemplar = lambda: None  # as before exemplars
        calls["traced"].exporter._recorder._tracing = tracing
        for frames in turns:
            for name, call in calls.items():
                cpu[name] += await cpu_per_item(frames, call.observe) * len(frames)
            done += len(frames)
        for call in calls.values():
            await call.end()
    return cpu["plain"] / done, cpu["linked"] / done, cpu["traced"] / done


# --------------------------------------------------------------------- 3. lag


@dataclass
class Lag:
    """What one lag scenario saw."""

    samples: list[float]  # how late each 1 ms sleep woke, in ms, outside full collections
    during_full_gc: list[float]  # the samples that overlapped a full (generation 2) collection
    full_gc_ms: list[float]  # how long each full collection took
    loop_cpu: float  # share of the window the event-loop thread was on a CPU


async def lag_scenario(make_processors: Callable[[], list[FrameProcessor]], seconds: int) -> Lag:
    """Lateness of 1 ms sleeps while a scripted two-turn call arrives every second.

    A full garbage collection stops the loop for as long as it takes to walk the
    whole heap (tens of ms here), whoever allocated: the samples it overlaps
    are kept apart, so that one collection landing in one scenario does not
    decide the comparison. How many there were is reported.
    """
    samples: list[tuple[float, float, float]] = []  # (before, after, lateness in ms)
    full_gcs: list[tuple[float, float]] = []
    sampling = True
    collecting = 0.0

    def on_gc(phase: str, info: dict) -> None:
        nonlocal collecting
        if phase == "start":
            collecting = time.perf_counter()
        elif info["generation"] == 2:
            full_gcs.append((collecting, time.perf_counter()))

    async def sleeper() -> None:
        while sampling:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            after = time.perf_counter()
            samples.append((before, after, (after - before - 0.001) * 1000))

    calls: list[asyncio.Task] = []
    begin = time.perf_counter()

    async def arrive() -> None:
        seed = len(calls)
        call = run_offline_call(turns=2, processors=make_processors(), speed=1.0, seed=seed)
        calls.append(asyncio.create_task(call))
        await asyncio.sleep(max(0.0, begin + seed + 1 - time.perf_counter()))

    for _ in range(2):  # measure once calls overlap as they will
        await arrive()
    task = asyncio.create_task(sleeper())
    gc.callbacks.append(on_gc)
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(seconds):
        await arrive()
    loop_cpu = (time.thread_time() - cpu) / (time.perf_counter() - wall)
    sampling = False
    gc.callbacks.remove(on_gc)
    await task
    await asyncio.gather(*calls)

    def in_full_gc(before: float, after: float) -> bool:
        return any(start < after and end > before for start, end in full_gcs)

    return Lag(
        samples=[lag for before, after, lag in samples if not in_full_gc(before, after)],
        during_full_gc=[lag for before, after, lag in samples if in_full_gc(before, after)],
        full_gc_ms=[(end - start) * 1000 for start, end in full_gcs],
        loop_cpu=loop_cpu,
    )


async def bench_lag(scale: Scale, live: Receiver, hanging: Receiver) -> list[Row]:
    """Event-loop lag without the exporter, with it and a live receiver, and a hanging one."""

    def exporter() -> list[FrameProcessor]:
        return [GrafanaMetricsExporter(**MODELS)]

    export_to(None)
    await run_offline_call(turns=1, speed=0.2, seed=99)  # warm-up: imports, first-call costs
    scenarios = {
        "none": (None, list),
        "off": (None, exporter),  # the exporter's work on the loop alone: no SDK, no export
        "live": (live, exporter),
        "hanging": (hanging, exporter),
    }
    seen: dict[str, list[Lag]] = defaultdict(list)
    for _ in range(scale.lag_rounds):  # alternated, so drift and neighbours hit all alike
        for name, (receiver, processors) in scenarios.items():
            export_to(receiver)
            seen[name].append(await lag_scenario(processors, scale.lag_seconds))
    export_to(None)

    stats = {}
    for name, lags in seen.items():
        samples = [sample for lag in lags for sample in lag.samples]
        stats[name] = (percentile(samples, 0.5), percentile(samples, 0.99), max(samples))
        full_gcs = [pause for lag in lags for pause in lag.full_gc_ms]
        NOTES.append(
            f"lag {name}: p50/p99/max {fmt(stats[name], 2)} ms over {len(samples)} samples, "
            f"loop busy {statistics.mean(lag.loop_cpu for lag in lags):.0%}; "
            + (
                f"{len(full_gcs)} full GCs ({fmt(full_gcs)} ms) held "
                f"{sum(len(lag.during_full_gc) for lag in lags)} samples apart, the worst "
                f"{max(x for lag in lags for x in lag.during_full_gc):.1f} ms"
                if full_gcs
                else "no full GC"
            )
        )
    NOTES.append(
        f"the hanging receiver left {hanging.command()['unanswered']} export requests unanswered"
    )
    rows = []
    for name in ("live", "hanging"):
        for i, (what, goal) in enumerate((("p50", None), ("p99", 1.0), ("max", 10.0))):
            added = stats[name][i] - stats["none"][i]
            rows.append(
                Row(
                    f"event-loop lag {what}, {name} receiver",
                    ms(stats[name][i]),
                    f"{ms(stats['none'][i])} no exporter",
                    f"{added:+.2f} ms",
                    f"added < {goal:g} ms" if goal else "—",
                    None if goal is None else added < goal,
                )
            )
    return rows


# ----------------------------------------------------------- 4. memory, bytes


async def bench_calls(scale: Scale, live: Receiver) -> list[Row]:
    """RSS over many calls, bytes per call, threads and requests with 1 and 100 calls."""
    rng = random.Random(3)
    call_frames = pushed([MetricsFrame(data=[d]) for _ in range(4) for _, d in turn_metrics(rng)])

    async def run_call() -> Call:
        call = Call()
        for data in call_frames:
            await call.observe(data)
        return call

    async def in_progress(count: int) -> tuple[int, float, int, float]:
        calls = [await run_call() for _ in range(count)]
        await asyncio.sleep(1.5)  # an export with all of them in it
        first, cpu = live.command(), export_threads_cpu()
        await asyncio.sleep(3.0)  # three more intervals
        last, cpu = live.command(), export_threads_cpu() - cpu
        threads = threading.active_count()
        await asyncio.gather(*(call.end() for call in calls))
        exports = last["accepted"] - first["accepted"]
        return threads, exports / 3.0, last["last_bytes"], cpu / max(exports, 1)

    export_to(live)
    threads_before = await settled_threads()
    one_threads, one_rate, one_bytes, one_cpu = await in_progress(1)
    many_threads, many_rate, many_bytes, many_cpu = await in_progress(100)
    NOTES.append(
        "threads with 100 calls: "
        + ", ".join(t.name for t in threading.enumerate())
        + "; the SDK waits the interval (1 s) after each export, so a long export spaces them"
    )
    export_to(live, compression="gzip")
    _, _, gzip_bytes, gzip_cpu = await in_progress(100)

    export_to(live)
    before = live.command()
    rss: dict[int, tuple[float, int]] = {}
    begin = time.perf_counter()
    for done in range(scale.calls_at_once, scale.calls + 1, scale.calls_at_once):
        calls = [await run_call() for _ in range(scale.calls_at_once)]
        await asyncio.gather(*(call.end() for call in calls))
        del calls
        if done in (scale.calls_checkpoint, scale.calls):
            await asyncio.sleep(0.2)  # the export thread lets go of the ended calls
            gc.collect()
            rss[done] = rss_mb(), len(gc.get_objects())
    elapsed = time.perf_counter() - begin
    await asyncio.sleep(1.5)  # the export after the last call
    after = live.command()
    per_call = (after["bytes"] - before["bytes"]) / scale.calls
    records = after["log_records"] - before["log_records"]
    log_per_call = (after["log_bytes"] - before["log_bytes"]) / max(records, 1)
    first, last = scale.calls_checkpoint, scale.calls
    return [
        Row(
            f"RSS after {last:,} calls ({scale.calls_at_once} at a time)",
            f"{rss[last][0]:.1f} MB",
            f"{rss[first][0]:.1f} MB after {first:,}",
            f"{rss[last][0] - rss[first][0]:+.1f} MB",
        ),
        Row(
            f"  Python objects after {last:,} calls",
            f"{rss[last][1]:,}",
            f"{rss[first][1]:,} after {first:,}",
            f"{(rss[last][1] - rss[first][1]) / (last - first):+.1f}/call",
        ),
        Row(f"bytes exported per call ({len(call_frames)} metrics)", f"{per_call:,.0f} B"),
        Row(
            "  call summary log record per call (Loki)",
            f"{log_per_call:,.0f} B",
            f"{records:,} records for {scale.calls:,} calls",
        ),
        Row(
            "  wall time per call, no pipeline",
            f"{elapsed / scale.calls * 1e3:.2f} ms",
            "final export awaited",
        ),
        Row(
            "threads, 100 calls in progress",
            str(many_threads),
            f"{one_threads} with 1 call ({threads_before} before)",
            f"{many_threads - one_threads:+d}",
        ),
        Row(
            "export requests per second, 100 calls",
            f"{many_rate:.2f}",
            f"{one_rate:.2f} with 1 call",
        ),
        Row(
            "bytes per export request, 100 calls",
            f"{many_bytes:,} B",
            f"{one_bytes:,} B with 1 call",
            f"+{(many_bytes - one_bytes) / 99:,.0f} B/call",
        ),
        Row(
            "  the same with gzip",
            f"{gzip_bytes:,} B",
            f"{many_bytes:,} B uncompressed",
            f"{gzip_bytes / many_bytes:.2f}x",
        ),
        Row(
            "export thread CPU per export, 100 calls",
            ms(many_cpu * 1000),
            f"{ms(one_cpu * 1000)} with 1 call",
            f"+{(many_cpu - one_cpu) / 99 * 1e6:,.0f} µs/call",
        ),
        Row(
            "  the same with gzip",
            ms(gzip_cpu * 1000),
            f"{ms(many_cpu * 1000)} uncompressed",
            f"{gzip_cpu / many_cpu:.2f}x",
        ),
    ]


# ----------------------------------------------------------------- 6. the bill

# The offline call the cost is measured on (pipecat-grafana demo --turns 8 --speed 4
# --no-incidents), played ten times faster with a ten times shorter export interval:
# the same exports per call as at the default 10 s, in a tenth of the time.
BILL_TIME_SCALE = 10
BILL_SPEED = 4 / BILL_TIME_SCALE
BILL_INTERVAL_MS = 10_000 // BILL_TIME_SCALE
# Latency histograms had 14 bounds before the voice-tuned ones: a point of theirs was
# 14 + 1 bucket series, a _sum and a _count in a Prometheus-style backend.
TODAYS_LATENCY_BOUNDS = 14
TODAYS_WAY = {
    "PIPECAT_GRAFANA_CALL_HISTOGRAMS": "true",  # every call its own latency histograms
    "PIPECAT_GRAFANA_HEARTBEAT": "0.1",  # every series in every export
    "PIPECAT_GRAFANA_HISTOGRAM_INTERVAL": "0.1",
}


@dataclass
class Bill:
    """What one workload made a Prometheus-style backend store."""

    calls: int
    series: int
    samples: int
    minutes: float  # how long the workload ran, at the default interval's pace

    @property
    def dpm(self) -> float:
        """Data points per minute while the calls were in progress."""
        return self.samples / self.minutes

    def per_call(self) -> tuple[float, float, float]:
        """Series, DPM and billable series-equivalents (the higher of the two), per call."""
        series, dpm = self.series / self.calls, self.dpm / self.calls
        return series, dpm, max(series, dpm)


async def bill_of(calls: int, *, todays_way: bool) -> Bill:
    """Run ``calls`` offline calls at once in a fresh pipeline and count what arrived."""
    saved = {name: os.environ.get(name) for name in (*TODAYS_WAY, "OTEL_METRIC_EXPORT_INTERVAL")}
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = str(BILL_INTERVAL_MS)
    if todays_way:
        os.environ.update(TODAYS_WAY)
    latency = {spec.name for spec in m.ALL if spec.buckets == m.LATENCY_BUCKETS_MS}
    try:
        with OtlpReceiver() as receiver:
            export_to(receiver)
            demo = OfflineDemo(turns=8, calls=calls, speed=BILL_SPEED, seed=7, incidents=False)
            await demo.run()
            # The calls' own length, not the set-up around them: DPM while in progress.
            elapsed = max(summary.duration_seconds for summary in demo.summaries)
            pipecat_grafana.shutdown(timeout_s=2)
            series, samples = set(), 0
            for point in receiver.points():
                if point.kind == "histogram":
                    bounds = len(point.explicit_bounds)
                    if todays_way and point.name in latency:
                        bounds = TODAYS_LATENCY_BOUNDS
                    names = [f"{point.name}_bucket{i}" for i in range(bounds + 1)]
                    names += [f"{point.name}_sum", f"{point.name}_count"]
                else:
                    names = [point.name]
                key = frozenset(point.attributes.items())
                series.update((name, key) for name in names)
                samples += len(names)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        export_to(None)
    return Bill(calls, len(series), samples, elapsed * BILL_TIME_SCALE / 60)


async def bench_bill() -> list[Row]:
    """Series, data points per minute and billable series-equivalents per call, both ways."""
    await bill_of(1, todays_way=False)  # warm-up: the first call imports and loads models
    bills = {
        (calls, today): await bill_of(calls, todays_way=today)
        for calls in (1, 3)
        for today in (True, False)
    }
    rows = []
    for calls in (1, 3):
        today, now = bills[(calls, True)].per_call(), bills[(calls, False)].per_call()
        where = "1 call in a process" if calls == 1 else f"{calls} concurrent calls in a process"
        rows += [
            Row(f"series per call, {where}", f"{now[0]:,.0f}", f"{today[0]:,.0f} today's way"),
            Row(f"  DPM per call, {where}", f"{now[1]:,.0f}", f"{today[1]:,.0f} today's way"),
            Row(
                f"  billable series-equivalents per call, {where}",
                f"{now[2]:,.0f}",
                f"{today[2]:,.0f} today's way",
                f"{today[2] / now[2]:.1f}x lower",
                ">= 3x lower",
                today[2] / now[2] >= 3,
            ),
        ]
    # Fleet shapes, from the two workloads: what a process costs whatever its calls, and
    # what each call adds.
    for label, today in (("today's way", True), ("new way", False)):
        one, three = bills[(1, today)], bills[(3, today)]
        call_series, call_dpm = (three.series - one.series) / 2, (three.dpm - one.dpm) / 2
        base_series, base_dpm = one.series - call_series, one.dpm - call_dpm
        shapes = {
            "3 calls/process": (base_series + 3 * call_series, base_dpm + 3 * call_dpm, 3),
            "100 calls in 10 processes": (
                10 * (base_series + 10 * call_series),
                10 * (base_dpm + 10 * call_dpm),
                100,
            ),
            "1 process per call": (one.series, one.dpm, 1),
        }
        NOTES.append(
            f"fleet shapes, {label} (series and DPM while in progress; billable per call): "
            + "; ".join(
                f"{name}: {series:,.0f} series, {dpm:,.0f} DPM, "
                f"{max(series, dpm) / calls:,.0f}/call"
                for name, (series, dpm, calls) in shapes.items()
            )
        )
    return rows


# ------------------------------------------------------- 6b. turn records in Loki

TURN_RECORD_TURNS = (2, 8)


async def logs_bytes_of_call(turns: int, *, transcripts: bool) -> tuple[int, int]:
    """Bytes on the wire (uncompressed) of one offline call's log records, and how many.

    The export interval is an hour, so that the call's summary and its turn records go in
    the one request its end sends: what a request carries once (resource, scope) is paid
    once, as in a busy process's batches.
    """
    interval = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL")
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000"
    try:
        with OtlpReceiver() as receiver:
            export_to(receiver)
            exporter = GrafanaMetricsExporter(transcripts=transcripts)
            await run_offline_call(
                turns=turns, processors=[exporter], speed=0.05, seed=7, incidents=False
            )
            pipecat_grafana.shutdown(timeout_s=2)
            return receiver.bytes_of("logs"), len(receiver.logs)
    finally:
        export_to(None)
        if interval is not None:
            os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = interval


async def bench_turn_records() -> list[Row]:
    """Bytes Loki ingests per turn record and per call, words off and on."""
    rows = []
    for transcripts in (False, True):
        (few, few_records), (many, many_records) = [
            await logs_bytes_of_call(turns, transcripts=transcripts) for turns in TURN_RECORD_TURNS
        ]
        per_turn = (many - few) / (many_records - few_records)
        words = "with transcripts" if transcripts else "words off (default)"
        rows += [
            Row(
                f"bytes per turn record, {words}",
                f"{per_turn:,.0f}",
                goal="< 1,024",
                passed=per_turn < 1024,
            ),
            Row(
                f"  log bytes per call of {TURN_RECORD_TURNS[1]} turns (summary + turns), {words}",
                f"{many:,.0f}",
            ),
        ]
    return rows


# ------------------------------------------------------- 7. one process per call

# Pipecat Cloud and per-room runners start a process per call, each with its own
# service.instance.id, and Grafana Cloud counts a series active for 20 minutes after its
# last point: a fleet starting S calls a minute of M minutes each keeps about
# S x (M + 20) processes' series active, and S x M processes sending points.
FLEET_STARTS_PER_MINUTE = 10
FLEET_CALL_MINUTES = 3
ACTIVE_MINUTES = 20
# Unverified (a third-party source, not Grafana's documentation): Grafana Cloud bills a
# native histogram at a quarter of its active buckets. Every native figure is also given
# at one series per native histogram.
BUCKET_SHARE = 0.25
# Before this work: commit e6ed20a (classic histograms only), measured alike with
# run_call_process("classic", seed=s, repo=<a git worktree of e6ed20a>) for seeds 7, 8
# and 9: 283 series each time (issue 18 counted 282: one series is missing in some runs,
# then and now), and 613 data points over calls of 43.6, 42.4 and 44.1 s: 843, 866 and
# 834 DPM.
BEFORE_SERIES = 283
BEFORE_DPM = 848


def fleet(series: float, dpm: float) -> tuple[float, float, float]:
    """The fleet's steady-state active series, DPM and billable series (the higher).

    The DPM is an upper bound: the offline call lasts under a minute, so its zero points
    and final export weigh more in its DPM than in a 3-minute call's.
    """
    active = FLEET_STARTS_PER_MINUTE * (FLEET_CALL_MINUTES + ACTIVE_MINUTES) * series
    points = FLEET_STARTS_PER_MINUTE * FLEET_CALL_MINUTES * dpm
    return active, points, max(active, points)


def times_lower(before: float, after: float) -> str:
    ratio = before / after
    return f"{ratio:.1f}x lower" if ratio >= 1.1 else f"{1 / ratio:.2f}x"


async def bench_processes(scale: Scale) -> list[Row]:
    """Fresh processes of one offline call each, classic and native side by side."""
    costs: dict[str, list[ProcessCost]] = {"classic": [], "native": []}
    for seed in range(process_cost.SEED, process_cost.SEED + scale.processes):
        both = await asyncio.gather(
            *(asyncio.to_thread(run_call_process, form, seed=seed) for form in costs)
        )
        for form, cost in zip(costs, both, strict=True):
            costs[form].append(cost)
    for form, runs in costs.items():
        NOTES.append(
            f"one process per call, {form}, seeds {process_cost.SEED}..: series "
            f"{fmt([c.series for c in runs], 0)}, native buckets "
            f"{fmt([c.native_buckets for c in runs], 0)}, DPM {fmt([c.dpm for c in runs], 0)} "
            f"over calls of {fmt([c.call_seconds for c in runs], 0)} s"
        )

    def mean(form: str, figure: Callable[[ProcessCost], float]) -> float:
        return statistics.fmean(figure(cost) for cost in costs[form])

    classic, native = mean("classic", lambda c: c.series), mean("native", lambda c: c.series)
    histograms = mean("native", lambda c: c.native_histograms)
    buckets = mean("native", lambda c: c.native_buckets)
    shared = mean("native", lambda c: c.billable_at(BUCKET_SHARE))
    dpm = {form: mean(form, lambda c: c.dpm) for form in costs}
    quarter = f"{BUCKET_SHARE:.0%} of native buckets (unverified)"
    ways = {
        "before, classic": (BEFORE_SERIES, BEFORE_DPM),
        "classic": (classic, dpm["classic"]),
        "native, 1 per histogram": (native, dpm["native"]),
        f"native, {quarter}": (shared, dpm["native"]),
    }
    fleets = {way: fleet(*figures) for way, figures in ways.items()}
    shape = f"fleet of {FLEET_STARTS_PER_MINUTE} calls/min of {FLEET_CALL_MINUTES} min"
    NOTES.append(
        f"{shape} (active series = starts/min x (call min + {ACTIVE_MINUTES}) x series per "
        f"process; DPM = starts/min x call min x DPM per process): "
        + "; ".join(
            f"{way}: {active:,.0f} active series, {points:,.0f} DPM"
            for way, (active, points, _) in fleets.items()
        )
    )
    before, now = fleets["before, classic"][2], fleets["classic"][2]
    return [
        Row(
            "one process per call: series, classic",
            f"{classic:.0f}",
            f"{BEFORE_SERIES} before",
            times_lower(BEFORE_SERIES, classic),
            "<= 200",
            classic <= 200,
        ),
        Row(
            "  series, native (a native histogram counts 1)",
            f"{native:.0f}",
            f"{classic:.0f} classic",
            times_lower(classic, native),
            "<= 60",
            native <= 60,
        ),
        Row(
            "  native histograms, their buckets (span rule)",
            f"{histograms:.0f}, {buckets:.0f} buckets",
        ),
        Row(
            f"  billable series, native at {quarter}",
            f"{shared:.0f}",
            f"{classic:.0f} classic",
            times_lower(classic, shared),
        ),
        Row(
            "  DPM over the call, classic",
            f"{dpm['classic']:.0f}",
            f"{BEFORE_DPM:.0f} before",
            times_lower(BEFORE_DPM, dpm["classic"]),
        ),
        Row(
            "  DPM over the call, native",
            f"{dpm['native']:.0f}",
            f"{dpm['classic']:.0f} classic",
            times_lower(dpm["classic"], dpm["native"]),
        ),
        Row(
            f"{shape}: billable series, classic",
            f"{now:,.0f}",
            f"{before:,.0f} before",
            times_lower(before, now),
        ),
        *(
            Row(
                f"  billable series, {way}",
                f"{fleets[way][2]:,.0f}",
                f"{now:,.0f} classic",
                times_lower(now, fleets[way][2]),
            )
            for way in list(ways)[2:]
        ),
    ]


# ------------------------------------------------------------ 5. lag sampler


async def bench_sampler(scale: Scale, live: Receiver) -> list[Row]:
    """The event-loop lag sampler's cost: loop CPU on and off, and the per-frame figure."""
    export_to(live)
    exporter = GrafanaMetricsExporter(**MODELS)
    fleet = exporter._pipeline.fleet  # what the exporter's calls sample into

    # 1. An idle loop, in alternated one-second windows: nothing else runs on it. A bare
    # timer at the same interval tells waking the loop up from the sampler's own work.
    loop = asyncio.get_running_loop()
    sampler = loop_lag.attach(fleet)
    sampler.detach(fleet)
    share: dict[str, list[float]] = defaultdict(list)  # CPU seconds per second
    for _ in range(scale.sampler_rounds):
        for state in ("on", "off", "timer"):
            handle: asyncio.TimerHandle | None = None

            def tick() -> None:
                nonlocal handle
                handle = loop.call_later(loop_lag.SAMPLE_INTERVAL_S, tick)

            if state == "on":
                sampler.attach(fleet)
            elif state == "timer":
                tick()
            elif sampler.running:
                raise RuntimeError("another call keeps the lag sampler on")
            cpu, wall = time.thread_time(), time.perf_counter()
            await asyncio.sleep(1.0)
            share[state].append((time.thread_time() - cpu) / (time.perf_counter() - wall))
            if state == "on":
                sampler.detach(fleet)
            elif handle is not None:
                handle.cancel()
    added = [on - off for on, off in zip(share["on"], share["off"], strict=True)]
    woken = [t - off for t, off in zip(share["timer"], share["off"], strict=True)]
    cpu_share = statistics.median(added)
    per_sample = cpu_share * loop_lag.SAMPLE_INTERVAL_S
    wake_up = statistics.median(woken) * loop_lag.SAMPLE_INTERVAL_S
    NOTES.append(
        f"lag sampler on an idle loop: CPU added per round {fmt([a * 100 for a in added], 3)} "
        f"%; {per_sample * 1e6:.0f} µs a sample, of which {wake_up * 1e6:.0f} µs is waking "
        "the idle loop (a bare timer at the same interval): on a loop busy with calls, when "
        "it runs, a sample costs the rest"
    )

    # 2. Per frame: the exporter's pipeline with the sampler on and off, in turn by segment.
    lanes = {
        "bare": Lane(PassThrough(), frame_mix(scale.frames, metrics=False, seed=5)),
        "exporter": Lane(exporter, frame_mix(scale.frames, metrics=False, seed=6)),
    }
    for lane in lanes.values():
        await lane.start()
    await asyncio.sleep(0.05)
    gc.collect()
    count = min(len(lane.frames) for lane in lanes.values())
    segments = 2 * scale.segments
    bounds = [round(count * i / segments) for i in range(segments + 1)]
    ratios: dict[str, list[float]] = defaultdict(list)
    order = list(lanes.values())
    for index, (first, last) in enumerate(pairwise(bounds)):
        state = "on" if index % 2 == 0 else "off"
        if state == "off":
            exporter._lag.detach(fleet)  # the exporter's call keeps it on otherwise
        before = {name: lane.cpu for name, lane in lanes.items()}
        for start in range(first, last, BATCH):
            for lane in order:
                await lane.feed(start, min(start + BATCH, last))
            order.reverse()
        cost = {name: lane.cpu - before[name] for name, lane in lanes.items()}
        ratios[state].append(cost["exporter"] / cost["bare"])
        if state == "off":
            exporter._lag.attach(fleet)
    for lane in lanes.values():
        await lane.stop()
    on, off = statistics.median(ratios["on"]), statistics.median(ratios["off"])
    NOTES.append(
        f"per frame with the lag sampler on/off, exporter to bare per segment: "
        f"on {fmt(ratios['on'], 2)}; off {fmt(ratios['off'], 2)}"
    )
    return [
        Row(
            "lag sampler: event-loop CPU added",
            f"{cpu_share * 100:.3f} % of a core",
            "sampler off, same loop",
            f"{per_sample * 1e6:.1f} µs per sample",
            "< 0.5 %",
            cpu_share < 0.005,
        ),
        Row(
            "  per frame, pipeline, sampler on",
            f"{on:.3f}x bare",
            f"{off:.3f}x bare with it off",
            f"{on / off:.3f}x",
            "unchanged (< 1.02x)",
            on / off < 1.02,
        ),
    ]


# ----------------------------------------------------------- 8. the fleet gateway
#
# One-call processes (pipecat-grafana demo --calls 1, classic histograms) into a fresh
# VictoriaMetrics, straight or through deploy/fleet/run-vmagent.sh (the Debian vmagent, the
# shipped aggregation with its intervals ten times shorter). Sizes not measured in this run
# are extrapolated from the largest one that was: linear without the gateway, flat with it.
# Skipped, with a note, when .tools/bin has no victoria-metrics or vmagent.


async def bench_fleet(scale: Scale) -> list[Row]:
    """Stored series and bytes per minute for 4, 40 and 400 processes, with and without."""
    import tempfile

    from tests.backends import find_tool
    from tests.fleet import measure_fleet

    if not (find_tool("victoria-metrics") and find_tool("vmagent")):
        NOTES.append("fleet gateway: skipped, no victoria-metrics or vmagent in .tools/bin")
        return []
    measured = {}
    for size in scale.fleet:
        for gateway in (False, True):
            with tempfile.TemporaryDirectory() as work:
                measured[(size, gateway)] = await asyncio.to_thread(
                    measure_fleet, size, gateway=gateway, work_dir=Path(work)
                )
    largest = max(scale.fleet)
    rows = []
    for size in FLEET_SIZES:
        cells = []
        for gateway in (False, True):
            found = measured.get((size, gateway))
            if found is not None:
                series, per_minute, how = found.series, found.bytes_per_minute, "measured"
            else:
                base = measured[(largest, gateway)]
                factor = 1 if gateway else size / largest
                series = base.series * factor
                per_minute = base.bytes_per_minute * factor
                how = f"extrapolated from {largest}"
            cells.append(f"{series:,.0f} series, {per_minute / 1000:,.1f} kB/min ({how})")
        rows.append(
            Row(f"{size} one-call processes: stored", cells[1], cells[0], goal="flat with gateway")
        )
    return rows


# -------------------------------------------------------------------- main


def quiet_logs() -> Counter:
    """Send every log line to a sink that drops it; count the exporter's and the SDK's warnings.

    Pipecat's own warnings are not counted: the scripted calls fail a TTS request
    with a 429 now and then, on purpose.
    """
    problems: Counter = Counter()
    ours = ("pipecat_grafana", "opentelemetry")
    logger.remove()
    logger.add(lambda message: None, level="DEBUG")
    logger.add(
        lambda message: problems.update([message.record["name"]]),
        level="WARNING",
        filter=lambda record: record["name"].startswith(ours),
    )

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith(ours):
                problems.update([record.name])

    logging.getLogger().addHandler(Count(level=logging.WARNING))
    return problems


async def run(scale: Scale) -> None:
    """Run every section and print the table."""
    problems = quiet_logs()
    configure_export()
    live, hanging = Receiver(), Receiver()
    hanging.command("hang")
    rows: list[Row] = []
    load, begin = os.getloadavg(), time.perf_counter()
    try:
        for title, bench in (
            ("per-frame cost", lambda: bench_frames(scale, live)),
            ("recording cost", lambda: bench_recording(scale, live)),
            ("event-loop lag", lambda: bench_lag(scale, live, hanging)),
            ("calls, memory and traffic", lambda: bench_calls(scale, live)),
            ("memory held per ended call", bench_held),
            ("scraped in a loop", bench_scrape),
            ("what a call costs on Grafana Cloud", bench_bill),
            ("turn records in Loki", bench_turn_records),
            ("event-loop lag sampler", lambda: bench_sampler(scale, live)),
            ("one process per call", lambda: bench_processes(scale)),
            ("the fleet gateway", lambda: bench_fleet(scale)),
        ):
            print(f"... {title}", file=sys.stderr, flush=True)
            before = Counter(problems)
            rows += await bench()
            if logged := problems - before:
                NOTES.append(f"{title}: warnings and errors logged: {dict(logged)}")
    finally:
        export_to(None)
        live.close()
        hanging.close()
    print()
    print_table(rows)
    print()
    for note in NOTES:
        print(f"- {note}")
    print(
        "- expected warnings: export off says so once; with the hanging receiver, exports fail "
        "and calls end without their final export"
    )
    print(
        f"- {'quick' if scale is QUICK else 'full'} run in {time.perf_counter() - begin:.0f} s "
        f"on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average before "
        f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f} (other processes skew the figures)"
    )


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, rounds and calls")
    asyncio.run(run(QUICK if parser.parse_args().quick else FULL))


if __name__ == "__main__":
    main()
