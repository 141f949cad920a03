"""Building blocks for tests: real processors that report metrics, and a pipeline runner.

``Reporter`` is a real ``FrameProcessor`` that reports metrics through Pipecat's
own ``MetricsFrame`` when a trigger frame reaches it, so tests can put reporters
before and after the exporter and control exactly what was reported.
"""

import asyncio
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from pipecat.frames.frames import EndFrame, Frame, MetricsFrame, TextFrame
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
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner


def metric(kind: type[MetricsData], **overrides) -> MetricsData:
    """A metric of ``kind`` with plausible defaults, any field overridden."""
    defaults = {
        TTFBMetricsData: {"value": 0.25},
        ProcessingMetricsData: {"value": 0.5},
        TTFAMetricsData: {"ttfa": 0.3, "ttfb": 0.25, "leading_silence": 0.05},
        TTFATMetricsData: {"ttfat": 0.4, "ttfb": 0.25, "thinking_time": 0.15},
        TextAggregationMetricsData: {"value": 0.12},
        TurnMetricsData: {"is_complete": True, "probability": 0.9, "e2e_processing_time_ms": 180.0},
        LLMUsageMetricsData: {
            "value": LLMTokenUsage(prompt_tokens=100, completion_tokens=20, total_tokens=120)
        },
        TTSUsageMetricsData: {"value": 42},
        STTUsageMetricsData: {"value": STTUsage(audio_seconds=3.5)},
    }[kind]
    fields = {"processor": "SomeService#3", **defaults, **overrides}
    return kind(**fields)


class FakeClock:
    """A ``time_source`` that stands still until a test moves ``now``."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Trigger(TextFrame):
    """Tells reporters to report their next batch of metrics."""


class Reporter(FrameProcessor):
    """Reports one batch of metrics per ``Trigger`` frame, and passes everything on."""

    def __init__(self, batches: Sequence[Sequence[MetricsData]], **kwargs):
        super().__init__(**kwargs)
        self._batches = list(batches)
        self.reported: list[MetricsData] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, Trigger) and self._batches:
            batch = self._batches.pop(0)
            self.reported.extend(batch)
            await self.push_frame(MetricsFrame(data=list(batch)))


async def run_pipeline(
    processors: Sequence[FrameProcessor],
    frames: Sequence[Frame] = (),
    *,
    end: Frame | None = None,
    cancel: bool = False,
    conversation_id: str | None = None,
) -> PipelineWorker:
    """Run ``processors`` in a real worker, queue ``frames``, then end (or cancel) the call."""
    worker = PipelineWorker(
        Pipeline(list(processors)),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        conversation_id=conversation_id,
        cancel_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def drive():
        await asyncio.wait_for(started.wait(), timeout=5)
        await worker.queue_frames(list(frames))
        if cancel:
            await asyncio.sleep(0.05)
            await worker.cancel()
        else:
            await worker.queue_frame(end or EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=30)
    return worker


class MemoryMetrics:
    """A real SDK ``MeterProvider`` with an ``InMemoryMetricReader``, and ways to read it."""

    def __init__(self):
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self._points: list[tuple[str, str, object]] | None = None

    def points(self, name: str) -> list:
        """Every data point of ``name`` (raises if the metric was never recorded)."""
        data = self.reader.get_metrics_data()
        found = [
            (metric, point)
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]
        if not found:
            raise AssertionError(f"metric {name} was never recorded")
        return [point for _, point in found]

    def value(self, name: str, **attributes) -> float:
        """Sum of the values (histograms: counts) of the points matching ``attributes``."""
        total = 0.0
        matched = False
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                matched = True
                total += point.count if isinstance(point, HistogramDataPoint) else point.value
        if not matched:
            raise AssertionError(f"no point of {name} matches {attributes}")
        return total


class LiveCall:
    """A call in progress that a test drives step by step: report, wait, report, end.

    Example::

        async with LiveCall([reporter, exporter]) as call:
            await call.report()      # the reporter reports its next batch
            await call.end()
    """

    def __init__(self, processors: Sequence[FrameProcessor], *, conversation_id: str | None = None):
        self.worker = PipelineWorker(
            Pipeline(list(processors)),
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
            conversation_id=conversation_id,
            cancel_on_idle_timeout=False,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "LiveCall":
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker, frame):
            started.set()

        await self._runner.add_workers(self.worker)
        self._task = asyncio.create_task(self._runner.run())
        await asyncio.wait_for(started.wait(), timeout=5)
        return self

    async def __aexit__(self, *exc) -> None:
        if not self._task.done():
            await self.worker.cancel()
            await asyncio.wait_for(self._task, timeout=30)

    async def report(self) -> None:
        """Let every reporter report its next batch, and give the batch time to flow."""
        await self.worker.queue_frame(Trigger("report"))
        await asyncio.sleep(0.02)

    async def end(self, frame: Frame | None = None) -> None:
        """End the call (``EndFrame`` unless told otherwise) and wait until it is over."""
        await self.worker.queue_frame(frame or EndFrame())
        await asyncio.wait_for(self._task, timeout=30)
