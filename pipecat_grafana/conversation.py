"""What the caller lives through: turns, barge-ins, errors, tool calls, the call's outcome.

Pipecat's service metrics say how fast each service was; a voice team judges a
bot by what the caller hears. This module follows the frames that mark those
moments, in the order the pipeline pushed them (it runs in the exporter's
observer, which sees each frame once), and records them into the call's meters.

Turns are counted here rather than taken from Pipecat's ``TurnTrackingObserver``,
which ends the active turn as "interrupted" when the pipeline ends, so every call
that hangs up soon after the bot spoke would count a barge-in. Turn latency and
its breakdown are Pipecat's own (``UserBotLatencyObserver``), recorded as given.
"""

import re
import time
from collections.abc import Callable, Mapping, Sequence

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, MeasuredFrom
from pipecat.utils.errors import ErrorCategory

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters, ExemplarContext
from pipecat_grafana.labels import BoundedLabel, ServiceTypes, label, processor_label
from pipecat_grafana.stats import LatencySketch

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


class Conversation:
    """One call's turns, interruptions, errors, tool calls and declared attributes.

    Parameters:
        meters: Where points go.
        service_types: Which service each processor is, as the call's metrics found it.
        declared: The call attributes the application may set, with allowed values.
        function_names: The bound on the ``function`` label.
        processor_names: The bound on the ``processor`` label.
        exemplar: What a latency measured now links to (the call, its span).
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
        time_source: Callable[[], float] = time.time,
    ):
        self._meters = meters
        self._service_types = service_types
        self._declared = declared
        self._function_names = function_names
        self._processor_names = processor_names
        self._exemplar = exemplar
        self._clock = time_source
        self.attributes: dict[str, str] = {}
        self._bot_speaking = False
        self._bot_spoke_this_turn = False
        self._turn_active = False
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
            self._bot_spoke_this_turn = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_started()
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
        for part in breakdown.contributions:
            key = part.key if part.key in m.CONTRIBUTIONS else m.OTHER
            if part.duration_secs > 0:
                self._meters.record(
                    m.TURN_CONTRIBUTION, part.duration_secs * 1000, {m.CONTRIBUTION: key}
                )

    def end(self) -> None:
        """Close the turn in progress: answered if the bot spoke in it."""
        if self._turn_active and self._bot_spoke_this_turn:
            self._count_turn(interrupted=False)
        self._turn_active = False

    def _user_started(self) -> None:
        interrupted = self._bot_speaking  # a barge-in, also into a greeting
        if interrupted:
            self.interruptions += 1
            self._meters.record(m.INTERRUPTIONS, 1, {})
        if self._turn_active and self._bot_spoke_this_turn:
            self._count_turn(interrupted=interrupted)
        self._turn_active = True
        self._bot_spoke_this_turn = False
        self._bot_speaking = False

    def _count_turn(self, *, interrupted: bool) -> None:
        self.turns += 1
        self._meters.record(m.TURNS, 1, {m.INTERRUPTED: str(interrupted).lower()})

    def _error(self, frame: ErrorFrame, source: object) -> None:
        processor = frame.processor or source
        error_type = _error_type(frame)
        self.errors[error_type] = self.errors.get(error_type, 0) + 1
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
