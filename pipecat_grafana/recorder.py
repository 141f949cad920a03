"""One call's measurements: every ``MetricsData`` becomes points and summary figures.

The recorder runs on the event loop for every metric a pipeline reports, so it
does no I/O and nothing that can block: it validates a value, updates in-memory
aggregations and the call's running totals. It owns the call's ``Conversation``
(turns, errors, tool calls) and counts the call in the fleet-wide call series.
What Pipecat reports is translated into the units of the contract
(``instruments.py``): seconds to milliseconds (turn metrics are already in ms), the initial zero TTFB/processing values skipped, the mirrored
``ttfb`` of TTFA/TTFAT not counted again, tokens normalised to gross input.
A value we cannot trust is dropped with one warning, never raised.
"""

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TextAggregationMetricsData,
    TTFAMetricsData,
    TTFATMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
    TurnMetricsData,
)
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.tts_service import TTSService

if TYPE_CHECKING:
    from pipecat.utils.tracing.tracing_context import TracingContext

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters, ExemplarContext
from pipecat_grafana.conversation import Conversation
from pipecat_grafana.labels import LabelBounds, ServiceTypes, label, processor_label
from pipecat_grafana.notices import warn_once
from pipecat_grafana.pricing import PriceTable, unpriced
from pipecat_grafana.stats import LatencySketch
from pipecat_grafana.summary import CallSummary, LatencyStats, ServiceCost
from pipecat_grafana.tokens import TokenCounts
from pipecat_grafana.turns import Redactor, TurnRecord

# A single report of more than this many tokens, characters or seconds is a
# broken measurement, not a long call.
MAX_USAGE = 100_000_000


@dataclass(frozen=True)
class _Latency:
    spec: m.InstrumentSpec
    name: str
    milliseconds: Callable[[Any], float]  # of the MetricsData type it is for
    skip_zero: bool = False  # the initial values Pipecat sends at start are zeros


_LATENCIES: dict[type, _Latency] = {
    TTFBMetricsData: _Latency(m.TTFB, "ttfb", lambda d: d.value * 1000, skip_zero=True),
    ProcessingMetricsData: _Latency(
        m.PROCESSING, "processing", lambda d: d.value * 1000, skip_zero=True
    ),
    TTFAMetricsData: _Latency(m.TTFA, "ttfa", lambda d: d.ttfa * 1000),
    TTFATMetricsData: _Latency(m.TTFAT, "ttfat", lambda d: d.ttfat * 1000),
    TextAggregationMetricsData: _Latency(
        m.TEXT_AGGREGATION, "text_aggregation", lambda d: d.value * 1000
    ),
    TurnMetricsData: _Latency(
        m.TURN_DETECTION, "turn_detection", lambda d: d.e2e_processing_time_ms
    ),
}


@functools.cache
def _latency_of(kind: type) -> _Latency | None:
    """The latency a ``MetricsData`` type reports, by its class or a base class."""
    return next((_LATENCIES[c] for c in kind.__mro__ if c in _LATENCIES), None)


class CallRecorder:
    """Records one call's metrics and conversation into its meters, and keeps its summary.

    Parameters:
        call_id: The call's ID.
        service_name: The service name the call is exported under.
        models: The configured model per service type (``llm``, ``stt``, ``tts``).
        meters: Where the call's points go.
        fleet: Where the process-wide call counters go.
        prices: The price table for cost estimates.
        declared: The call attributes the application may set, with allowed values.
        attributes: Call attributes set before the call opened.
        bounds: The bounds on the open-ended labels (function, model, processor).
        tracing: The worker's tracing context when the call is traced (Pipecat's
            ``TracingContext``): exemplars and the log record link to its spans.
        not_measured: What Pipecat does not report in this call because the worker's
            flag is off: ``latency`` (``enable_metrics``), ``usage`` (``enable_usage_metrics``).
        on_turn: Called with each turn's record and span when the turn ends (must only queue).
        transcripts: Put what was said in the turn records.
        redact: Applied to every text before it goes into a turn record.
        time_source: Clock in seconds (wall time).
    """

    def __init__(
        self,
        *,
        call_id: str,
        service_name: str,
        models: dict[str, str | None],
        meters: CallMeters,
        fleet: CallMeters,
        prices: PriceTable,
        declared: Mapping[str, tuple[str, ...]],
        attributes: Mapping[str, str],
        bounds: LabelBounds,
        tracing: "TracingContext | None" = None,
        not_measured: tuple[str, ...] = (),
        on_turn: Callable[[TurnRecord, ExemplarContext | None], None] | None = None,
        transcripts: bool = False,
        redact: Redactor | None = None,
        time_source: Callable[[], float] = time.time,
    ):
        self.call_id = call_id
        self.not_measured = not_measured
        self._tracing = tracing
        self._untraced = self._traced = ExemplarContext(call_id)
        self._conversation_span: trace.SpanContext | None = None
        self._service_types = ServiceTypes()
        self._conversation = Conversation(
            meters=meters,
            service_types=self._service_types,
            declared=declared,
            function_names=bounds.function,
            processor_names=bounds.processor,
            exemplar=self.exemplar,
            call_id=call_id,
            on_turn=on_turn,
            transcripts=transcripts,
            redact=redact,
            time_source=time_source,
        )
        self._conversation.set_attributes(**attributes)
        self._service_name = service_name
        self._models = models
        self._meters = meters
        self._fleet = fleet
        self._prices = prices
        self._bounds = bounds
        self._clock = time_source
        self._started: float | None = None
        self._ended: float | None = None
        self._finished = False
        self.end_reason: str | None = None
        self._label_sets: dict[tuple[object, ...], tuple[dict[str, str], str]] = {}
        self._tokens: dict[str, int] = {}
        self._usage: dict[m.InstrumentSpec, float] = {}
        self._latency: dict[tuple[str, str], LatencySketch] = {}
        self._costs: dict[tuple[str, str], float] = {}
        self._unpriced: set[str] = set()
        self._tts_audio_labels: dict[tuple[str, str | None], dict[str, str]] = {}

    @property
    def meters(self) -> CallMeters:
        """Where the call's points go."""
        return self._meters

    @property
    def started(self) -> bool:
        """Whether the call has started."""
        return self._started is not None

    def start(self) -> None:
        """Mark the call started (at ``StartFrame``) and count it in the fleet."""
        if self._started is None:
            self._started = self._clock()
            self._fleet.record(m.CALLS, 1, {})
            self._fleet.record(m.CALLS_ACTIVE, 1, {})

    def end(self, reason: str) -> float:
        """Mark the call ended and record its duration once.

        Returns:
            The call's duration in seconds.
        """
        if self._ended is None:
            self._ended = self._clock()
            self.end_reason = reason
            self._conversation.end()
            self._meters.record(m.SESSION_DURATION, self.duration, {m.END_REASON: reason})
        return self.duration

    def finish(self) -> CallSummary:
        """End the call (as cancelled, if nothing ended it), count it ended; the final summary.

        A call whose worker was cancelled before its ``StartFrame`` arrived never
        started: it ends as cancelled, and the fleet's call counters (calls started)
        leave it out.
        """
        if self._finished:
            return self.summary()
        self._finished = True
        if self._started is None:
            self.end_reason = "cancelled"
            return self.summary()
        self.end("cancelled")  # no EndFrame or CancelFrame reached us: the worker was cancelled
        self._fleet.record(m.CALLS_ACTIVE, -1, {})
        ended = self._conversation.ended_attributes(self.end_reason or "cancelled")
        if self.not_measured:
            # Only on such calls, so a fully measured fleet has no series more; their cost
            # series stays absent (unknown), never a zero.
            ended[m.NOT_MEASURED] = ",".join(self.not_measured)
        self._fleet.record(m.CALLS_ENDED, 1, ended)
        return self.summary()

    @property
    def finished(self) -> bool:
        """Whether the call is over (its summary final)."""
        return self._finished

    def set_attributes(self, **attributes: str) -> None:
        """Set declared call attributes (validated against the declared values)."""
        self._conversation.set_attributes(**attributes)

    def exemplar(self) -> ExemplarContext:
        """What a measurement made now links to: this call, and its turn's span if traced."""
        tracing = self._tracing
        if tracing is None:
            return self._untraced
        context = tracing.get_turn_context() or tracing.get_conversation_context()
        if context is None:
            return self._untraced
        span = trace.get_current_span(context).get_span_context()
        if span.span_id != self._traced.span_id:
            self._traced = ExemplarContext(self.call_id, span.trace_id, span.span_id)
            self.conversation_span()  # seen while the conversation is open
        return self._traced

    def conversation_span(self) -> trace.SpanContext | None:
        """The span of the call's conversation, once tracing has opened it."""
        if self._conversation_span is None and self._tracing is not None:
            context = self._tracing.get_conversation_context()
            if context is not None:
                span = trace.get_current_span(context).get_span_context()
                self._conversation_span = span if span.is_valid else None
        return self._conversation_span

    def observe(self, frame: Frame, source: FrameProcessor | None) -> None:
        """Follow one conversation frame (speaking, errors, tool calls), at its first push."""
        if isinstance(frame, TTSAudioRawFrame):
            # Only the service's own: the output transport pushes the audio on, re-chunked.
            if isinstance(source, TTSService):
                self._record_tts_audio(frame, source)
            return
        self._conversation.observe(frame, source)

    def greeting_measured(self, seconds: float) -> None:
        """Record the greeting's latency from ``UserBotLatencyObserver``."""
        self._conversation.greeting_measured(seconds)

    def latency_measured(self, seconds: float) -> None:
        """Record one user-to-bot latency from ``UserBotLatencyObserver``."""
        self._conversation.latency_measured(seconds)

    def latency_breakdown(self, breakdown: LatencyBreakdown) -> None:
        """Record where a turn's latency went."""
        self._conversation.latency_breakdown(breakdown)

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to now, for a call in progress)."""
        if self._started is None:
            return 0.0
        end = self._ended if self._ended is not None else self._clock()
        return max(end - self._started, 0.0)

    def record(self, data: MetricsData, source: FrameProcessor | None = None) -> None:
        """Record one metric; a value we cannot trust is dropped with one warning."""
        kind = type(data)
        latency = _latency_of(kind)
        if latency is not None:
            self._record_latency(data, latency, source)
        elif isinstance(data, LLMUsageMetricsData):
            self._record_tokens(data)
        elif isinstance(data, TTSUsageMetricsData):
            self._record_usage(data, data.value, "tts", m.TTS_CHARACTERS, self._prices.tts_cost)
        elif isinstance(data, STTUsageMetricsData):
            seconds = data.value.audio_seconds
            self._record_usage(data, seconds, "stt", m.STT_AUDIO, self._prices.stt_cost)
        # Other (future) MetricsData types carry nothing we know how to read.

    def summary(self) -> CallSummary:
        """The call's summary so far (final once the call has ended)."""
        talk = self._conversation
        latency = [_stats(metric, name, sketch) for (metric, name), sketch in self._latency.items()]
        latency += [_stats("function_call", f, s) for f, s in talk.function_latency.items()]
        costs = [
            ServiceCost(service_type=service_type, model=model, usd=usd)
            for (service_type, model), usd in self._costs.items()
        ]
        started = datetime.fromtimestamp(self._started, UTC) if self._started else None
        usage = "usage" not in self.not_measured
        turns_measured = talk.turns_measured
        not_measured = list(self.not_measured) + ([] if turns_measured else ["turns"])
        return CallSummary(
            call_id=self.call_id,
            service_name=self._service_name,
            llm_model=self._models.get("llm"),
            stt_model=self._models.get("stt"),
            tts_model=self._models.get("tts"),
            started_at=started,
            duration_seconds=self.duration,
            end_reason=self.end_reason or "in progress",
            tokens=dict(self._tokens) if usage else None,
            tts_characters=int(self._usage.get(m.TTS_CHARACTERS, 0)) if usage else None,
            stt_audio_seconds=self._usage.get(m.STT_AUDIO, 0.0) if usage else None,
            tts_audio_seconds=self._usage.get(m.TTS_AUDIO, 0.0),
            greeting_latency_ms=talk.greeting_latency_ms,
            latency=latency,
            costs=costs,
            total_cost_usd=sum(self._costs.values()) if usage else None,
            not_measured=not_measured,
            unpriced_models=sorted(self._unpriced),
            turns=talk.turns if turns_measured else None,
            interruptions=talk.interruptions,
            turn_latency=_stats("turn", "pipeline", talk.turn_latency)
            if talk.turn_latency.count
            else None,
            errors=dict(talk.errors),
            function_calls=dict(talk.function_calls),
            attributes=dict(talk.attributes),
        )

    def _record_latency(
        self, data: MetricsData, latency: _Latency, source: FrameProcessor | None
    ) -> None:
        try:
            value = float(latency.milliseconds(data))
        except (TypeError, ValueError):
            value = math.nan
        if value == 0 and latency.skip_zero:
            return
        if not 0 <= value <= m.MAX_LATENCY_MS:
            warn_once(
                f"latency:{latency.name}:{processor_label(data.processor)}",
                f"dropped a {latency.name} of {value!r} ms from {processor_label(data.processor)}: "
                f"latencies must be between 0 and {m.MAX_LATENCY_MS:g} ms (logged once)",
            )
            return
        attributes, _ = self._labels(data, None, source)
        if latency.spec.exemplars:
            self._meters.record(latency.spec, value, attributes, self.exemplar())
        else:
            self._meters.record(latency.spec, value, attributes)
        if latency.spec is m.TTFB:
            self._conversation.ttfb_measured(attributes[m.SERVICE_TYPE], value)
        key = (latency.name, processor_label(data.processor))
        sketch = self._latency.get(key)
        if sketch is None:
            sketch = self._latency[key] = LatencySketch()
        sketch.add(value)

    def _record_tokens(self, data: LLMUsageMetricsData) -> None:
        counts, problem = TokenCounts.from_usage(data.value)
        if problem:
            warn_once(
                f"tokens:{processor_label(data.processor)}",
                f"token usage from {processor_label(data.processor)}: {problem} (logged once)",
            )
        fields = counts.model_dump()
        if any(v is not None and v > MAX_USAGE for v in fields.values()):
            warn_once(
                "tokens:absurd",
                f"dropped a token report over {MAX_USAGE} tokens from "
                f"{processor_label(data.processor)} (logged once)",
            )
            return
        attributes, model = self._labels(data, "llm", None)
        for token_type in m.TOKEN_TYPES:
            count = fields.get(token_type)
            if count:
                self._tokens[token_type] = self._tokens.get(token_type, 0) + count
                self._meters.record(m.LLM_TOKENS, count, {**attributes, m.TOKEN_TYPE: token_type})
        self._add_cost(attributes, model, self._prices.llm_cost(model, counts))

    def _record_usage(
        self,
        data: MetricsData,
        value: Any,
        service_type: str,
        spec: m.InstrumentSpec,
        price: Callable[..., float | None],
    ) -> None:
        """Record TTS characters or STT seconds, and their cost."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not 0 <= number <= MAX_USAGE:
            warn_once(
                f"usage:{spec.name}",
                f"dropped {spec.name} of {value!r} from {processor_label(data.processor)}: "
                "usage must be a non-negative number (logged once)",
            )
            return
        self._usage[spec] = self._usage.get(spec, 0) + number
        attributes, model = self._labels(data, service_type, None)
        self._meters.record(spec, number, attributes)
        self._add_cost(attributes, model, price(model, number))

    def _record_tts_audio(self, frame: TTSAudioRawFrame, source: TTSService) -> None:
        """Count the seconds of audio a TTS service produced (16-bit PCM)."""
        bytes_per_second = frame.sample_rate * frame.num_channels * 2
        if not bytes_per_second > 0:
            return
        seconds = len(frame.audio) / bytes_per_second
        model = getattr(source.settings, "model", None)
        labels = self._tts_audio_labels.get((source.name, model))
        if labels is None:
            data = MetricsData(processor=source.name, model=model)
            labels, _ = self._labels(data, None, source)
            if len(self._tts_audio_labels) < 100:
                self._tts_audio_labels[(source.name, model)] = labels
        self._usage[m.TTS_AUDIO] = self._usage.get(m.TTS_AUDIO, 0.0) + seconds
        self._meters.record(m.TTS_AUDIO, seconds, labels)

    def _add_cost(self, attributes: dict[str, str], model: str, usd: float | None) -> None:
        """Add a cost to the summary (by the real model name) and to the series (by its label)."""
        service_type = attributes[m.SERVICE_TYPE]
        if usd is None:
            name = f"{service_type}:{model}"
            self._unpriced.add(name)
            unpriced.add(service_type, model)
            return
        if usd > 0:
            self._costs[(service_type, model)] = self._costs.get((service_type, model), 0.0) + usd
            cost_attributes = {m.SERVICE_TYPE: service_type, m.MODEL: attributes[m.MODEL]}
            self._meters.record(m.COST, usd, cost_attributes)

    def _labels(
        self, data: MetricsData, service_type: str | None, source: FrameProcessor | None
    ) -> tuple[dict[str, str], str]:
        """The series' attributes (bounded), and the real model name (for prices and summary)."""
        # The same few label sets recur all call long; build each once (callers copy).
        key = (data.processor, data.model, service_type)
        labels = self._label_sets.get(key)
        if labels is None:
            service_type = service_type or self._service_type(data, source)
            model = label(data.model or self._models.get(service_type))
            attributes = {
                m.PROCESSOR: self._bounds.processor(processor_label(data.processor)),
                m.MODEL: self._bounds.model(model),
                m.SERVICE_TYPE: service_type,
            }
            labels = (attributes, model)
            if len(self._label_sets) < 1000:  # a model name that changes every report
                self._label_sets[key] = labels
        return labels

    def _service_type(self, data: MetricsData, source: FrameProcessor | None) -> str:
        if source is not None and source.name != data.processor:
            source = None  # pushed on behalf of another processor
        return self._service_types.of(source, data.processor, data)


def _stats(metric: str, processor: str, sketch: LatencySketch) -> LatencyStats:
    return LatencyStats(
        metric=metric,
        processor=processor,
        count=sketch.count,
        avg_ms=sketch.average,
        min_ms=sketch.min,
        max_ms=sketch.max,
        p50_ms=sketch.quantile(0.5),
        p95_ms=sketch.quantile(0.95),
    )
