"""The metric contract: every instrument's name, unit, description and buckets, once.

Users write dashboards and alerts against these names, so they are a public API.
The dashboard, the alert rules, the docs' metric reference (``scripts/docs.py`` writes
it) and the tests all read them from here. ``prometheus_name`` gives the name Grafana
Cloud (Mimir), Prometheus and VictoriaMetrics store for each one.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from opentelemetry.metrics import Meter

METER_NAME = "pipecat_grafana"
"""The instrumentation scope of every instrument of the contract."""


class Kind(StrEnum):
    """How an instrument aggregates."""

    COUNTER = "counter"
    UP_DOWN_COUNTER = "up-down counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


# Explicit boundaries, voice-tuned: the percentiles a voice team acts on (a few hundred
# ms to a few seconds) fall between buckets rather than inside one. Every bucket is a
# billed series on every send, so there are no more than those decisions need: under
# 50 ms is simply fast, and over 5 s is a failure whatever its value (the +Inf bucket;
# the call's summary and its exemplars keep the exact figure).
LATENCY_BUCKETS_MS = (
    50.0,
    100.0,
    200.0,
    300.0,
    500.0,
    750.0,
    1000.0,
    1500.0,
    2000.0,
    3000.0,
    5000.0,
)
# A latency over an hour is a broken measurement, not a slow call: it is dropped,
# never recorded (and the summary's percentile sketch is sized by this bound).
MAX_LATENCY_MS = 3_600_000.0
# Calls last from half a minute to half an hour; one over 30 minutes is read as such (+Inf,
# and the summary's exact figure). Each bound is a billed series in every classic process.
SESSION_BUCKETS_S = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
# A healthy loop runs a timer within a millisecond or two; 50 ms is heard as a stutter (the
# alert's level), a second is a stall: no finer steps than those decisions need.
LAG_BUCKETS_MS = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 1000.0)


# Compared and hashed by identity: each is a constant of this module, and a spec is a
# dictionary key on every measurement (hashing eight fields each time would cost more).
@dataclass(frozen=True, eq=False)
class InstrumentSpec:
    """One instrument of the contract.

    Parameters:
        name: The OTLP name (dotted, lowercase).
        kind: Counter, up-down counter or histogram.
        unit: The UCUM unit; annotations in braces add nothing to the Prometheus name.
        description: What it measures, shown in Grafana's metric browser.
        per_call: Whether its points carry ``call_id`` (unless switched off).
        buckets: Explicit bucket boundaries for histograms.
        exemplars: Whether points carry exemplars linking a measurement to its call
            (and its trace, when traced).
        sparse: Whether a changed series waits for the histogram interval between two
            sends, as histograms do (a figure read over minutes, never alerted on).

    A gauge is observed when the reader collects it, by whoever owns its value.
    """

    name: str
    kind: Kind
    unit: str
    description: str
    per_call: bool = True
    buckets: tuple[float, ...] | None = None
    exemplars: bool = False
    sparse: bool = False

    @property
    def prometheus_name(self) -> str:
        """The base name a Prometheus-compatible backend stores (without histogram suffixes)."""
        return prometheus_name(self.name, self.unit, self.kind)


_UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "By": "bytes"}


def prometheus_name(name: str, unit: str, kind: Kind) -> str:
    """Translate an OTLP name as Mimir, Prometheus and VictoriaMetrics do.

    Dots become ``_``; the unit word is appended unless a token already equals
    it (units in braces add nothing); monotonic counters end in ``_total``.
    """
    tokens = [t for t in name.replace(".", "_").split("_") if t]
    unit_word = "" if unit.startswith("{") else _UNIT_WORDS.get(unit, unit)
    if kind is Kind.COUNTER and "total" in tokens:
        tokens.remove("total")
    if unit_word and unit_word not in tokens:
        tokens.append(unit_word)
    if kind is Kind.COUNTER:
        tokens.append("total")
    return "_".join(tokens)


TTFB = InstrumentSpec(
    "voice.ttfb.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "Time to first byte of a service's response (TTFBMetricsData).",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
PROCESSING = InstrumentSpec(
    "voice.processing.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "Processing time of a pipeline stage (ProcessingMetricsData).",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TTFA = InstrumentSpec(
    "voice.ttfa.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "TTS time to first audible audio: TTFB plus leading silence (TTFAMetricsData.ttfa).",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TTFAT = InstrumentSpec(
    "voice.ttfat.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "LLM time to first answer token: TTFB plus thinking time (TTFATMetricsData.ttfat).",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TEXT_AGGREGATION = InstrumentSpec(
    "voice.text_aggregation.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "Time from the first LLM token to the first complete sentence sent to TTS.",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TURN_DETECTION = InstrumentSpec(
    "voice.turn_detection.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "Turn detection time from the user's silence to the end-of-turn decision.",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
LLM_TOKENS = InstrumentSpec(
    "voice.llm.tokens.total",
    Kind.COUNTER,
    "{token}",
    "LLM tokens by token_type: prompt (gross input) and completion, with cache_read, "
    "cache_creation, input_audio (parts of prompt) and reasoning, output_audio "
    "(parts of completion).",
)
TTS_CHARACTERS = InstrumentSpec(
    "voice.tts.characters.total",
    Kind.COUNTER,
    "{character}",
    "Characters sent to text-to-speech.",
)
STT_AUDIO = InstrumentSpec(
    "voice.stt.audio.seconds",
    Kind.COUNTER,
    "s",
    "Seconds of audio sent to speech-to-text.",
)
COST = InstrumentSpec(
    "voice.cost.usd",
    Kind.COUNTER,
    "{USD}",
    "Estimated cost in US dollars from the dated price table, by service_type and model.",
)
SESSION_DURATION = InstrumentSpec(
    "voice.session.duration.seconds",
    Kind.HISTOGRAM,
    "s",
    "Call length, recorded once when the call ends, by end_reason.",
    buckets=SESSION_BUCKETS_S,
)
CALLS = InstrumentSpec(
    "voice.calls.total",
    Kind.COUNTER,
    "{call}",
    "Calls started.",
    per_call=False,
)
CALLS_ACTIVE = InstrumentSpec(
    "voice.calls.active",
    Kind.UP_DOWN_COUNTER,
    "{call}",
    "Calls in progress.",
    per_call=False,
)

TURN_LATENCY = InstrumentSpec(
    "voice.turn.latency.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "From the user falling silent to the bot's first audio, as Pipecat's "
    "UserBotLatencyObserver measures it.",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TURN_CONTRIBUTION = InstrumentSpec(
    "voice.turn.contribution.milliseconds",
    Kind.COUNTER,
    "ms",
    "Time of the user-to-bot interval spent on each part of a turn (endpointing wait, "
    "transcription, LLM inference, speech synthesis, ...), summed over turns.",
    sparse=True,
)
TURNS = InstrumentSpec(
    "voice.turns.total",
    Kind.COUNTER,
    "{turn}",
    "Turns the bot answered, by whether the user interrupted the answer.",
)
INTERRUPTIONS = InstrumentSpec(
    "voice.interruptions.total",
    Kind.COUNTER,
    "{interruption}",
    "Times the user started speaking while the bot was speaking.",
)
ERRORS = InstrumentSpec(
    "voice.errors.total",
    Kind.COUNTER,
    "{error}",
    "ErrorFrames of the pipeline, by processor, service_type, fatal and error_type.",
)
FUNCTION_CALLS = InstrumentSpec(
    "voice.function_calls.total",
    Kind.COUNTER,
    "{function_call}",
    "LLM tool calls that finished, by function and status.",
)
FUNCTION_CALL_LATENCY = InstrumentSpec(
    "voice.function_call.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "Time from a tool call's start to its result, by function.",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
CALLS_ENDED = InstrumentSpec(
    "voice.calls.ended.total",
    Kind.COUNTER,
    "{call}",
    "Calls ended, by end_reason and the call attributes the application declared "
    "(for example outcome).",
    per_call=False,
)

GREETING_LATENCY = InstrumentSpec(
    "voice.greeting.latency.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "From the caller connecting (the first ClientConnectedFrame) to the bot's first speech, "
    "when the bot speaks first, as Pipecat's UserBotLatencyObserver measures it.",
    buckets=LATENCY_BUCKETS_MS,
    exemplars=True,
)
TTS_AUDIO = InstrumentSpec(
    "voice.tts.audio.seconds",
    Kind.COUNTER,
    "s",
    "Seconds of audio text-to-speech produced (its TTSAudioRawFrames).",
)
# Process-wide, and one series per phase: a call starts once, so a histogram by phase and
# processor cost ~80 series (10 label sets of 5 buckets, +Inf, _sum and _count) for ten
# numbers measured once, in every process of a fleet that starts one per call. What a team
# reads from them is which processor, in which phase, is slow to start: the latest start's
# slowest processor of each phase says that in 3 series (2 without an SFU's bot_connected).
STARTUP = InstrumentSpec(
    "voice.startup.slowest.milliseconds",
    Kind.GAUGE,
    "ms",
    "The latest call's start-up time, by phase, of its slowest processor (the processor "
    "label), as Pipecat's StartupTimingObserver reports it: a processor's setup() and start() "
    "together (processor), and from the pipeline starting to set up to the transport's "
    "bot_connected and client_connected (the processor that pushed the frame).",
    per_call=False,
)
EVENT_LOOP_LAG = InstrumentSpec(
    "voice.event_loop.lag.milliseconds",
    Kind.HISTOGRAM,
    "ms",
    "How late the event loop that runs the calls ran a timer, sampled every 100 ms while "
    "calls are in progress: time every frame of every call waited for the loop.",
    per_call=False,
    buckets=LAG_BUCKETS_MS,
)
EXPORTS = InstrumentSpec(
    "pipecat_grafana.exports.total",
    Kind.COUNTER,
    "{export}",
    "The exporter's export requests, by outcome and reason; a failure is counted after the "
    "request, and arrives with the next accepted export.",
    per_call=False,
)
CALLS_DROPPED = InstrumentSpec(
    "pipecat_grafana.calls.dropped.total",
    Kind.COUNTER,
    "{call}",
    "Ended calls whose final values were never exported, by reason.",
    per_call=False,
)
SUMMARIES_DROPPED = InstrumentSpec(
    "pipecat_grafana.summaries.dropped.total",
    Kind.COUNTER,
    "{record}",
    "Call summary and turn log records never sent, by reason: the queue was full, the logs "
    "endpoint did not accept them within the retention time, or too many were waiting "
    "(turn records: the reason prefixed turn_).",
    per_call=False,
)
EXPORT_AGE = InstrumentSpec(
    "pipecat_grafana.export.age.seconds",
    Kind.GAUGE,
    "s",
    "Seconds since the endpoint last accepted an export (since the exporter started, before "
    "the first).",
    per_call=False,
)
CALL_HISTOGRAMS = (SESSION_DURATION,)
"""Histograms that always carry ``call_id`` (with the label on): recorded once per call,
they cost two points a call. Latency histograms carry it only with
``PIPECAT_GRAFANA_CALL_HISTOGRAMS=true``; by default they are process-wide and a call's
latency is in its summary record and in exemplars."""


def carries_call_id(spec: InstrumentSpec, *, call_histograms: bool = False) -> bool:
    """Whether a call's points of ``spec`` carry ``call_id`` (when the label is on).

    Args:
        spec: The instrument.
        call_histograms: Whether latency histograms are per call
            (``PIPECAT_GRAFANA_CALL_HISTOGRAMS``).
    """
    if not spec.per_call:
        return False
    return spec.kind is not Kind.HISTOGRAM or call_histograms or spec in CALL_HISTOGRAMS


ALL = (
    TTFB,
    PROCESSING,
    TTFA,
    TTFAT,
    TEXT_AGGREGATION,
    TURN_DETECTION,
    LLM_TOKENS,
    TTS_CHARACTERS,
    STT_AUDIO,
    COST,
    SESSION_DURATION,
    CALLS,
    CALLS_ACTIVE,
    TURN_LATENCY,
    TURN_CONTRIBUTION,
    TURNS,
    INTERRUPTIONS,
    ERRORS,
    FUNCTION_CALLS,
    FUNCTION_CALL_LATENCY,
    CALLS_ENDED,
    GREETING_LATENCY,
    TTS_AUDIO,
    STARTUP,
    EVENT_LOOP_LAG,
    EXPORTS,
    CALLS_DROPPED,
    SUMMARIES_DROPPED,
    EXPORT_AGE,
)
PUSH_ONLY = (EXPORTS, CALLS_DROPPED, SUMMARIES_DROPPED, EXPORT_AGE)
"""The OTLP export's own health: a process that only serves its Prometheus endpoint pushes
nothing, so it has none of these."""
LATENCY = (TTFB, PROCESSING, TTFA, TTFAT, TEXT_AGGREGATION, TURN_DETECTION)
SPARSE = frozenset(spec.name for spec in ALL if spec.sparse or spec.kind is Kind.HISTOGRAM)
"""Instruments whose changed series are sent at most once per histogram interval."""
CONVERSATION = (
    TURN_LATENCY,
    TURN_CONTRIBUTION,
    TURNS,
    INTERRUPTIONS,
    ERRORS,
    FUNCTION_CALLS,
    FUNCTION_CALL_LATENCY,
)
"""Instruments fed by conversation frames rather than by ``MetricsData``."""
RECORDED_GAUGES = (STARTUP,)
"""Gauges whose values the meters hold, set by ``CallMeters.set``; the others are observed
by their value's owner (the export's age)."""
HEALTH = (
    GREETING_LATENCY,
    STARTUP,
    EVENT_LOOP_LAG,
    EXPORTS,
    CALLS_DROPPED,
    SUMMARIES_DROPPED,
    EXPORT_AGE,
)
"""What callers feel before the first turn, and whether the bot and the exporter are healthy."""

# Attribute keys (labels), and the bounded values of the enumerated ones.
CALL_ID = "call_id"
PROCESSOR = "processor"
MODEL = "model"
SERVICE_TYPE = "service_type"
TOKEN_TYPE = "token_type"
END_REASON = "end_reason"
CONTRIBUTION = "contribution"
INTERRUPTED = "interrupted"
FATAL = "fatal"
ERROR_TYPE = "error_type"
FUNCTION = "function"
STATUS = "status"
PHASE = "phase"
OUTCOME = "outcome"
REASON = "reason"
NOT_MEASURED = "not_measured"
"""On ``voice.calls.ended.total``, only for a call whose worker had a metrics flag off:
``latency``, ``usage`` or ``latency,usage`` (see ``summary.NOT_MEASURED``). Turns not
measured are said in the summary only, not here: they add no series."""
SERVICE_TYPES = ("llm", "stt", "tts", "other")
TOKEN_TYPES = (
    "prompt",
    "completion",
    "cache_read",
    "cache_creation",
    "reasoning",
    "input_audio",
    "output_audio",
)
END_REASONS = ("ended", "cancelled")
ERROR_TYPES = ("rate_limit", "timeout", "other")
FUNCTION_STATUSES = ("ok", "error", "cancelled")
STARTUP_PHASES = ("processor", "bot_connected", "client_connected")
EXPORT_OUTCOMES = ("ok", "rejected", "unreachable", "timeout", "error")
"""Accepted; answered with another status; no connection; no answer in time; not sent."""
EXPORT_REASONS = (
    "none",
    "3xx",
    "400",
    "401",
    "403",
    "404",
    "408",
    "413",
    "429",
    "4xx",
    "5xx",
    "refused",
    "dns",
    "tls",
    "timeout",
    "network",
    "other",
)
"""Why an export was not accepted: the HTTP status (others of a class as ``4xx``/``5xx``), or
what kept it from an answer; ``none`` when it was accepted."""
DROP_REASONS = ("expired", "overflow")
SUMMARY_DROP_REASONS = (
    "queue",
    "expired",
    "overflow",
    "unencodable",
    "turn_queue",
    "turn_expired",
    "turn_overflow",
    "turn_unencodable",
)
"""Why summary records were dropped: the queue between two sends was full, the logs endpoint
did not accept them within the retention time, more than ``MAX_PENDING`` waited, or one
could not be encoded; ``turn_`` and the same reasons for turn records."""
"""Why ended calls were dropped: not accepted within the retention time, or too many waiting.
(Those left at shutdown are logged, not counted: nothing would send the count.)"""
OTHER = "other"
"""The value a bounded label takes beyond its bound (a function name, a contribution)."""
# The stable keys of Pipecat's LatencyContribution (UserBotLatencyObserver); any
# other key is reported as "other", so a new Pipecat release cannot add series.
CONTRIBUTIONS = (
    "endpointing_wait",
    "first_request",
    "transcription",
    "turn_detection",
    "llm_inference",
    "turn_completion",
    "waiting_for_user",
    "llm_tool_call",
    "function_handler",
    "awaiting_speakable_text",
    "sentence_aggregation",
    "speech_synthesis",
    "output_transport",
    "pipeline",
)


def create(meter: Meter, spec: InstrumentSpec, *, callback: Callable | None = None) -> Any:
    """Create the instrument ``spec`` describes on ``meter``.

    Counters and gauges are created observable, reporting what ``callback`` returns
    (running totals or a value kept by the caller); histograms are synchronous.
    """
    if spec.kind is Kind.HISTOGRAM:
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
        )
    create = {
        Kind.COUNTER: meter.create_observable_counter,
        Kind.UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
        Kind.GAUGE: meter.create_observable_gauge,
    }[spec.kind]
    return create(
        spec.name,
        callbacks=[callback] if callback else [],
        unit=spec.unit,
        description=spec.description,
    )
