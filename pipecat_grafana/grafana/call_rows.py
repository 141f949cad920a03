"""The dashboard's rows about single calls.

The calls tables (from the call summary records in Loki), the chosen call's figures (from its
per-call series, or from its record), its traces, and its turns (from the turn records).
"""

import json
import re
from typing import Any
from urllib.parse import quote

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts, logql
from pipecat_grafana.grafana.fleet_rows import LATENCY_PANELS
from pipecat_grafana.grafana.panels import (
    CALL_COST,
    CALL_LINK,
    COST_BY,
    DATASOURCE_VARIABLES,
    LOKI,
    OUTCOME,
    SLOW_MS,
    TEMPO,
    TOKEN_TYPES_NOTE,
    Panel,
    Query,
    RecordField,
    Row,
    alert_level,
    instant,
    legend,
    total_by,
)
from pipecat_grafana.grafana.promql import (
    CALL_ID_VAR,
    aggregate,
    histogram_total,
    range_total,
    selector,
)
from pipecat_grafana.summary import OTHER_KEY

__all__ = ["CALL_ROWS"]

_PER_CALL_NOTE = (
    "Choose one call in the call_id variable (the 'Most expensive calls' table and the Calls "
    "row link to it). With All, the panel adds up every call of the range. Needs the "
    "exporter's call_id label (PIPECAT_GRAFANA_CALL_ID_LABEL, on by default); without it, or "
    "behind a fleet gateway, which adds up every call (docs/fleets.md), the next rows read "
    "the call's figures from its summary record, and its turns from their records, in Loki."
)
_RECORD_NOTE = (
    "From the call summary records in Loki (one per call, sent when it ends), so it works "
    "with the call_id label off too."
)
_RECORD_PER_CALL_NOTE = (
    f"{_RECORD_NOTE} Choose the call in the call_id variable, or click a call in the Calls "
    "row; with All, every call of the range."
)


def _field(key: str) -> str:
    """A data link's value of the row's ``key`` field, encoded for a URL."""
    return f"${{__data.fields.{key}:percentencode}}"


_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]+\}")


def _explore(source: str, query: dict[str, Any]) -> str:
    """A link to Explore running ``query`` on the dashboard's ``source`` data source.

    Explore reads its panes as JSON in the URL: the JSON is percent-encoded around the
    Grafana variables, which Grafana replaces (encoded, for the row's fields) when the link
    is followed.
    """
    uid = f"${{{DATASOURCE_VARIABLES[source]}}}"
    pane = {
        "datasource": uid,
        "queries": [{"refId": "A", "datasource": {"type": source, "uid": uid}, **query}],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    text = json.dumps({"call": pane}, separators=(",", ":"))
    encoded, last = [], 0
    for variable in _GRAFANA_VARIABLE.finditer(text):
        encoded += [quote(text[last : variable.start()], safe=""), variable.group()]
        last = variable.end()
    encoded.append(quote(text[last:], safe=""))
    return "/explore?schemaVersion=1&panes=" + "".join(encoded)


_TRACE_LINK = (
    "Trace in Tempo (with tracing on)",
    _explore(
        TEMPO,
        {
            "queryType": "traceql",
            "query": logql.conversation_traces(_field(logql.CALL_ID), regex=False),
        },
    ),
)
_RECORD_LINK = (
    "Summary record in Explore",
    _explore(
        LOKI,
        {
            "queryType": "range",
            "expr": logql.summary_of(_field(logql.SERVICE_STREAM_LABEL), _field(logql.CALL_ID)),
        },
    ),
)
_RECORD_LINKS = (_TRACE_LINK, _RECORD_LINK, CALL_LINK)
_TURN_LINK = (
    "Turn record in Explore",
    _explore(
        LOKI,
        {
            "queryType": "range",
            "expr": logql.turn_of(
                _field(logql.SERVICE_STREAM_LABEL), _field(logql.CALL_ID), _field(logql.TURN)
            ),
        },
    ),
)


_OUTCOME_KEY = logql.attribute(OUTCOME)
_CALL_FIELDS = (
    RecordField(logql.CALL_ID, "Call"),
    RecordField(logql.SERVICE_STREAM_LABEL, "Service"),
    RecordField(logql.STARTED_AT, "Started", kind="time"),
    RecordField(logql.DURATION, "Duration", "s", "number", decimals=1),
    RecordField(logql.COST, "Cost", "currencyUSD", "number", 4, CALL_COST),
    RecordField(logql.TURNS, "Turns", "short", "number"),
    RecordField(
        logql.TURN_LATENCY_P95,
        "Turn latency p95",
        "ms",
        "number",
        0,
        alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
    ),
    RecordField(logql.ERRORS, "Errors", "short", "number", thresholds=((1.0, "orange"),)),
    RecordField(logql.END_REASON, "End reason"),
    RecordField(_OUTCOME_KEY, "Outcome"),
)
"""The columns of the calls tables, from the call summary record."""
_NEWEST = (logql.STARTED_AT, True)
_CALLS_TABLE_NOTE = (
    "Click a call for its trace in Tempo, its summary record in Explore, or the per-call "
    "rows. Filter a column with the funnel in its header. Grafana fetches at most the newest "
    "1000 records (the Loki data source's line limit)"
)


def _calls_table(
    key: str, title: str, what: str, *stages: str, sort_by: tuple[tuple[str, bool], ...]
) -> Panel:
    """A table of calls from their summary records, filtered by ``stages``."""
    return Panel(
        key,
        title,
        "table",
        "short",
        f"{what} {_RECORD_NOTE} {_CALLS_TABLE_NOTE}.",
        (Query(logql.call_summaries(*stages)),),
        width=24,
        height=8,
        links=_RECORD_LINKS,
        source=LOKI,
        fields=_CALL_FIELDS,
        sort_by=sort_by,
    )


_CHOSEN_CALL = logql.matches(logql.CALL_ID, CALL_ID_VAR)

_TURN_FIELDS = (
    RecordField(logql.TURN, "Turn", "short", "number"),
    RecordField(logql.STARTED_AT, "Started", kind="time"),
    RecordField(
        logql.TURN_LATENCY,
        "Latency",
        "ms",
        "number",
        0,
        alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
        gauge=True,
    ),
    RecordField(logql.INTERRUPTED, "Interrupted", kind="boolean"),
    # Where the latency went, by Pipecat's own names; a column shows only where a turn of
    # the result has that contribution.
    *(
        RecordField(logql.CONTRIBUTION.format(key=key), key, "ms", "number", 0)
        for key in (*m.CONTRIBUTIONS, OTHER_KEY)
    ),
    RecordField(logql.TOOL_CALLS, "Tool calls", "short", "number"),
    RecordField(logql.TOOL_CALL_LIST, "Tools (status, duration)"),
    RecordField(logql.ERRORS, "Errors", "short", "number", thresholds=((1.0, "orange"),)),
    RecordField(logql.TURN_TEXTS[0], "Caller said"),
    RecordField(logql.TURN_TEXTS[1], "Bot said"),
    RecordField(logql.CALL_ID, "Call"),
    RecordField(logql.SERVICE_STREAM_LABEL, "Service"),
)
"""The columns of the turns table, from the turn record."""

CALL_ROWS: tuple[Row, ...] = (
    Row(
        "Calls",
        (
            _calls_table(
                "calls-table-newest",
                "Newest calls",
                "The calls that ended during the dashboard's range, the last to start first.",
                sort_by=(_NEWEST,),
            ),
            _calls_table(
                "calls-table-most-expensive",
                "Most expensive calls (summary records)",
                "The calls that cost more than the 'Calls costing over' variable (USD; 0 lists "
                "every priced call), most expensive first.",
                logql.above(logql.COST, logql.MIN_COST_VAR),
                sort_by=((logql.COST, True),),
            ),
            _calls_table(
                "calls-table-slowest",
                "Slowest calls",
                "The calls whose turn latency p95 (the caller's wait from falling silent to the "
                "bot's first audio) is over the 'Calls slower than' variable (ms; 0 lists every "
                "call with a turn), slowest first.",
                logql.above(logql.TURN_LATENCY_P95, logql.MIN_TURN_LATENCY_VAR),
                sort_by=((logql.TURN_LATENCY_P95, True),),
            ),
            _calls_table(
                "calls-table-by-outcome",
                "Calls grouped by outcome",
                f"The calls grouped by the {OUTCOME} the application set (empty: never set), "
                "the last to start first within each.",
                sort_by=(_NEWEST, (_OUTCOME_KEY, False)),
            ),
        ),
    ),
    Row(
        "Per call",
        (
            Panel(
                "call-duration",
                "Call duration",
                "stat",
                "s",
                f"Length of the chosen call, once it has ended. {_PER_CALL_NOTE}",
                (instant(histogram_total(m.SESSION_DURATION, "sum")),),
                width=4,
            ),
            Panel(
                "call-cost",
                "Call cost",
                "stat",
                "currencyUSD",
                f"Estimated cost of the chosen call. {_PER_CALL_NOTE}",
                (instant(range_total(m.COST)),),
                thresholds=CALL_COST,
                width=4,
                decimals=4,
            ),
            Panel(
                "call-tts-characters",
                "Call TTS characters",
                "stat",
                "short",
                f"Characters the chosen call sent to text-to-speech. {_PER_CALL_NOTE}",
                (instant(range_total(m.TTS_CHARACTERS)),),
                width=4,
            ),
            Panel(
                "call-stt-audio",
                "Call STT audio",
                "stat",
                "s",
                f"Audio the chosen call sent to speech-to-text. {_PER_CALL_NOTE}",
                (instant(range_total(m.STT_AUDIO)),),
                width=4,
                decimals=1,
            ),
            Panel(
                "call-cost-by-service",
                "Call cost by service",
                "bargauge",
                "currencyUSD",
                f"Estimated cost of the chosen call by service type and model. {_PER_CALL_NOTE}",
                (total_by(m.COST, COST_BY),),
                width=8,
                height=6,
                decimals=4,
            ),
            Panel(
                "call-tokens",
                "Call LLM tokens",
                "bargauge",
                "short",
                f"LLM tokens of the chosen call by type. {TOKEN_TYPES_NOTE} {_PER_CALL_NOTE}",
                (total_by(m.LLM_TOKENS, (m.TOKEN_TYPE,)),),
                width=8,
                height=6,
            ),
            Panel(
                "call-cost-over-time",
                "Call cost over time",
                "timeseries",
                "currencyUSD",
                "Cumulative estimated cost of the chosen call as it progresses, by service "
                f"type. {_PER_CALL_NOTE}",
                (
                    Query(
                        aggregate("sum", (m.SERVICE_TYPE,), selector(m.COST)),
                        legend((m.SERVICE_TYPE,)),
                        (m.SERVICE_TYPE,),
                    ),
                ),
                width=16,
                height=6,
            ),
        ),
    ),
    Row(
        "Per call, from its summary record",
        (
            Panel(
                "call-record-figures",
                "Call figures",
                "stat",
                "short",
                f"The chosen call's length, estimated cost, turns, barge-ins, errors and tool "
                f"calls (with All, added up). {_RECORD_PER_CALL_NOTE}",
                (Query(logql.call_summaries(_CHOSEN_CALL)),),
                base_color="blue",
                width=16,
                height=5,
                source=LOKI,
                fields=(
                    RecordField(logql.DURATION, "Duration", "s", "number", decimals=1),
                    RecordField(logql.COST, "Cost", "currencyUSD", "number", 4, CALL_COST),
                    RecordField(logql.TURNS, "Turns", "short", "number"),
                    RecordField(logql.INTERRUPTIONS, "Barge-ins", "short", "number"),
                    RecordField(logql.ERRORS, "Errors", "short", "number"),
                    RecordField(logql.FUNCTION_CALLS, "Tool calls", "short", "number"),
                ),
                reduce="sum",
            ),
            Panel(
                "call-record-turn-latency",
                "Call turn latency",
                "stat",
                "ms",
                "The chosen call's turn latency p50 and p95 (the caller's wait from falling "
                f"silent to the bot's first audio); with All, the highest of the range's calls. "
                f"{_RECORD_NOTE}",
                (Query(logql.call_summaries(_CHOSEN_CALL)),),
                thresholds=alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
                width=8,
                height=5,
                source=LOKI,
                fields=(
                    RecordField(logql.TURN_LATENCY_P50, "p50", "ms", "number", 0),
                    RecordField(logql.TURN_LATENCY_P95, "p95", "ms", "number", 0),
                ),
                reduce="max",
            ),
            Panel(
                "call-record-latency",
                "Call latency p95",
                "stat",
                "ms",
                "p95 of each latency metric over the whole of the chosen call, its slowest "
                "processor's (the call's summary, a percentile within 1 %, not a bucket "
                "interpolation; each processor's is in the summary). With All, the highest of "
                f"the range's calls. {_RECORD_NOTE}",
                (Query(logql.call_summaries(_CHOSEN_CALL)),),
                thresholds=SLOW_MS,
                width=24,
                height=5,
                source=LOKI,
                fields=tuple(
                    RecordField(
                        logql.LATENCY_P95.format(metric=latency.spec.name.split(".")[1]),
                        latency.title.removesuffix(" p95").removesuffix(" by processor"),
                        "ms",
                        "number",
                        0,
                    )
                    for latency in LATENCY_PANELS
                ),
                reduce="max",
            ),
            Panel(
                "call-record",
                "Call summary record",
                "table",
                "short",
                f"The chosen call's summary record, with its model. {_RECORD_PER_CALL_NOTE} "
                "Click it for its trace or the record in Explore.",
                (Query(logql.call_summaries(_CHOSEN_CALL)),),
                width=24,
                height=5,
                links=_RECORD_LINKS[:2],
                source=LOKI,
                fields=(*_CALL_FIELDS, RecordField(logql.LLM_MODEL, "LLM")),
                sort_by=(_NEWEST,),
            ),
            Panel(
                "call-traces",
                "Call traces",
                "table",
                "short",
                "The traces of the chosen call (with All, of the latest calls): Pipecat's "
                f"conversation span, whose {logql.CONVERSATION_ID} is the call's ID, with its "
                "turns and its STT, LLM and TTS spans. Click a trace to open it. Needs "
                "Pipecat's tracing on and traces sent to Tempo.",
                (Query(logql.conversation_traces()),),
                width=24,
                height=6,
                source=TEMPO,
            ),
        ),
    ),
    Row(
        "Per call, turn by turn",
        (
            Panel(
                "call-turns",
                "Call turns",
                "table",
                "short",
                "The chosen call's turns, one row each from its turn record in Loki (sent when "
                "the turn ends), in the order the caller spoke: the latency (the caller's wait "
                "from falling silent to the bot's first audio; the longest bar is the slowest "
                "turn, orange from half the turn latency alert's level, red at it), whether the "
                "caller cut in, where the latency went by Pipecat's contribution names (a "
                "column per contribution measured), tool calls and errors, and, with "
                "PIPECAT_GRAFANA_TRANSCRIPTS on, what the caller and the bot said (empty "
                "otherwise). With All, every call of the range, call by call. Click a turn for "
                "its record in Explore (with its TTFBs and errors by type), the call's summary "
                "record or its trace.",
                (Query(logql.turn_records(_CHOSEN_CALL)),),
                width=24,
                height=10,
                links=(_TURN_LINK, _RECORD_LINK, _TRACE_LINK),
                source=LOKI,
                fields=_TURN_FIELDS,
                # The last sort decides: call by call, each call's turns in order.
                sort_by=((logql.TURN, False), (logql.CALL_ID, False)),
            ),
        ),
    ),
)
