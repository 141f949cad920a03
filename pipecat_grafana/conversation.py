"""What the caller lives through: turns, barge-ins, errors, tool calls, the call's outcome.

Pipecat's service metrics say how fast each service was; a voice team judges a
bot by what the caller hears. This module follows the frames that mark those
moments, in the order the pipeline pushed them (it runs in the exporter's
observer, which sees each frame once), and records them into the call's meters.

Turns are counted here rather than taken from Pipecat's ``TurnTrackingObserver``,
which ends the active turn as "interrupted" when the pipeline ends, so every call
that hangs up soon after the bot spoke would count a barge-in. Turn latency and
its breakdown are Pipecat's own (``UserBotLatencyObserver``), recorded as given.

A turn starts when the caller starts speaking and ends when the caller speaks again
or the call ends; it counts once the bot has spoken in it (speech the bot did not
answer joins the turn that follows). Each turn that ends becomes one ``TurnRecord``,
handed on at once: only the turn in progress is kept. Its words are collected only
with ``transcripts`` on. A call without user speaking frames (no VAD, no turn
detection) has no turns to count: they are "not measured", not zero.
"""

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, MeasuredFrom
from pipecat.utils.errors import ErrorCategory

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters, ExemplarContext
from pipecat_grafana.labels import BoundedLabel, ServiceTypes, label, processor_label
from pipecat_grafana.stats import LatencySketch
from pipecat_grafana.turns import MAX_TEXT_CHARS, MAX_TOOL_CALLS, Redactor, ToolCall, TurnRecord
from pipecat_grafana.turns import redacted as redacted_text

UNSET = "unset"
_LABEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RESERVED = {
    m.CALL_ID,
    m.END_REASON,
    m.PROCESSOR,
    m.MODEL,
    m.SERVICE_TYPE,
    "job",
    "instance",
    "le",
    "service_name",
    "service_instance_id",
}
_RATE_LIMIT = re.compile(r"\b429\b|rate.?limit|too many requests|quota exceeded", re.IGNORECASE)
_TIMEOUT = re.compile(r"time(?:d)?.?out|deadline exceeded", re.IGNORECASE)


def check_call_attributes(declared: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Validate the call attributes an application declares, with their allowed values.

    Raises:
        ValueError: A name is not a valid label name or is taken, or has no values.
    """
    checked = {}
    for name, values in declared.items():
        if not _LABEL_NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(
                f"call attribute {name!r} cannot be a label: use lowercase letters, digits "
                f"and '_', not starting with a digit, and none of {sorted(_RESERVED)}"
            )
        allowed = tuple(dict.fromkeys(str(v) for v in values))
        if not allowed or isinstance(values, str):
            raise ValueError(
                f"call attribute {name!r} needs a list of allowed values, "
                "for example ['resolved', 'escalated', 'abandoned']"
            )
        checked[name] = allowed
    return checked


def checked_attributes(
    declared: Mapping[str, tuple[str, ...]], attributes: Mapping[str, object]
) -> dict[str, str]:
    """Call attributes an application sets, checked against the declared ones.

    Raises:
        ValueError: An attribute was not declared, or its value is not allowed.
    """
    checked = {}
    for name, value in attributes.items():
        allowed = declared.get(name)
        if allowed is None:
            names = ", ".join(declared) or "none"
            raise ValueError(
                f"call attribute {name!r} was not declared (declared: {names}); "
                "declare it with GrafanaMetricsExporter(call_attributes={...})"
            )
        if str(value) not in allowed:
            raise ValueError(
                f"call attribute {name}={value!r} is not one of the declared values {list(allowed)}"
            )
        checked[name] = str(value)
    return checked


class _Turn:
    """The turn in progress: what its record will say."""

    def __init__(self, started: float):
        self.started = started
        self.bot_spoke = False
        self.latency_ms: float | None = None
        self.contributions: dict[str, float] = {}
        self.ttfb: dict[str, float] = {}
        self.tool_calls = 0
        self.tool_call_list: list[ToolCall] = []
        self.errors: dict[str, int] = {}
        self.user_text: list[str] = []
        self.bot_text: list[str] = []
        self.span: ExemplarContext | None = None


def _joined(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())[:MAX_TEXT_CHARS]


def _add_text(parts: list[str], text: str) -> None:
    # Bounded while collected: a turn of an hour keeps MAX_TEXT_CHARS, not the hour.
    if sum(len(p) + 1 for p in parts) < MAX_TEXT_CHARS:
        parts.append(text)


class Conversation:
    """One call's turns, interruptions, errors, tool calls and declared attributes.

    Parameters:
        meters: Where points go.
        service_types: Which service each processor is, as the call's metrics found it.
        declared: The call attributes the application may set, with allowed values.
        function_names: The bound on the ``function`` label.
        processor_names: The bound on the ``processor`` label.
        exemplar: What a latency measured now links to (the call, its span).
        call_id: The call's ID, for its turn records.
        on_turn: Called with each turn's record and its span when the turn ends (on the
            event loop: it must only queue).
        transcripts: Collect what the caller said and what the bot spoke, for the records.
        redact: Applied to every text before it goes into a record.
        time_source: Clock in seconds, for tool-call durations.
    """

    def __init__(
        self,
        *,
        meters: CallMeters,
        service_types: ServiceTypes,
        declared: Mapping[str, tuple[str, ...]],
        function_names: BoundedLabel,
        processor_names: BoundedLabel,
        exemplar: Callable[[], ExemplarContext | None] = lambda: None,
        call_id: str = "",
        on_turn: Callable[[TurnRecord, ExemplarContext | None], None] | None = None,
        transcripts: bool = False,
        redact: Redactor | None = None,
        time_source: Callable[[], float] = time.time,
    ):
        self._meters = meters
        self._service_types = service_types
        self._declared = declared
        self._function_names = function_names
        self._processor_names = processor_names
        self._exemplar = exemplar
        self._call_id = call_id
        self._on_turn = on_turn
        self._transcripts = transcripts
        self._redact = redact
        self._clock = time_source
        self.attributes: dict[str, str] = {}
        self._bot_speaking = False
        self._turn: _Turn | None = None
        self._early_user_text: list[str] = []
        self.user_spoke = False  # a user speaking frame was seen: turns are measured
        self.turns = 0
        self.interruptions = 0
        self.errors: dict[str, int] = {}
        self.function_calls: dict[str, int] = {}
        self.turn_latency = LatencySketch()
        self.greeting_latency_ms: float | None = None
        self.function_latency: dict[str, LatencySketch] = {}
        self._calls_in_progress: dict[str, tuple[str, float]] = {}

    def set_attributes(self, **attributes: str) -> None:
        """Set declared call attributes (validated against the declared values)."""
        self.attributes.update(checked_attributes(self._declared, attributes))

    def observe(self, frame: object, source: object) -> None:
        """Follow one frame, at its first push."""
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            if self._turn is not None:
                self._turn.bot_spoke = True
                if self._turn.span is None:
                    self._turn.span = self._exemplar()  # the turn's span is open now
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_started()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self.user_spoke = True
        elif isinstance(frame, TranscriptionFrame):
            if self._transcripts and frame.text:
                turn = self._turn
                # A transcript can overtake the UserStartedSpeakingFrame of its speech: once
                # the bot has answered, it belongs to the turn about to start.
                if turn is not None and not turn.bot_spoke:
                    _add_text(turn.user_text, frame.text)
                else:
                    _add_text(self._early_user_text, frame.text)
        elif isinstance(frame, TTSTextFrame):
            # Pushed by the TTS as it speaks: after a barge-in, no more of the answer.
            if self._transcripts and self._turn is not None and frame.text:
                _add_text(self._turn.bot_text, frame.text)
        elif isinstance(frame, ErrorFrame):
            self._error(frame, source)
        elif isinstance(frame, FunctionCallInProgressFrame):
            # Broadcast as two frames: the first marks the start.
            started = (frame.function_name, self._clock())
            self._calls_in_progress.setdefault(frame.tool_call_id, started)
        elif isinstance(frame, FunctionCallResultFrame):
            if frame.properties is not None and frame.properties.is_final is False:
                return  # a progress update of a long-running tool, not its result
            self._function_finished(frame.tool_call_id, "error" if frame.error else "ok")
        elif isinstance(frame, FunctionCallCancelFrame):
            self._function_finished(frame.tool_call_id, "cancelled")

    def latency_measured(self, seconds: float) -> None:
        """Record one user-to-bot latency from ``UserBotLatencyObserver``."""
        value = seconds * 1000
        if 0 <= value <= m.MAX_LATENCY_MS:
            self.turn_latency.add(value)
            self._meters.record(m.TURN_LATENCY, value, {}, self._exemplar())
            if self._turn is not None and self._turn.latency_ms is None:
                self._turn.latency_ms = value

    def greeting_measured(self, seconds: float) -> None:
        """Record the wait for the bot's first words, when it spoke first (once a call)."""
        value = seconds * 1000
        if 0 <= value <= m.MAX_LATENCY_MS:
            self.greeting_latency_ms = value
            self._meters.record(m.GREETING_LATENCY, value, {}, self._exemplar())

    def latency_breakdown(self, breakdown: LatencyBreakdown) -> None:
        """Record where a turn's latency went (not the greeting's)."""
        if breakdown.measured_from is not MeasuredFrom.USER_SILENCE:
            return
        turn = self._turn
        for part in breakdown.contributions:
            key = part.key if part.key in m.CONTRIBUTIONS else m.OTHER
            if part.duration_secs > 0:
                self._meters.record(
                    m.TURN_CONTRIBUTION, part.duration_secs * 1000, {m.CONTRIBUTION: key}
                )
                if turn is not None:  # the record keeps Pipecat's own key
                    ms = part.duration_secs * 1000
                    turn.contributions[part.key] = turn.contributions.get(part.key, 0.0) + ms

    def ttfb_measured(self, service_type: str, milliseconds: float) -> None:
        """Keep a TTFB for the turn in progress: the slowest of each service type."""
        turn = self._turn
        if turn is not None and milliseconds > turn.ttfb.get(service_type, -1.0):
            turn.ttfb[service_type] = milliseconds

    @property
    def turns_measured(self) -> bool:
        """Whether the call's turns could be counted: it saw the caller start speaking."""
        return self.user_spoke or self.turns > 0

    def end(self) -> None:
        """Close the turn in progress: answered if the bot spoke in it."""
        if self._turn is not None and self._turn.bot_spoke:
            self._count_turn(interrupted=False)
        self._turn = None

    def _user_started(self) -> None:
        self.user_spoke = True
        interrupted = self._bot_speaking  # a barge-in, also into a greeting
        if interrupted:
            self.interruptions += 1
            self._meters.record(m.INTERRUPTIONS, 1, {})
        if self._turn is None or self._turn.bot_spoke:
            if self._turn is not None:
                self._count_turn(interrupted=interrupted)
            self._turn = _Turn(self._clock())
            self._turn.user_text, self._early_user_text = self._early_user_text, []
        # else: the bot has not answered yet; the caller's speech joins the same turn
        self._bot_speaking = False

    def _count_turn(self, *, interrupted: bool) -> None:
        self.turns += 1
        self._meters.record(m.TURNS, 1, {m.INTERRUPTED: str(interrupted).lower()})
        turn = self._turn
        if self._on_turn is None or turn is None:
            return
        user_text = bot_text = None
        if self._transcripts:
            user_text = redacted_text(_joined(turn.user_text), self._redact)
            bot_text = redacted_text(_joined(turn.bot_text), self._redact)
        self._on_turn(
            TurnRecord(
                call_id=self._call_id,
                turn=self.turns,
                interrupted=interrupted,
                started_at=datetime.fromtimestamp(turn.started, UTC),
                latency_ms=turn.latency_ms,
                contributions_ms=turn.contributions,
                ttfb_ms=turn.ttfb,
                tool_calls=turn.tool_calls,
                tool_call_list=turn.tool_call_list,
                errors=turn.errors,
                user_text=user_text,
                bot_text=bot_text,
            ),
            turn.span,
        )

    def _error(self, frame: ErrorFrame, source: object) -> None:
        processor = frame.processor or source
        error_type = _error_type(frame)
        self.errors[error_type] = self.errors.get(error_type, 0) + 1
        if self._turn is not None:
            self._turn.errors[error_type] = self._turn.errors.get(error_type, 0) + 1
        name = getattr(processor, "name", None) or "unknown"
        self._meters.record(
            m.ERRORS,
            1,
            {
                m.PROCESSOR: self._processor_names(processor_label(name)),
                m.SERVICE_TYPE: self._service_types.of(processor, name),
                m.FATAL: str(bool(frame.fatal)).lower(),
                m.ERROR_TYPE: error_type,
            },
        )

    def _function_finished(self, tool_call_id: str, status: str) -> None:
        started = self._calls_in_progress.pop(tool_call_id, None)
        if started is None:
            return
        name, at = started
        # The summary keeps every tool's own name; only the label is bounded.
        name = label(name)
        function = self._function_names(name)
        self.function_calls[name] = self.function_calls.get(name, 0) + 1
        self._meters.record(m.FUNCTION_CALLS, 1, {m.FUNCTION: function, m.STATUS: status})
        milliseconds = max(self._clock() - at, 0.0) * 1000
        self._meters.record(
            m.FUNCTION_CALL_LATENCY, milliseconds, {m.FUNCTION: function}, self._exemplar()
        )
        sketch = self.function_latency.setdefault(name, LatencySketch())
        sketch.add(milliseconds)
        turn = self._turn
        if turn is not None:
            turn.tool_calls += 1
            if len(turn.tool_call_list) < MAX_TOOL_CALLS:
                turn.tool_call_list.append(
                    ToolCall(name=name, duration_ms=milliseconds, status=status)
                )

    def ended_attributes(self, end_reason: str) -> dict[str, str]:
        """The attributes of ``voice.calls.ended.total`` for this call."""
        attributes = {name: self.attributes.get(name, UNSET) for name in self._declared}
        return {m.END_REASON: end_reason, **attributes}


def _error_type(frame: ErrorFrame) -> str:
    # Pipecat classifies the error (ErrorCategory); a timeout is folded into
    # "connectivity" there, so it is told apart by the exception or the text.
    if frame.category is ErrorCategory.RATE_LIMIT:
        return "rate_limit"
    if isinstance(frame.exception, TimeoutError):
        return "timeout"
    text = f"{frame.error} {frame.exception or ''}"
    if _RATE_LIMIT.search(text):
        return "rate_limit"
    if _TIMEOUT.search(text):
        return "timeout"
    return m.OTHER
