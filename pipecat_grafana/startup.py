"""Start-up time: what each processor costs to get ready, and when the transport connected.

A caller hears nothing until the pipeline has started: every processor set up (a
WebSocket to the STT provider opened, a model loaded) and the ``StartFrame`` through
it. Pipecat's ``StartupTimingObserver`` measures it; this module sets the gauge
``voice.startup.slowest.milliseconds`` from what it reports, one series per phase:

- ``phase="processor"``: the slowest processor's ``setup()`` and ``start()`` together
  (``ProcessorStartupTiming.duration_secs``), named by the ``processor`` label;
- ``phase="bot_connected"`` / ``"client_connected"``: from the pipeline starting to
  set up to the bot joining the room (SFU transports) and to the first client
  connecting (``TransportTimingReport``), with the processor that pushed the frame
  (the transport's input).

A start-up is a property of the deployment (a provider's connect time, a model's load
time) that a team reads to learn which processor is slow to start, not a distribution
to take percentiles of: each call starts once. So the gauge is process-wide and holds
the latest start's slowest processor per phase, three series (a histogram by phase and
processor cost some eighty, in every process of a fleet that starts one per call). A
new slowest processor replaces the phase's series. The ``processor`` label takes the
pipeline's bound (``LabelBounds.processor``).

Timing the ``StartFrame`` through each processor needs every push of it, which an
observer wanting every push of every frame would pay for all call long. So the
observer is added to the worker when the call opens and leaves it once the pipeline
has started; the transport's connection, usually later, reaches it through the
exporter's own observer (first pushes only). It is added while processors are being
set up: a processor whose ``setup()`` had already returned (one with nothing to
connect) is reported with its ``start()`` alone.
"""

from pipecat.frames.frames import BotConnectedFrame, ClientConnectedFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.observers.startup_timing_observer import (
    StartupTimingObserver,
    StartupTimingReport,
    TransportTimingReport,
)

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters
from pipecat_grafana.labels import BoundedLabel, processor_label

CONNECTION_FRAMES = (BotConnectedFrame, ClientConnectedFrame)
"""The frames whose first push times the transport's connection."""


class StartupTimer(StartupTimingObserver):
    """Records Pipecat's start-up timing reports; leaves its worker once the pipeline started.

    Parameters:
        fleet: The process-wide meters the timings go to.
        processors: The bound on the ``processor`` label.
        worker: The ``PipelineWorker`` it observes (it removes itself from it).
    """

    def __init__(self, *, fleet: CallMeters, processors: BoundedLabel, worker, **kwargs):
        super().__init__(**kwargs)
        self._fleet = fleet
        self._processors = processors
        self._worker = worker
        self._transport: dict[type, str] = {}  # connection frame type -> who pushed it first
        self.add_event_handler("on_startup_timing_report", self._on_startup)
        self.add_event_handler("on_transport_timing_report", self._on_transport)

    async def on_push_frame(self, data: FramePushed):
        """Note who pushed the connection frames, then let Pipecat's observer time them."""
        if isinstance(data.frame, CONNECTION_FRAMES):
            self._transport.setdefault(type(data.frame), data.source.name)
        await super().on_push_frame(data)

    async def on_pipeline_started(self):
        """Report, then stop observing every push (the connection frames still arrive)."""
        try:
            await super().on_pipeline_started()
        finally:
            remove = getattr(self._worker, "remove_observer", None)
            if remove is not None:
                await remove(self)

    async def _on_startup(self, observer, report: StartupTimingReport) -> None:
        if report.processor_timings:
            slowest = max(report.processor_timings, key=lambda timing: timing.duration_secs)
            self._record("processor", slowest.processor_name, slowest.duration_secs)

    async def _on_transport(self, observer, report: TransportTimingReport) -> None:
        for phase, frame, secs in (
            ("bot_connected", BotConnectedFrame, report.bot_connected_secs),
            ("client_connected", ClientConnectedFrame, report.client_connected_secs),
        ):
            if secs is not None:
                self._record(phase, self._transport.get(frame, "unknown"), secs)

    def _record(self, phase: str, processor: str, secs: float) -> None:
        milliseconds = secs * 1000
        if 0 <= milliseconds <= m.MAX_LATENCY_MS:  # a clock that went wrong is not a start-up
            labels = {m.PHASE: phase, m.PROCESSOR: self._processors(processor_label(processor))}
            self._fleet.set(m.STARTUP, milliseconds, labels, per=m.PHASE)
