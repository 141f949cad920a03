"""One log record per turn: which turn of a call was slow, and why, from Loki alone.

A call summary says the call's turn latency was p95 1.4 s; the turn record says which turn
that was, where its time went (Pipecat's latency breakdown), which services were slow in it,
its tool calls and errors, and, only when the application asks for them, its words. Each
record leaves the recorder when its turn ends, through the summaries' logs pipeline, so a
call holds one turn's state at a time however long it runs.

The words are off by default: a call's text is collected only with ``transcripts`` on, and
passes the application's ``redact`` before it leaves the process.
"""

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from pipecat_grafana.notices import error_once
from pipecat_grafana.summary import EVENT_NAME_KEY, MAX_KEYS_PER_COUNT, add_counts

TURN_EVENT_NAME = "pipecat_turn"
"""The ``event_name`` of every turn record: ``{service_name="..."} | event_name =
"pipecat_turn"`` selects them in Loki."""

MAX_TEXT_CHARS = 2000
"""Characters kept of each text (``user_text``, ``bot_text``) of a turn; the rest is cut."""

MAX_TOOL_CALLS = 16
"""Tool calls of one turn listed in ``tool_call_list``; ``tool_calls`` counts them all."""

Redactor = Callable[[str], str]
"""What the application applies to every text before it leaves the process."""


class ToolCall(BaseModel):
    """One finished tool call of a turn."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The function's name."""
    duration_ms: float
    """Milliseconds from the call's start to its result."""
    status: str
    """``ok``, ``error`` or ``cancelled``."""


class TurnRecord(BaseModel):
    """One turn of a call: the caller spoke, the bot answered (or was talked over)."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    """The call's ID, as its summary carries it."""
    turn: int
    """The turn's number in the call, from 1, in the order the caller spoke."""
    interrupted: bool
    """Whether the caller spoke over the bot's answer (a barge-in ended the turn)."""
    started_at: datetime | None = None
    """When the caller started speaking (UTC)."""
    latency_ms: float | None = None
    """Milliseconds from the caller falling silent to the bot's first audio, as Pipecat's
    ``UserBotLatencyObserver`` measured it; ``None`` when it measured none."""
    contributions_ms: dict[str, float] = Field(default_factory=dict)
    """Where the latency went, in milliseconds, by Pipecat's contribution key
    (``llm_inference``, ``speech_synthesis``, ...); empty without ``enable_metrics``."""
    ttfb_ms: dict[str, float] = Field(default_factory=dict)
    """The slowest time to first byte of the turn by service type (``llm``, ``stt``,
    ``tts``), in milliseconds."""
    tool_calls: int = 0
    """Tool calls that finished in the turn."""
    tool_call_list: list[ToolCall] = Field(default_factory=list)
    """The first ``MAX_TOOL_CALLS`` of them."""
    errors: dict[str, int] = Field(default_factory=dict)
    """ErrorFrames of the turn by error type (``rate_limit``, ``timeout``, ``other``)."""
    user_text: str | None = None
    """What the caller said (Pipecat's final transcriptions), redacted; only with
    ``transcripts`` on."""
    bot_text: str | None = None
    """What the text-to-speech service spoke, redacted, up to where the caller cut in; only
    with ``transcripts`` on."""

    def log_body(self) -> str:
        """One line a person can read in a log list (never the words)."""
        latency = "latency not measured" if self.latency_ms is None else f"{self.latency_ms:.0f} ms"
        return f"turn {self.turn} of call {self.call_id}: {latency}" + (
            ", interrupted" if self.interrupted else ""
        )

    def log_attributes(self) -> dict[str, str | int | float | bool]:
        """The turn's figures as the attributes of its OTLP log record.

        Core keys first; the keys named after Pipecat's contributions, service types, error
        types and tools are bounded (``MAX_KEYS_PER_COUNT`` each) and never collide, as in
        the call summary. A figure not measured is absent, never zero.
        """
        attributes: dict[str, str | int | float | bool] = {
            EVENT_NAME_KEY: TURN_EVENT_NAME,
            "call_id": self.call_id,
            "turn": self.turn,
            "interrupted": self.interrupted,
            "tool_calls": self.tool_calls,
            "errors": sum(self.errors.values()),
        }
        if self.started_at is not None:
            attributes["started_at"] = self.started_at.isoformat()
        if self.latency_ms is not None:
            attributes["latency_ms"] = round(self.latency_ms, 1)
        if self.tool_call_list:
            attributes["tool_call_list"] = ", ".join(
                f"{call.name} ({call.status}, {call.duration_ms:.0f} ms)"
                for call in self.tool_call_list
            )
        if self.user_text is not None:
            attributes["user_text"] = self.user_text
        if self.bot_text is not None:
            attributes["bot_text"] = self.bot_text
        rounded = {key: round(ms, 1) for key, ms in self.contributions_ms.items()}
        add_counts(attributes, "contribution", rounded, "_ms")
        add_counts(attributes, "ttfb", {k: round(v, 1) for k, v in self.ttfb_ms.items()}, "_ms")
        add_counts(attributes, "errors", self.errors)
        return attributes


TURN_LOG_KEYS = {
    EVENT_NAME_KEY: f"always {TURN_EVENT_NAME!r}: selects turn records among other logs",
    "call_id": "the call's ID, as in its summary record",
    "turn": "the turn's number in the call, from 1, in the order the caller spoke",
    "interrupted": "true when the caller spoke over the bot's answer",
    "started_at": "when the caller started speaking, ISO 8601 UTC",
    "latency_ms": "caller fell silent to the bot's first audio (Pipecat's "
    "UserBotLatencyObserver); absent when not measured",
    "contribution_<key>_ms": "where that latency went, by Pipecat's contribution key "
    "(endpointing_wait, transcription, turn_detection, llm_inference, speech_synthesis, ...); "
    f"the {MAX_KEYS_PER_COUNT} largest, the rest in contribution_other_ms",
    "ttfb_<service_type>_ms": "the turn's slowest time to first byte of the llm, stt or tts",
    "tool_calls": "tool calls finished in the turn; tool_call_list names the first "
    f"{MAX_TOOL_CALLS}: name (status, duration)",
    "errors": "errors in the turn; errors_<error_type> by type (rate_limit, timeout, other)",
    "user_text": f"only with transcripts on: what the caller said, redacted, at most "
    f"{MAX_TEXT_CHARS} characters",
    "bot_text": "only with transcripts on: what the bot spoke, redacted, cut where the caller "
    f"cut in, at most {MAX_TEXT_CHARS} characters",
}
"""Every attribute key of the turn log record, with what it holds."""


def redacted(text: str, redact: Redactor | None) -> str | None:
    """``text`` as it may leave the process: redacted, then cut to ``MAX_TEXT_CHARS``.

    A redactor that raises, or returns something other than text, drops the text (``None``)
    and is said once: the call goes on.
    """
    if redact is not None:
        try:
            text = redact(text)
        except Exception as e:
            error_once(
                f"redact:{type(e).__name__}",
                f"the redact= function raised {type(e).__name__}; the text "
                "was dropped from the turn record, the call goes on (logged once)",
            )
            return None
        if not isinstance(text, str):
            error_once(
                "redact:type",
                f"the redact= function returned {type(text).__name__}, not "
                "str; the text was dropped from the turn record (logged once)",
            )
            return None
    return text[:MAX_TEXT_CHARS]
