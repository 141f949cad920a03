"""The call summary: a typed record of one call, its log block and its log record.

The summary is what a person reads at the end of a call (the "Call Summary"
block in the log), what an application receives through the ``on_call_summary``
event to store or forward, and the OTLP log record Grafana keeps in Loki
(``log_attributes``). Every figure in it is the same figure that was exported
for the call.
"""

import hashlib
import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


def _cost_digits(parts: list[float], total: float | None, least: int = 4, most: int = 10) -> int:
    """Decimals that make the cost lines, as printed, add up to the total as printed.

    Four decimals unless a part is so small that, rounded, the lines would not add up
    (``$0.0001 + $0.0065 = $0.0065``); then as many more as it takes, up to ``most``.
    """
    if total is None or not parts:
        return least
    for digits in range(least, most + 1):
        shown = sum(round(part, digits) for part in parts)
        if round(shown, digits) == round(total, digits) and all(
            round(part, digits) or not part for part in parts
        ):
            return digits
    return most


NOT_MEASURED = {
    "latency": (
        "enable_metrics",
        "TTFB, processing time, time to first audio and the other service latencies",
    ),
    "usage": (
        "enable_usage_metrics",
        "LLM tokens, TTS characters and STT audio seconds, and so the cost",
    ),
}
"""What Pipecat does not report when a ``PipelineParams`` flag is off: each part's flag and
what is lost with it."""

TURNS_NOT_MEASURED = (
    "no user speaking frames: the pipeline has no VAD or turn detection, for example "
    "messages queued straight into the LLM"
)
"""Why a call's ``not_measured`` holds ``turns``."""


def not_measured_line(parts: list[str] | tuple[str, ...]) -> str:
    """Say which ``PipelineParams`` flags were off and what the call's figures lack."""
    flags = " and ".join(f"{NOT_MEASURED[part][0]}" for part in parts)
    lost = "; ".join(NOT_MEASURED[part][1] for part in parts)
    return (
        f"PipelineParams {flags} {'is' if len(parts) == 1 else 'are'} off, so Pipecat reports "
        f"no {lost}. Call summaries say 'not measured' for them, never zero. Turn them on with "
        "PipelineWorker(..., params=PipelineParams(enable_metrics=True, "
        "enable_usage_metrics=True))"
    )


class LatencyStats(BaseModel):
    """Statistics of one latency metric of one processor during a call."""

    model_config = ConfigDict(frozen=True)

    metric: str
    """Which latency: ``ttfb``, ``processing``, ``ttfa``, ``ttfat``, ``text_aggregation``,
    ``turn_detection``."""
    processor: str
    """The processor's class name, without Pipecat's ``#N`` suffix."""
    count: int
    """Number of measurements."""
    avg_ms: float
    """Mean, in milliseconds."""
    min_ms: float
    """Smallest measurement, in milliseconds."""
    max_ms: float
    """Largest measurement, in milliseconds."""
    p50_ms: float
    """Median, in milliseconds (within 1 %)."""
    p95_ms: float
    """95th percentile, in milliseconds (within 1 %)."""


class ServiceCost(BaseModel):
    """Estimated cost of one model of one service type during a call."""

    model_config = ConfigDict(frozen=True)

    service_type: str
    """``llm``, ``stt`` or ``tts``."""
    model: str
    """The model the cost was priced for."""
    usd: float
    """Estimated cost in US dollars."""


class CallSummary(BaseModel):
    """Everything the exporter measured about one call."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    """The call's ID: the worker's ``conversation_id``, the one passed in, or a UUID4."""
    service_name: str
    """The ``service.name`` the call's metrics were exported under."""
    llm_model: str | None
    """The LLM model configured for the call, if any."""
    stt_model: str | None
    """The STT model configured for the call, if any."""
    tts_model: str | None
    """The TTS model configured for the call, if any."""
    started_at: datetime | None
    """When the call started (UTC), or ``None`` if it never started."""
    duration_seconds: float
    """Call length in seconds, from the ``StartFrame`` reaching the end of the pipeline to
    the ``EndFrame``/``CancelFrame`` reaching it, wherever the exporter stands."""
    end_reason: str
    """``ended`` (``EndFrame``) or ``cancelled`` (``CancelFrame`` or cancelled pipeline)."""
    tokens: dict[str, int] | None = Field(default_factory=dict)
    """LLM tokens by token type (``prompt``, ``completion``, ``cache_read``, ...);
    a type never reported is absent; ``None`` when usage was not measured."""
    tts_characters: int | None = 0
    """Characters sent to text-to-speech; ``None`` when usage was not measured."""
    stt_audio_seconds: float | None = 0.0
    """Seconds of audio sent to speech-to-text; ``None`` when usage was not measured."""
    tts_audio_seconds: float = 0.0
    """Seconds of audio text-to-speech produced."""
    latency: list[LatencyStats] = Field(default_factory=list)
    """Latency statistics per metric and processor."""
    costs: list[ServiceCost] = Field(default_factory=list)
    """Estimated cost per service type and model (priced models only)."""
    total_cost_usd: float | None = 0.0
    """Sum of ``costs``; partial when ``unpriced_models`` is not empty; ``None`` when usage
    was not measured (``not_measured``): unknown, not zero."""
    not_measured: list[str] = Field(default_factory=list)
    """What was not measured: ``latency`` and ``usage`` when the worker's ``PipelineParams``
    flag was off (``enable_metrics``: ``latency`` is empty; ``enable_usage_metrics``: tokens,
    characters, audio seconds and cost are ``None``), ``turns`` when the call saw no user
    speaking frames (``turns`` is ``None``)."""
    unpriced_models: list[str] = Field(default_factory=list)
    """Models that were used but have no price (``service_type:model``); their cost is
    unknown, not zero."""
    turns: int | None = 0
    """Turns the bot answered, one turn record each; ``None`` when not measured (no user
    speaking frames: no VAD or turn detection)."""
    interruptions: int = 0
    """Times the user started speaking while the bot was speaking."""
    turn_latency: LatencyStats | None = None
    """User-to-bot latency of the call's turns (metric ``turn``), or ``None`` if none."""
    greeting_latency_ms: float | None = None
    """Milliseconds from the caller connecting to the bot's first speech, or ``None`` if not
    measured (the caller spoke first, or the transport reports no connection)."""
    errors: dict[str, int] = Field(default_factory=dict)
    """ErrorFrames by error type (``rate_limit``, ``timeout``, ``other``)."""
    function_calls: dict[str, int] = Field(default_factory=dict)
    """Finished tool calls by function (their latency is in ``latency``, metric
    ``function_call``)."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """The call attributes the application set (for example ``outcome``)."""

    def format(self) -> str:
        """Render the summary as the multi-line block logged at the end of a call."""
        rule = "=" * 80
        models = ", ".join(
            f"{kind}={model}"
            for kind, model in (
                ("LLM", self.llm_model),
                ("STT", self.stt_model),
                ("TTS", self.tts_model),
            )
            if model
        )
        unmeasured = "not measured (enable_usage_metrics is off)"
        if self.tokens is None:
            tokens = unmeasured
        else:
            tokens = ", ".join(f"{kind}={count}" for kind, count in self.tokens.items()) or "none"
        lines = [
            rule,
            "Grafana Metrics - Call Summary",
            rule,
            f"Call ID:    {self.call_id}",
            f"Service:    {self.service_name}",
            f"Models:     {models or 'not configured'}",
            f"Duration:   {self.duration_seconds:.1f}s ({self.end_reason})",
            f"LLM tokens: {tokens}",
            f"TTS chars:  {unmeasured if self.tts_characters is None else self.tts_characters}",
            f"TTS audio:  {self.tts_audio_seconds:.1f}s",
            "STT audio:  "
            + (unmeasured if self.stt_audio_seconds is None else f"{self.stt_audio_seconds:.1f}s"),
        ]
        if "latency" in self.not_measured:
            lines.append("Latency:    not measured (enable_metrics is off): no TTFB, processing")
        if self.greeting_latency_ms is not None:
            lines.append(f"Greeting:   {self.greeting_latency_ms:.0f}ms to the bot's first words")
        if self.turns is None:
            turns = f"Turns:      not measured ({TURNS_NOT_MEASURED})"
        else:
            turns = f"Turns:      {self.turns} ({self.interruptions} interrupted by the user)"
        if self.turn_latency:
            turns += (
                f", latency p50={self.turn_latency.p50_ms:.0f}ms "
                f"p95={self.turn_latency.p95_ms:.0f}ms"
            )
        lines.append(turns)
        if self.errors:
            lines.append("Errors:     " + ", ".join(f"{k}={v}" for k, v in self.errors.items()))
        if self.function_calls:
            calls = ", ".join(f"{k}={v}" for k, v in self.function_calls.items())
            lines.append(f"Tool calls: {calls}")
        if self.attributes:
            lines.append("Outcome:    " + ", ".join(f"{k}={v}" for k, v in self.attributes.items()))
        for stats in self.latency:
            lines.append(
                f"{stats.metric.upper():<17} {stats.processor}: n={stats.count} "
                f"avg={stats.avg_ms:.0f}ms p50={stats.p50_ms:.0f}ms p95={stats.p95_ms:.0f}ms "
                f"min={stats.min_ms:.0f}ms max={stats.max_ms:.0f}ms"
            )
        digits = _cost_digits([cost.usd for cost in self.costs], self.total_cost_usd)
        for cost in self.costs:
            lines.append(f"Cost {cost.service_type} ({cost.model}): ${cost.usd:.{digits}f}")
        if self.total_cost_usd is None:
            total = f"Total cost: {unmeasured}"
        else:
            total = f"Total cost: ${self.total_cost_usd:.{digits}f}"
        if self.unpriced_models:
            total += f" (partial: no price for {', '.join(self.unpriced_models)})"
        lines += [total, rule]
        return "\n".join(lines)

    def log_body(self) -> str:
        """One line a person can read in a log list: ``call <id> ended after 6.9 s, ...``."""
        if self.total_cost_usd is None:
            cost = "cost not measured"
        else:
            cost = f"${self.total_cost_usd:.3f}" + (" (partial)" if self.unpriced_models else "")
        if self.turns is None:
            turns = "turns not measured"
        else:
            turns = f"{self.turns} turn{'s' if self.turns != 1 else ''}"
        return (
            f"call {self.call_id} {self.end_reason} after {self.duration_seconds:.1f} s, "
            f"{cost}, {turns}"
        )

    def log_attributes(self) -> dict[str, str | int | float]:
        """The summary's figures as the attributes of its OTLP log record.

        Keys are stable (``LOG_KEYS`` documents each) and already valid Loki label
        names, so LogQL reads them as written: ``| cost_usd > 0.05``. A figure that
        was not measured is absent, never zero.
        """
        attributes: dict[str, str | int | float] = {
            EVENT_NAME_KEY: EVENT_NAME,
            "call_id": self.call_id,
            "end_reason": self.end_reason,
            "duration_seconds": round(self.duration_seconds, 3),
            "interruptions": self.interruptions,
            "tts_audio_seconds": round(self.tts_audio_seconds, 3),
            "errors": sum(self.errors.values()),
            "function_calls": sum(self.function_calls.values()),
        }
        if self.turns is not None:
            attributes["turns"] = self.turns
        if self.total_cost_usd is not None:
            attributes["cost_usd"] = self.total_cost_usd
        if self.tts_characters is not None:
            attributes["tts_characters"] = self.tts_characters
        if self.stt_audio_seconds is not None:
            attributes["stt_audio_seconds"] = round(self.stt_audio_seconds, 3)
        if self.not_measured:
            attributes["not_measured"] = ",".join(self.not_measured)
        for kind, model in (
            ("llm", self.llm_model),
            ("stt", self.stt_model),
            ("tts", self.tts_model),
        ):
            if model:
                attributes[f"{kind}_model"] = model
        if self.started_at is not None:
            attributes["started_at"] = self.started_at.isoformat()
        if self.unpriced_models:
            attributes["unpriced_models"] = ",".join(self.unpriced_models)
        for token_type, count in (self.tokens or {}).items():
            attributes[f"tokens_{token_type}"] = count
        for service_type in sorted({cost.service_type for cost in self.costs}):
            attributes[f"cost_usd_{service_type}"] = sum(
                cost.usd for cost in self.costs if cost.service_type == service_type
            )
        for stats in self.latency:
            key = f"{key_part(stats.metric)}_p95_ms"  # the slowest processor's, per metric
            attributes[key] = max(round(stats.p95_ms, 1), attributes.get(key, 0.0))
        if self.greeting_latency_ms is not None:
            attributes["greeting_latency_ms"] = round(self.greeting_latency_ms, 1)
        if self.turn_latency is not None:
            attributes["turn_latency_p50_ms"] = round(self.turn_latency.p50_ms, 1)
            attributes["turn_latency_p95_ms"] = round(self.turn_latency.p95_ms, 1)
        add_counts(attributes, "errors", self.errors)
        add_counts(attributes, "function_calls", self.function_calls)
        for name, value in self.attributes.items():
            attributes[f"attribute_{name}"] = value
        return attributes


EVENT_NAME_KEY = "event_name"
EVENT_NAME = "pipecat_call_summary"
"""The ``event_name`` of every call summary record: ``{service_name="..."} | event_name =
"pipecat_call_summary"`` selects them in Loki."""

MAX_KEYS_PER_COUNT = 32
"""Keys per counted name (tools, error types) in a record, the most counted first: the SDK
keeps 128 attributes a record, and the summary's own keys must never be the ones cut."""


LOG_KEYS = {
    EVENT_NAME_KEY: f"always {EVENT_NAME!r}: selects call summaries among other logs",
    "call_id": "the call's ID, as the application gave it (the metrics' call_id label and "
    "the trace's conversation.id are the same value)",
    "end_reason": "ended or cancelled",
    "started_at": "start of the call, ISO 8601 UTC",
    "duration_seconds": "call length in seconds",
    "llm_model, stt_model, tts_model": "the models configured for the call",
    "cost_usd": "estimated cost in USD (partial when unpriced_models is set)",
    "cost_usd_<service_type>": "estimated cost of the llm, stt or tts service",
    "unpriced_models": "service_type:model pairs with no price, comma-separated",
    "not_measured": "latency and/or usage, comma-separated, when the worker's PipelineParams "
    "flag was off (enable_metrics, enable_usage_metrics); the cost, tokens, characters and "
    "STT seconds are then absent, not zero; turns when the call saw no user speaking frames "
    "(no VAD or turn detection): turns is then absent, not zero",
    "tokens_<token_type>": "LLM tokens by type: prompt, completion, cache_read, ...",
    "tts_characters": "characters sent to text-to-speech",
    "tts_audio_seconds": "seconds of audio text-to-speech produced",
    "stt_audio_seconds": "seconds of audio sent to speech-to-text",
    "turns": "turns the bot answered: the call's number of turn records (pipecat_turn)",
    "interruptions": "times the caller spoke over the bot",
    "greeting_latency_ms": "caller connected to the bot's first speech, when the bot spoke "
    "first (absent when not measured)",
    "turn_latency_p50_ms, turn_latency_p95_ms": "user-to-bot latency percentiles",
    "<metric>_p95_ms": "p95 of ttfb, ttfa, ttfat, processing, text_aggregation, "
    "turn_detection, function_call: the slowest processor's (the summary has each one's)",
    "errors": "errors in all; errors_<error_type> by type (rate_limit, timeout, other)",
    "function_calls": "tool calls in all; function_calls_<function> by tool: the "
    f"{MAX_KEYS_PER_COUNT} most called, the rest in function_calls_other; a name that is not "
    "letters, digits and underscores gets _ for each other character and a 6-hex-digit hash "
    "of the name (function_calls_lookup_account_1f2e3d for lookup-account)",
    "attribute_<name>": "the call attributes the application set (attribute_outcome)",
}
"""Every attribute key of the call summary log record, with what it holds."""

_NOT_A_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def add_counts(
    attributes: dict[str, str | int | float],
    prefix: str,
    counts: dict[str, int] | dict[str, float],
    suffix: str = "",
) -> None:
    """Add ``<prefix>_<name><suffix>`` per name, bounded and without collisions; the rest summed.

    The ``MAX_KEYS_PER_COUNT`` largest values keep a key of their own; the others are added up
    in ``<prefix>_other<suffix>``.
    """
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for name, count in ranked[:MAX_KEYS_PER_COUNT]:
        attributes[f"{prefix}_{unique_key(name)}{suffix}"] = count
    if rest := sum(count for _, count in ranked[MAX_KEYS_PER_COUNT:]):
        key = f"{prefix}_{OTHER_KEY}{suffix}"
        named = attributes.get(key, 0)  # a name "other" of its own
        attributes[key] = (named if isinstance(named, int | float) else 0) + rest


OTHER_KEY = "other"
"""Where the counts beyond ``MAX_KEYS_PER_COUNT`` go (with a name ``other``'s own)."""


def unique_key(name: str) -> str:
    """``key_part(name)``, with a hash of the name when that changed it: two names, two keys."""
    key = key_part(name)
    if key == name:
        return key
    digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:6]
    return f"{key[:57]}_{digest}"


def key_part(name: str) -> str:
    """A name as a Loki-safe key part: letters, digits and underscores."""
    return _NOT_A_LABEL.sub("_", name)[:64]
