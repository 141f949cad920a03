"""``GrafanaMetricsExporter``: the one processor a bot adds to export its metrics.

Pipecat pushes ``MetricsFrame`` downstream only, so a processor sees the metrics
of the processors before it and none of those after it. The exporter therefore
counts metrics through an observer it adds to its worker in ``setup()``: an
observer created with ``observe_every_push=False`` sees each frame once, at its
first push, wherever the exporter stands. The call's start and end are the
worker's ``on_pipeline_started`` and ``on_pipeline_finished`` (the StartFrame and the
EndFrame or CancelFrame reaching the end of the pipeline), also wherever it stands. The
processor itself passes every frame on unchanged.

The call is finished in ``cleanup()``, after the worker has stopped its
observers, so that the usage a service reports while stopping is in the totals.

An exporter built before its process was forked (a pre-fork server building its
bot at import) holds its parent's export pipeline, which exports nothing in the
child; each call therefore takes the pipeline of the process it runs in when it
opens.
"""

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, MetricsFrame
from pipecat.metrics.metrics import MetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import BaseTaskManager

from pipecat_grafana import config as cfg
from pipecat_grafana import export, loop_lag
from pipecat_grafana.aggregation import ExemplarContext
from pipecat_grafana.conversation import checked_attributes
from pipecat_grafana.export import PendingCall
from pipecat_grafana.labels import call_id_value
from pipecat_grafana.notices import first, warn_once
from pipecat_grafana.pricing import Price
from pipecat_grafana.recorder import CallRecorder
from pipecat_grafana.resource import default_resource
from pipecat_grafana.settings import resolve as resolve_settings
from pipecat_grafana.signals import warn_if_sigterm_kills
from pipecat_grafana.startup import CONNECTION_FRAMES, StartupTimer
from pipecat_grafana.summary import NOT_MEASURED, CallSummary, not_measured_line
from pipecat_grafana.turns import TurnRecord

if TYPE_CHECKING:
    from pipecat.utils.tracing.tracing_context import TracingContext


def _contained(error: Exception, what: str) -> None:
    """Log a failure of ours once per kind, with its traceback; the call goes on."""
    key = f"contained:{what}:{type(error).__name__}"
    if first(key):
        # opt(exception=...) adds the traceback; never logged with loguru's diagnose
        # values for our frames, which could include configuration.
        logger.opt(exception=error).error(
            f"pipecat-grafana: could not record {what}; skipped (the call goes on; logged once)"
        )


class _PipelineObserver(BaseObserver):
    """Hands every frame of the pipeline to the exporter, once, at its first push."""

    def __init__(self, exporter: "GrafanaMetricsExporter"):
        super().__init__(observe_every_push=False)
        self._exporter = exporter

    async def on_push_frame(self, data: FramePushed) -> None:
        # Nothing may end this observer: an exception here would stop the worker's
        # observer task, and every later metric of the call would be lost.
        try:
            self._exporter._observe(data.frame, data.source)
            # Pipecat's latency observer rides on this one: every observer of a worker is
            # sent every frame at every processor it passes, so each one costs the pipeline.
            if (latency := self._exporter._latency_observer) is not None:
                await latency.on_push_frame(data)
            if isinstance(data.frame, CONNECTION_FRAMES) and self._exporter._startup is not None:
                await self._exporter._startup.on_push_frame(data)  # it left the worker by now
        except Exception as e:
            _contained(e, f"a {type(data.frame).__name__}")

    async def on_pipeline_started(self) -> None:
        try:
            if (latency := self._exporter._latency_observer) is not None:
                await latency.on_pipeline_started()
        except Exception as e:
            _contained(e, "the pipeline's start")

    async def setup(self, task_manager: BaseTaskManager) -> None:
        await super().setup(task_manager)
        if (latency := self._exporter._latency_observer) is not None:
            await latency.setup(task_manager)

    async def cleanup(self) -> None:
        if (latency := self._exporter._latency_observer) is not None:
            await latency.cleanup()
        await super().cleanup()


class GrafanaMetricsExporter(FrameProcessor):
    """Exports every metric of its pipeline to Grafana over OTLP, tagged per call.

    Add it once, anywhere in the pipeline (for example last, after the metrics
    logger); it counts the metrics of every processor exactly once, passes every
    frame on unchanged, and at the end of the call logs a summary and exports
    the call's final values. Configure where metrics go with the Grafana Cloud
    shortcut (``GRAFANA_CLOUD_OTLP_ENDPOINT``, ``GRAFANA_CLOUD_INSTANCE_ID``,
    ``GRAFANA_CLOUD_API_TOKEN``) or the standard ``OTEL_EXPORTER_OTLP_*``
    variables; with neither, export is off and the summary still works.

    Events:
        on_call_summary: Called with the ``CallSummary`` when the call has ended.

    Example::

        grafana = GrafanaMetricsExporter(
            llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia",
            service_name="voice-rag-bot",
        )
        pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                             transport.output(), assistant_agg, grafana])

        @grafana.event_handler("on_call_summary")
        async def on_call_summary(exporter, summary):
            await store(summary.model_dump())
    """

    def __init__(
        self,
        *,
        llm_model: str | None = None,
        stt_model: str | None = None,
        tts_model: str | None = None,
        service_name: str | None = None,
        call_id: str | None = None,
        call_id_label: bool | None = None,
        prices: Mapping[str, Price | Mapping[str, Any]] | None = None,
        export_interval_s: float | None = None,
        flush_timeout_s: float | None = None,
        service_version: str | None = None,
        environment: str | None = None,
        call_attributes: Mapping[str, Sequence[str]] | None = None,
        max_function_names: int = 50,
        max_label_values: int | None = None,
        logs: bool | None = None,
        traces: bool | None = None,
        histograms: str | None = None,
        prometheus_port: int | None = None,
        prometheus_addr: str | None = None,
        meter_provider: MeterProvider | None = None,
        transcripts: bool | None = None,
        redact: Callable[[str], str] | None = None,
        time_source: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        """Create the exporter.

        Args:
            llm_model: The LLM model, used when a metric does not name its model.
            stt_model: The STT model, likewise.
            tts_model: The TTS model, likewise.
            service_name: ``service.name`` of the exported series (default
                ``OTEL_SERVICE_NAME``, else ``voice-rag-bot``).
            call_id: The call's ID (default: the worker's ``conversation_id``, else a UUID4).
            call_id_label: Tag per-call series with ``call_id`` (default
                ``PIPECAT_GRAFANA_CALL_ID_LABEL``, else on).
            prices: Price overrides per model, on top of the default table and
                ``PIPECAT_GRAFANA_PRICES_FILE``.
            export_interval_s: Seconds between exports (default
                ``OTEL_METRIC_EXPORT_INTERVAL``, else 10).
            flush_timeout_s: Longest wait for the final export when a call ends
                (default ``PIPECAT_GRAFANA_FLUSH_TIMEOUT``, else 5).
            service_version: ``service.version`` of the exported series.
            environment: ``deployment.environment.name`` of the exported series.
            call_attributes: Call attributes the application may set with
                ``set_call_attributes``, each with its allowed values, for example
                ``{"outcome": ["resolved", "escalated", "abandoned"]}``; they label
                ``voice.calls.ended.total``.
            max_function_names: Distinct tool names the ``function`` label takes in
                this process; later ones are exported as ``other`` (the summary keeps
                every name).
            max_label_values: Distinct values the ``model`` and ``processor`` labels
                each take in this process (default ``PIPECAT_GRAFANA_MAX_LABEL_VALUES``,
                else 100); later ones are exported as ``other``.
            logs: Send each call's summary as an OTLP log record to ``<endpoint>/v1/logs``
                (default ``PIPECAT_GRAFANA_LOGS``, else on when export is on).
            traces: Send Pipecat's spans to ``<endpoint>/v1/traces`` (default
                ``PIPECAT_GRAFANA_TRACES``, else off); the worker must run with
                ``enable_tracing=True``. Installs the global tracer provider unless the
                application installed one.
            histograms: ``"native"`` pushes latency histograms as OTLP exponential
                histograms, which Grafana Cloud keeps as native histograms (one series
                each instead of one per bucket); ``"classic"`` as explicit buckets (default
                ``PIPECAT_GRAFANA_HISTOGRAMS``, else native for Grafana Cloud, classic
                elsewhere). The Prometheus endpoint always serves the classic form.
            prometheus_port: Serve ``/metrics`` for Prometheus on this port, one endpoint
                per process (default ``PIPECAT_GRAFANA_PROMETHEUS_PORT``, else none), from
                the same aggregates the OTLP export reads; with or without an OTLP endpoint.
            prometheus_addr: The address it listens on (default
                ``PIPECAT_GRAFANA_PROMETHEUS_ADDR``, else ``127.0.0.1``).
            meter_provider: Record into the application's provider instead of
                exporting; the application then owns export and series lifetime.
            transcripts: Put what the caller said (``user_text``) and what the bot spoke
                (``bot_text``) into each turn's log record (default
                ``PIPECAT_GRAFANA_TRANSCRIPTS``, else off: no word of the conversation
                leaves the process).
            redact: Applied to every text before it leaves the process, for example to
                mask card numbers; one that raises drops the text (said once).
            time_source: Wall clock in seconds (tests pass a controlled one).
            **kwargs: Passed on to ``FrameProcessor``.

        Raises:
            ValueError: An argument is malformed, or a label bound differs from the
                one of an exporter already sending to the same endpoint (a bad
                environment variable is logged and turns export off instead).
        """
        if redact is not None and not callable(redact):
            raise ValueError(f"redact must be a function of a str to a str, got {redact!r}")
        super().__init__(**kwargs)
        settings = resolve_settings(
            call_id_label=call_id_label,
            export_interval_s=export_interval_s,
            flush_timeout_s=flush_timeout_s,
            logs=logs,
            traces=traces,
            histograms=histograms,
            prices=prices,
            call_attributes=call_attributes,
            max_function_names=max_function_names,
            max_label_values=max_label_values,
            prometheus_port=prometheus_port,
            prometheus_addr=prometheus_addr,
            meter_provider=meter_provider,
            transcripts=transcripts,
        )
        self._transcripts = settings.transcripts
        self._redact = redact
        self._config = settings.export
        self._scrape = settings.scrape
        self._declared = settings.declared
        self._prices = settings.prices
        self._models = {"llm": llm_model, "stt": stt_model, "tts": tts_model}
        self._call_id = call_id
        self._clock = time_source
        # Built again in a forked child, which needs a service.instance.id of its own.
        self._resource = functools.partial(
            default_resource, service_name, service_version=service_version, environment=environment
        )
        resource = self._resource()
        self._service_name = str(resource.attributes["service.name"])
        if meter_provider is not None:
            self._pipeline = export.provider_pipeline(meter_provider, self._config, resource)
            created = False
        else:
            self._pipeline, created = self._shared_pipeline(resource)
        self._flush_timeout_s = self._config.flush_timeout_s  # this exporter's, not the pipeline's
        self._bounds = self._pipeline.label_bounds(
            max_function_names=settings.max_function_names,
            max_label_values=settings.max_label_values,
        )
        # A misconfigured variable was just named as the reason export is off; saying
        # "no endpoint configured" too would contradict it.
        if created and not (
            self._config.enabled or self._pipeline.pulled or settings.misconfigured
        ):
            logger.warning(
                "pipecat-grafana: no OTLP endpoint configured, metrics export is off (call "
                "summaries still work). To export, set GRAFANA_CLOUD_OTLP_ENDPOINT, "
                "GRAFANA_CLOUD_INSTANCE_ID and GRAFANA_CLOUD_API_TOKEN, or "
                "OTEL_EXPORTER_OTLP_ENDPOINT; check with `pipecat-grafana check`."
            )
        self._recorder: CallRecorder | None = None
        self._pending: PendingCall | None = None
        self._observer = _PipelineObserver(self)
        # Pipecat's latency observer keeps one call's greeting and turn state: one a call.
        self._latency_observer: UserBotLatencyObserver | None = None
        self._startup: StartupTimer | None = None
        self._lag: loop_lag.LoopLagSampler | None = None
        self._pending_attributes: dict[str, str] = {}
        self._links: tuple[FrameProcessor | None, FrameProcessor | None] | None = None
        self._refused_setups = 0
        self._register_event_handler("on_call_summary")

    def _new_latency_observer(self) -> UserBotLatencyObserver:
        """Pipecat's latency observer for one call: it keeps the call's greeting and turn state."""
        observer = UserBotLatencyObserver(time_source=self._clock)
        observer.add_event_handler("on_latency_measured", self._on_latency)
        observer.add_event_handler("on_latency_breakdown", self._on_breakdown)
        observer.add_event_handler("on_first_bot_speech_latency", self._on_greeting)
        return observer

    def _shared_pipeline(self, resource: Resource) -> tuple[export.ExportPipeline, bool]:
        """The process's pipeline for this exporter, served by the Prometheus endpoint if asked."""
        config = self._config
        endpoint = None
        if self._scrape is not None:
            from pipecat_grafana import scrape  # prometheus_client, only when asked for

            endpoint = scrape.endpoint(self._scrape)
        config = dataclasses.replace(config, pull=endpoint is not None)
        pipeline, created = export.shared_pipeline(config, resource)
        if endpoint is not None:
            endpoint.add(pipeline)
        return pipeline, created

    @property
    def call_id(self) -> str | None:
        """The current call's ID, once the pipeline is set up."""
        return self._recorder.call_id if self._recorder else self._call_id

    @property
    def latency_observer(self) -> UserBotLatencyObserver | None:
        """Pipecat's latency observer of the call in progress, once the pipeline is set up.

        Turn latency, its breakdown and the greeting's come from it: add a handler to its
        events (``on_latency_measured``, ...) rather than a second observer to the worker,
        which would be sent every frame again.
        """
        return self._latency_observer

    @property
    def summary(self) -> CallSummary | None:
        """The summary of the call: final after it ended, running while in progress."""
        return self._recorder.summary() if self._recorder else None

    def set_call_attributes(self, **attributes: str) -> None:
        """Set call attributes declared in ``call_attributes``, before the call ends.

        Example::

            grafana.set_call_attributes(outcome="resolved", sentiment="positive")

        Raises:
            ValueError: An attribute was not declared, or its value is not allowed.
        """
        checked = checked_attributes(self._declared, attributes)
        recorder = self._recorder
        if recorder is None or recorder.finished:
            if recorder is not None:
                warn_once(
                    f"attributes-after-end:{id(self)}",
                    f"set_call_attributes({', '.join(f'{k}={v!r}' for k, v in checked.items())}) "
                    f"came after call {recorder.call_id} ended and is ignored: set call "
                    "attributes before the pipeline ends (for example before queueing the "
                    "EndFrame); they belong to one call. (logged once per exporter)",
                )
                return
            self._pending_attributes.update(checked)  # applied when the call opens
        else:
            recorder.set_attributes(**checked)

    def link(self, processor: FrameProcessor) -> None:
        """Link to the next processor; refused while this exporter serves a call in progress.

        ``Pipeline([...])`` links its processors: an exporter put into a second
        pipeline while its call is in progress would send that call's frames into
        the new pipeline. The links of the call in progress are kept.

        Raises:
            RuntimeError: This exporter's call is in progress.
        """
        if self._call_in_progress():
            if self._links is not None:  # the new pipeline set our _prev already
                self._prev, self._next = self._links
            raise self._in_use_error()
        super().link(processor)

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Open the call and start observing every metric of the worker's pipeline.

        Raises:
            RuntimeError: This exporter's call is in progress in another pipeline.
        """
        if self._call_in_progress():
            self._refused_setups += 1  # that pipeline's cleanup() must not end our call
            raise self._in_use_error()
        await super().setup(setup)
        self._links = (self._prev, self._next)
        flags = (("latency", setup.enable_metrics), ("usage", setup.enable_usage_metrics))
        not_measured = tuple(part for part, on in flags if not on)
        self._open_call(setup.pipeline_worker, setup.tracing_context, not_measured)

    def _call_in_progress(self) -> bool:
        return self._recorder is not None and not self._recorder.finished

    def _in_use_error(self) -> RuntimeError:
        return RuntimeError(
            f"this GrafanaMetricsExporter is already serving call {self.call_id}, "
            "which is in progress: one exporter belongs to one pipeline. Create a new "
            "GrafanaMetricsExporter(...) for each call, where the call's pipeline is built "
            "(a new exporter is cheap: every exporter in a process shares one export thread)."
        )

    def _open_call(
        self,
        worker: PipelineWorker,
        tracing: "TracingContext | None" = None,
        not_measured: tuple[str, ...] = (),
    ) -> None:
        # Pipecat keeps the worker's conversation_id private; it is the call's ID when set.
        given = self._call_id or getattr(worker, "_conversation_id", None) or str(uuid.uuid4())
        call_id = call_id_value(str(given))
        if call_id != given:
            warn_once(
                "call_id-changed:" + call_id,
                f"call ID {call_id!r} is how this call's series, summary and records carry "
                "the ID given, which was longer than 128 characters or held what cannot be "
                "encoded as UTF-8 (a lone surrogate, a control character); what was cut or "
                "replaced is kept apart by the hash suffix (logged once per ID)",
            )
        self._join_trace(worker, call_id)
        if self._pipeline.inherited:
            # Built before a fork: this process exports with its own pipeline and resource.
            self._pipeline, _ = self._shared_pipeline(self._resource())
            self._bounds = self._pipeline.label_bounds(
                max_function_names=self._bounds.function.limit,
                max_label_values=self._bounds.model.limit,
            )
        meters, self._pending = self._pipeline.open_call(call_id)
        self._recorder = CallRecorder(
            call_id=call_id,
            service_name=self._service_name,
            models=self._models,
            meters=meters,
            fleet=self._pipeline.fleet,
            prices=self._prices,
            declared=self._declared,
            attributes=self._pending_attributes,
            bounds=self._bounds,
            tracing=tracing,
            not_measured=not_measured,
            on_turn=self._turn_ended,
            transcripts=self._transcripts,
            redact=self._redact,
            time_source=self._clock,
        )
        self._pending_attributes = {}  # they belonged to this call
        # A reused exporter: the last call's greeting and turn state stay with that call.
        self._latency_observer = self._new_latency_observer()
        # The call runs from the StartFrame reaching the end of the pipeline to the EndFrame
        # or CancelFrame reaching it, wherever the exporter stands: a frame queued behind
        # the call's last words passes the first processor long before the last one is done.
        worker.add_event_handler("on_pipeline_started", self._on_pipeline_started)
        worker.add_event_handler("on_pipeline_finished", self._on_pipeline_finished)
        worker.add_observer(self._observer)
        # Health: processors' start-up (observed until the pipeline has started), loop lag.
        fleet = self._pipeline.fleet
        self._startup = StartupTimer(fleet=fleet, processors=self._bounds.processor, worker=worker)
        worker.add_observer(self._startup)
        self._lag = loop_lag.attach(fleet)

    def _turn_ended(self, record: TurnRecord, span: ExemplarContext | None) -> None:
        """Queue a turn's record for Loki (no I/O: it goes with the next send)."""
        context = None
        if span is not None and span.trace_id:
            context = SpanContext(span.trace_id, span.span_id, is_remote=False)
        self._pipeline.emit_turn(record, context)

    def _join_trace(self, worker: PipelineWorker, call_id: str) -> None:
        """Make the trace's ``conversation.id`` the call's ID, or say how to trace."""
        observer = getattr(worker, "turn_trace_observer", None)
        if observer is None:
            if self._pipeline.traced:
                warn_once(
                    "tracing-off",
                    "traces are on (PIPECAT_GRAFANA_TRACES) but the worker does not trace: "
                    "create it with PipelineWorker(..., enable_tracing=True) (logged once)",
                )
            return
        # Pipecat's trace observer invents a conversation ID at the StartFrame unless
        # the worker was given one; give it the call's, so metrics, log record and trace
        # carry one ID. Pipecat keeps it private, as it does the worker's.
        if getattr(observer, "_conversation_id", None) is None:
            observer._conversation_id = call_id

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on unchanged (the observer and the worker's events do the rest)."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def _on_pipeline_started(self, worker: PipelineWorker, frame: Frame) -> None:
        self._start_call()

    async def _on_pipeline_finished(self, worker: PipelineWorker, frame: Frame) -> None:
        # A StopFrame keeps the processors for another pipeline: the call ends with them.
        if isinstance(frame, EndFrame):
            self._end_call("ended")
        elif isinstance(frame, CancelFrame):
            self._end_call("cancelled")

    async def cleanup(self) -> None:
        """Finish the call: summary, event, and final export (bounded, off the event loop)."""
        if self._refused_setups:
            # Pipecat cleans up a processor whose setup() failed: that was a pipeline
            # this exporter refused, not the one whose call is in progress.
            self._refused_setups -= 1
            return
        try:
            await self._finish_call()
        finally:
            await super().cleanup()

    def _observe(self, frame: Frame, source: FrameProcessor | None) -> None:
        recorder = self._recorder
        if recorder is None or recorder.finished:
            return
        if not isinstance(frame, MetricsFrame):
            self._safely(recorder.observe, frame, source)
            return
        data = frame.data
        if not isinstance(data, list | tuple):
            data = [data]  # a MetricsFrame(data=None), or a single MetricsData
        for item in data:
            if isinstance(item, MetricsData):
                self._safely(recorder.record, item, source)
            else:
                warn_once(
                    f"malformed-metrics:{type(item).__name__}",
                    f"skipped a MetricsFrame item that is not MetricsData ({type(item).__name__}"
                    f", from {getattr(source, 'name', source)}): MetricsFrame.data must be a "
                    "list of MetricsData (logged once per type)",
                )

    async def _on_latency(self, observer: UserBotLatencyObserver, seconds: float) -> None:
        if self._recorder is not None and self._call_in_progress():
            self._safely(self._recorder.latency_measured, seconds)

    async def _on_breakdown(
        self, observer: UserBotLatencyObserver, breakdown: LatencyBreakdown
    ) -> None:
        if self._recorder is not None and self._call_in_progress():
            self._safely(self._recorder.latency_breakdown, breakdown)

    async def _on_greeting(self, observer: UserBotLatencyObserver, seconds: float) -> None:
        if self._recorder is not None and self._call_in_progress():
            self._safely(self._recorder.greeting_measured, seconds)

    @staticmethod
    def _safely(record: Callable[..., object], what: object, *args: object) -> None:
        try:
            record(what, *args)
        except Exception as e:  # a bug of ours must never reach the pipeline
            _contained(e, type(what).__name__)

    def _start_call(self) -> None:
        if self._recorder is None or self._recorder.started:
            return
        self._recorder.start()
        config = self._pipeline.config
        not_measured = self._recorder.not_measured
        logger.info(
            "\n".join(
                [
                    "=" * 80,
                    "Grafana Metrics Exporter - call started",
                    f"Call ID:  {self._recorder.call_id}",
                    f"LLM:      {self._models['llm'] or '-'}",
                    f"STT:      {self._models['stt'] or '-'}",
                    f"TTS:      {self._models['tts'] or '-'}",
                    f"Service:  {self._service_name}",
                    f"Metrics:  {config.destination(self._scrape.url if config.pull and self._scrape else None)}",
                    f"call_id label: {'on' if config.call_id_label else 'off'}, "
                    f"export every {config.export_interval_s:g}s",
                    *([f"Histograms: {self._histogram_form()}"] if config.enabled else []),
                    *(
                        ["Transcripts: on (user_text, bot_text in turn records)"]
                        if self._transcripts and self._pipeline.logs is not None
                        else []
                    ),
                    *(
                        [
                            "Not measured: "
                            + ", ".join(f"{p} ({NOT_MEASURED[p][0]} off)" for p in not_measured)
                        ]
                        if not_measured
                        else []
                    ),
                    "=" * 80,
                ]
            )
        )
        warn_if_sigterm_kills()
        if not_measured:
            warn_once(
                f"not-measured:{not_measured}",
                f"{not_measured_line(not_measured)} (logged once).",
            )

    def _histogram_form(self) -> str:
        """The form histograms are pushed in now, and why."""
        config = self._pipeline.config
        if config.histograms == cfg.NATIVE and not self._pipeline.form.native:
            return "classic (the endpoint refused native histograms)"
        return f"{config.histograms} ({config.histograms_reason})"

    def _end_call(self, reason: str) -> None:
        if self._recorder is not None and self._recorder.started:
            self._recorder.end(reason)

    async def _finish_call(self) -> None:
        recorder = self._recorder
        if recorder is None or recorder.finished:
            return
        summary = recorder.finish()
        if self._lag is not None:
            self._lag.detach(self._pipeline.fleet)
            self._lag = None
        self._startup = None  # it holds the worker
        sent = self._pipeline.close_call(self._pending, summary, recorder.conversation_span())
        logger.info("\n" + summary.format())
        await self._call_event_handler("on_call_summary", summary)
        timeout = self._flush_timeout_s
        waiting = [asyncio.wrap_future(future) for future in sent]
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        what = ["final metrics", "summary log record"]
        late = [name for name, future in zip(what, waiting, strict=False) if future in pending]
        self._pipeline.waits_timed_out(metrics=what[0] in late, logs=what[1] in late)
        if late:
            logger.warning(
                f"pipecat-grafana: the {' and '.join(late)} of call {recorder.call_id} were not "
                f"exported within {timeout:g}s; the exporter keeps trying in the background"
            )
