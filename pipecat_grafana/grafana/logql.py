"""The LogQL and TraceQL of the dashboard's calls panels, built from the call's log records.

At each call's end the exporter sends one OTLP log record, the call summary
(``CallSummary.log_attributes()``), and at each turn's end one turn record
(``TurnRecord.log_attributes()``). Loki's OTLP ingestion makes the resource's
``service.name`` the stream label ``service_name`` and the record's attributes structured
metadata, which LogQL filters on without a parser: ``| cost_usd > 0.05``. These panels read
calls from those records, so they work with the metrics' ``call_id`` label switched off, at
any number of calls. When tracing is on, Pipecat's ``conversation`` span carries the call's ID
as ``conversation.id``, which TraceQL finds.

The queries keep to a small, standard subset: a stream selector, then label filters
``| key="value"``, ``| key=~"regex"`` and ``| key > number``; no parser stage, no line
filter. One kind of metric query, over the turn records only: a range aggregation of one
unwrapped key, grouped by the turn's number (``over_turns``). TraceQL: one span attribute
compared with a string. The keys named here are the records'; the tests compare them with
the keys a real ``CallSummary`` and a real ``TurnRecord`` produce.

Loki refuses a stream selector whose every matcher matches the empty string. The service
variable's "All" is ``.*`` (it also serves PromQL, where a regex must match a missing
label), so the panels' selector adds ``service_name!=""``, which never does.
"""

from pipecat_grafana.grafana.promql import CALL_ID_VAR, RANGE, SERVICE_VAR
from pipecat_grafana.summary import EVENT_NAME, EVENT_NAME_KEY
from pipecat_grafana.turns import TURN_EVENT_NAME

__all__ = [
    "CALL_ID",
    "CONVERSATION_ID",
    "CONTRIBUTION",
    "COST",
    "DURATION",
    "END_REASON",
    "ERRORS",
    "FIRST_TURNS",
    "FUNCTION_CALLS",
    "INTERRUPTED",
    "INTERRUPTIONS",
    "LLM_MODEL",
    "MIN_COST_VAR",
    "MIN_TURN_LATENCY_VAR",
    "SERVICE_STREAM_LABEL",
    "STARTED_AT",
    "SUMMARIES",
    "TOOL_CALLS",
    "TOOL_CALL_LIST",
    "TURN",
    "TURNS",
    "TURN_LATENCY",
    "TURN_LATENCY_P50",
    "TURN_LATENCY_P95",
    "TURN_RECORDS",
    "TURN_TEXTS",
    "above",
    "at_most",
    "attribute",
    "call_summaries",
    "conversation_traces",
    "equal",
    "matches",
    "over_turns",
    "summary_of",
    "turn_of",
    "turn_records",
]

SERVICE_STREAM_LABEL = "service_name"
"""The stream label Loki's OTLP ingestion makes of the resource's ``service.name``."""

# Keys of the call summary record that the panels show or filter on.
CALL_ID = "call_id"
STARTED_AT = "started_at"
DURATION = "duration_seconds"
COST = "cost_usd"
TURNS = "turns"
INTERRUPTIONS = "interruptions"
TURN_LATENCY_P50 = "turn_latency_p50_ms"
TURN_LATENCY_P95 = "turn_latency_p95_ms"
ERRORS = "errors"
FUNCTION_CALLS = "function_calls"
END_REASON = "end_reason"
LATENCY_P95 = "{metric}_p95_ms"
"""The record's p95 of a latency metric (``ttfb``, ...), its slowest processor's."""
LLM_MODEL = "llm_model"

# Keys of the turn record (``TURN_LOG_KEYS``) that the panels show or filter on; ``call_id``,
# ``started_at`` and ``errors`` are named as in the summary.
TURN = "turn"
TURN_LATENCY = "latency_ms"
INTERRUPTED = "interrupted"
TOOL_CALLS = "tool_calls"
TOOL_CALL_LIST = "tool_call_list"
CONTRIBUTION = "contribution_{key}_ms"
"""Milliseconds of a turn's latency spent on one of Pipecat's contributions (``llm_inference``)."""
TURN_TEXTS = ("user_text", "bot_text")
"""The turn's words, present only with transcripts on."""

FIRST_TURNS = 9
"""The turns the fleet's latency-by-turn panel reads: 9 series per percentile at most, and
single digits, so that series ordered by their label's text are in turn order too."""

CONVERSATION_ID = "conversation.id"
"""The attribute of Pipecat's ``conversation`` span holding the call's ID."""

# The dashboard's thresholds for the calls tables (textbox variables).
MIN_COST_VAR = "$calls_min_cost_usd"
MIN_TURN_LATENCY_VAR = "$calls_min_turn_latency_ms"


def attribute(name: str) -> str:
    """The record's key for the call attribute ``name``: ``attribute_outcome``."""
    return f"attribute_{name}"


def equal(key: str, value: str) -> str:
    """A label filter stage: ``| key="value"``."""
    return f'| {key}="{value}"'


def matches(key: str, regex: str) -> str:
    """A regex label filter stage, ``| key=~"regex"``: Grafana's "All" (``.*``) passes all."""
    return f'| {key}=~"{regex}"'


def above(key: str, number: str) -> str:
    """A numeric label filter stage: ``| key > number`` (a record without ``key`` fails it)."""
    return f"| {key} > {number}"


def at_most(key: str, number: str) -> str:
    """A numeric label filter stage: ``| key <= number`` (a record without ``key`` fails it)."""
    return f"| {key} <= {number}"


def _records(*matchers: str, event: str = EVENT_NAME) -> str:
    return f"{{{', '.join(matchers)}}} {equal(EVENT_NAME_KEY, event)}"


_CHOSEN_SERVICES = (f'{SERVICE_STREAM_LABEL}=~"{SERVICE_VAR}"', f'{SERVICE_STREAM_LABEL}!=""')
SUMMARIES = _records(*_CHOSEN_SERVICES)
"""The call summary records of the chosen services."""
TURN_RECORDS = _records(*_CHOSEN_SERVICES, event=TURN_EVENT_NAME)
"""The turn records of the chosen services."""


def call_summaries(*stages: str) -> str:
    """The chosen services' call summary records, through ``stages`` (``equal``, ...)."""
    return " ".join((SUMMARIES, *stages))


def summary_of(service: str, call_id: str) -> str:
    """The summary record of one call of one service (for a link to Explore)."""
    selector = _records(f'{SERVICE_STREAM_LABEL}="{service}"')
    return f"{selector} {equal(CALL_ID, call_id)}"


def turn_records(*stages: str) -> str:
    """The chosen services' turn records, through ``stages`` (``equal``, ...)."""
    return " ".join((TURN_RECORDS, *stages))


def turn_of(service: str, call_id: str, turn: str) -> str:
    """The record of one turn of one call of one service (for a link to Explore)."""
    selector = _records(f'{SERVICE_STREAM_LABEL}="{service}"', event=TURN_EVENT_NAME)
    return f"{selector} {equal(CALL_ID, call_id)} | {TURN} == {turn}"


def over_turns(
    function: str, key: str, *stages: str, quantile: float | None = None, window: str = RANGE
) -> str:
    """A metric query over the turn records: ``function`` of ``key`` per turn number.

    ``avg_over_time(<turn records> | stages | key >= 0 | unwrap key [window]) by (turn)``:
    a record without ``key`` (not measured) is left out rather than read as an error.

    Args:
        function: A range aggregation of unwrapped values: ``avg_over_time``,
            ``quantile_over_time``, ``max_over_time``, ...
        key: The turn record's numeric key.
        *stages: Label filter stages applied first (``at_most(TURN, ...)``).
        quantile: ``quantile_over_time``'s quantile, as a fraction.
        window: The range read, by default the dashboard's.
    """
    if (quantile is not None) != (function == "quantile_over_time"):
        # LogQL takes a quantile for quantile_over_time and refuses one for the others.
        raise ValueError(f"{function} with quantile={quantile!r}")
    records = turn_records(*stages, f"| {key} >= 0", f"| unwrap {key} [{window}]")
    head = f"{quantile:g}, " if quantile is not None else ""
    return f"{function}({head}{records}) by ({TURN})"


def conversation_traces(call_id: str = CALL_ID_VAR, *, regex: bool = True) -> str:
    """TraceQL for the traces of a call: ``{ span.conversation.id =~ "$call_id" }``.

    Args:
        call_id: The call's ID, or a Grafana variable.
        regex: Match as a regex (so that the call variable's "All" lists every call's trace)
            rather than equal to ``call_id``.
    """
    return f'{{ span.{CONVERSATION_ID} {"=~" if regex else "="} "{call_id}" }}'
