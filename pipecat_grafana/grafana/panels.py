"""What the dashboard shows: its rows of panels, a table built from the metric contract.

Each panel names its data source, its queries (built by ``promql`` from the instruments, or by
``logql`` from the call summary record), its unit, its thresholds and what it shows;
``dashboard`` turns the table into Grafana's JSON. The thresholds of the latency, error and
cost panels are the alert rules' default levels, so that a panel's red line is where an alert
fires.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts, logql
from pipecat_grafana.grafana.promql import (
    CALL_ID_VAR,
    RANGE_SECONDS,
    RATE_INTERVAL,
    aggregate,
    histogram_quantile,
    quantile,
    range_total,
    rate,
    selector,
)
from pipecat_grafana.instruments import InstrumentSpec

__all__ = [
    "CALLS_ENDED",
    "DATASOURCE_VARIABLES",
    "LATENCY_PANELS",
    "LOKI",
    "LatencyPanel",
    "PROMETHEUS",
    "Panel",
    "PanelQuery",
    "Query",
    "ROWS",
    "RecordField",
    "Row",
    "TEMPO",
    "panel_queries",
]

# The data source types of the panels, and the dashboard variable choosing each.
PROMETHEUS = "prometheus"
LOKI = "loki"
TEMPO = "tempo"
DATASOURCE_VARIABLES = {PROMETHEUS: "datasource", LOKI: "loki", TEMPO: "tempo"}


@dataclass(frozen=True)
class Query:
    """One query of a panel.

    Parameters:
        expr: The query, with Grafana variables: PromQL, LogQL or TraceQL (the panel's data
            source says which).
        legend: Grafana's legend format.
        labels: The labels every result series carries (its shape); ``call_id`` is absent
            when the exporter runs with the label off.
        instant: An instant query (stat, bar gauge, table) rather than a range query.
        table: Return the result as a table (one row per series).
        exemplars: Show the series' exemplars (latency histograms: each links a point to
            its call and, with tracing on, to its trace).
    """

    expr: str
    legend: str = ""
    labels: tuple[str, ...] = ()
    instant: bool = False
    table: bool = False
    exemplars: bool = False


@dataclass(frozen=True)
class RecordField:
    """A key of the call summary record, shown by a Loki panel as a column or a stat.

    Loki returns every structured metadata value as text; ``kind`` says what to make of it.

    Parameters:
        key: The record's key (``CallSummary.log_attributes()``), or the stream label
            ``service_name``.
        title: The column's or the stat's name.
        unit: Grafana's unit id; empty for text and times.
        kind: ``number``, ``time`` (ISO 8601) or ``string``.
        decimals: Decimals to show, when Grafana's choice is not good.
        thresholds: ``(value, color)`` steps that color the value, above the panel's base
            color.
    """

    key: str
    title: str
    unit: str = ""
    kind: str = "string"
    decimals: int | None = None
    thresholds: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Panel:
    """One panel of the dashboard.

    Parameters:
        key: A stable identifier (tests and links use it).
        title: The panel's title.
        kind: Grafana's panel type: ``stat``, ``timeseries``, ``bargauge`` or ``table``.
        unit: Grafana's unit id (``ms``, ``s``, ``currencyUSD``, ``percentunit``, ...).
        description: What the panel shows and how to read it (the panel's ⓘ).
        queries: Its queries.
        thresholds: ``(value, color)`` steps above the base color.
        base_color: The color below the first threshold.
        width: Grid width (of 24).
        height: Grid height.
        time_from: A relative time overriding the dashboard's (``now/d``: today so far).
        decimals: Decimals to show, when Grafana's choice is not good.
        links: Data links (``title``, ``url``).
        source: The data source type: ``prometheus``, ``loki`` or ``tempo``.
        fields: Loki panels: the record's keys shown, in order (the table's columns, or the
            stat's values).
        sort_by: Loki tables: ``(key, descending)`` sorts, applied in order (the last one
            decides; rows it finds equal keep the order of the one before).
        reduce: Loki stats: how the values of several records (the call variable's All)
            are combined: ``sum`` or ``max``.
    """

    key: str
    title: str
    kind: str
    unit: str
    description: str
    queries: tuple[Query, ...]
    thresholds: tuple[tuple[float, str], ...] = ()
    base_color: str = "green"
    width: int = 6
    height: int = 8
    time_from: str | None = None
    decimals: int | None = None
    links: tuple[tuple[str, str], ...] = ()
    source: str = PROMETHEUS
    fields: tuple[RecordField, ...] = ()
    sort_by: tuple[tuple[str, bool], ...] = ()
    reduce: str = "lastNotNull"

    def lettered_queries(self) -> Iterator[tuple[str, Query]]:
        """Its queries with their ``refId`` letters: ``A``, ``B``, ..."""
        for index, query in enumerate(self.queries):
            yield chr(ord("A") + index), query


@dataclass(frozen=True)
class Row:
    """A row of panels."""

    title: str
    panels: tuple[Panel, ...]


def _instant(expr: str, legend: str = "", labels: tuple[str, ...] = ()) -> Query:
    return Query(expr, legend, labels, instant=True)


def _legend(labels: tuple[str, ...], *words: str) -> str:
    """A legend naming each series by its ``labels``: ``{{model}} {{token_type}}``."""
    return " ".join((*(f"{{{{{label}}}}}" for label in labels), *words))


def _total_by(spec: InstrumentSpec, by: tuple[str, ...]) -> Query:
    """How much ``spec`` grew during the dashboard's range, a series per value of ``by``."""
    return _instant(range_total(spec, by), _legend(by), by)


def _rate_by(spec: InstrumentSpec, by: tuple[str, ...], per_seconds: int = 60) -> Query:
    """``spec`` per minute (or per ``per_seconds``) over ``$__rate_interval``, by ``by``."""
    return Query(f"{rate(spec, by)} * {per_seconds}", _legend(by), by)


def _percentiles(
    spec: InstrumentSpec, quantiles: tuple[float, ...], by: tuple[str, ...] = (m.PROCESSOR,)
) -> tuple[Query, ...]:
    """Percentiles of a histogram over ``$__rate_interval``, with its exemplars if it has them."""
    return tuple(
        Query(quantile(q, spec, by), _legend(by, f"p{q * 100:g}"), by, exemplars=spec.exemplars)
        for q in quantiles
    )


def _alert_level(level: float) -> tuple[tuple[float, str], ...]:
    """Thresholds for an alert's level: orange from half of it, red at it."""
    return ((level / 2, "orange"), (level, "red"))


_SLOW_MS = ((1000.0, "orange"), (2000.0, "red"))
"""Latency a voice team would flag where no alert has a level."""
_CALL_COST = ((0.25, "orange"), (1.0, "red"))
"""A call's cost: levels to adjust to the budget."""
_DAY_COST = (
    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 12, "orange"),
    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 24, "red"),
)
"""A day's cost: the alert rules' hourly budget, half the day and all day."""


@dataclass(frozen=True)
class LatencyPanel:
    """A latency histogram's panel: percentiles per processor over ``$__rate_interval``.

    Parameters:
        key: The panel's key, after ``latency-``.
        spec: The histogram.
        title: The panel's title.
        quantiles: The percentiles shown, as fractions.
        thresholds: ``(ms, color)`` steps: the alert rules' defaults where an alert exists,
            levels a voice team would flag elsewhere.
        width: Grid width (of 24).
        what: What the histogram measures, for the description.
    """

    key: str
    spec: InstrumentSpec
    title: str
    quantiles: tuple[float, ...]
    thresholds: tuple[tuple[float, str], ...]
    width: int
    what: str

    def panel(self) -> Panel:
        """The panel."""
        percentiles = "/".join(f"p{q * 100:g}" for q in self.quantiles)
        return Panel(
            key=f"latency-{self.key}",
            title=self.title,
            kind="timeseries",
            unit="ms",
            description=(
                f"{self.what} {percentiles} per processor over {RATE_INTERVAL}, from "
                f"`{self.spec.prometheus_name}_bucket` (interpolated within histogram "
                "buckets). Dashed lines: the thresholds; red is the alert rule's level where "
                f"there is one. {_EXEMPLARS_NOTE}"
            ),
            queries=_percentiles(self.spec, self.quantiles),
            thresholds=self.thresholds,
            width=self.width,
        )


LATENCY_PANELS = (
    LatencyPanel(
        "ttfb",
        m.TTFB,
        "TTFB by processor",
        (0.5, 0.95, 0.99),
        _alert_level(alerts.DEFAULT_TTFB_P95_MS),
        12,
        "Time to first byte of each service's response (STT: from the end of speech to the "
        "final transcript; LLM: request to first chunk; TTS: request to first audio).",
    ),
    LatencyPanel(
        "ttfa",
        m.TTFA,
        "Time to first audio (TTS) p95",
        (0.95,),
        _alert_level(alerts.DEFAULT_TTFA_P95_MS),
        6,
        "TTS time to first audible audio: TTFB plus the leading silence the TTS pads its "
        "audio with.",
    ),
    LatencyPanel(
        "ttfat",
        m.TTFAT,
        "Time to first answer token (LLM) p95",
        (0.95,),
        _SLOW_MS,
        6,
        "LLM time to the first token of the answer: TTFB plus thinking time.",
    ),
    LatencyPanel(
        "processing",
        m.PROCESSING,
        "Processing time by processor",
        (0.5, 0.95),
        _SLOW_MS,
        8,
        "How long each pipeline stage takes to process its input (LLM: the whole "
        "streamed answer; TTS: one sentence).",
    ),
    LatencyPanel(
        "text-aggregation",
        m.TEXT_AGGREGATION,
        "Text aggregation p95",
        (0.95,),
        ((300.0, "orange"), (600.0, "red")),
        8,
        "Time from the first LLM token to the first complete sentence sent to TTS.",
    ),
    LatencyPanel(
        "turn-detection",
        m.TURN_DETECTION,
        "Turn detection p95",
        (0.95,),
        ((200.0, "orange"), (500.0, "red")),
        8,
        "Turn detection time from the user's silence to the end-of-turn decision.",
    ),
)


_TOKENS_BY = (m.MODEL, m.TOKEN_TYPE)
_TOKEN_TYPES_NOTE = (
    "Token types overlap: prompt and completion are totals; cache_read, cache_creation and "
    "input_audio are parts of prompt; reasoning and output_audio are parts of completion. "
    "Never add them all up."
)
_COST_BY = (m.SERVICE_TYPE, m.MODEL)
CALLS_ENDED = (m.SESSION_DURATION, "_count")
"""Calls that ended: the session duration histogram's count (per call, unlike ``CALLS``)."""
_ENDED = range_total(CALLS_ENDED[0], suffix=CALLS_ENDED[1])
_ACTIVE = f"sum({selector(m.CALLS_ACTIVE)})"
_EXACT = (
    "Totals over the dashboard's range use max_over_time - min_over_time per series, exact "
    "for calls that start and end inside the range."
)
_PER_CALL_NOTE = (
    "Choose one call in the call_id variable (the 'Most expensive calls' table and the Calls "
    "row link to it). With All, the panel adds up every call of the range. Needs the "
    "exporter's call_id label (PIPECAT_GRAFANA_CALL_ID_LABEL, on by default); without it, the "
    "next row reads the call's figures from its summary record."
)
_RECORD_NOTE = (
    "From the call summary records in Loki (one per call, sent when it ends), so it works "
    "with the call_id label off too."
)
_RECORD_PER_CALL_NOTE = (
    f"{_RECORD_NOTE} Choose the call in the call_id variable, or click a call in the Calls "
    "row; with All, every call of the range."
)
_EXEMPLARS_NOTE = (
    "Dots: exemplars, measurements with the call_id they belong to (and, with tracing on, "
    "a link to their trace)."
)
_OUTCOME = "outcome"
"""The call attribute the conversation panels read: the application declares it with
``GrafanaMetricsExporter(call_attributes={"outcome": [...]})`` and sets it per call."""
_RESOLVED = "resolved"
_ERRORS_BY_SERVICE = (m.SERVICE_TYPE, m.PROCESSOR)
_FUNCTION_CALLS_BY = (m.FUNCTION, m.STATUS)


def _per_call(total: str) -> str:
    """A range total divided by the calls that ended in the range."""
    return f"{total} / {_ENDED}"


def _or_zero(expr: str, like: str) -> str:
    """``expr``, or 0 where it has no series but ``like`` has.

    A counter never incremented is never exported: none counted is zero, not "No data".
    """
    return f"({expr} or 0 * {like})"


def _share(part: str, whole: str) -> str:
    """``part / whole`` of two range totals; 0 when nothing of ``whole`` is ``part``."""
    return f"{_or_zero(part, whole)} / {whole}"


_KEPT_VARIABLES = (
    *DATASOURCE_VARIABLES.values(),
    "service_label",
    "service",
    m.MODEL,
    logql.MIN_COST_VAR.lstrip("$"),
    logql.MIN_TURN_LATENCY_VAR.lstrip("$"),
)
"""The dashboard's variables but the call: a link to another call keeps them."""
_CALL_LINK = (
    "Show this call",
    # This dashboard, whatever UID it was imported under, with the call chosen and the
    # other filters and the time range kept.
    f"/d/${{__dashboard.uid}}/?var-{m.CALL_ID}=${{__data.fields.{m.CALL_ID}}}&"
    + "&".join(f"${{{name}:queryparam}}" for name in _KEPT_VARIABLES)
    + "&${__url_time_range}",
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
_RECORD_LINKS = (_TRACE_LINK, _RECORD_LINK, _CALL_LINK)


_OUTCOME_KEY = logql.attribute(_OUTCOME)
_CALL_FIELDS = (
    RecordField(logql.CALL_ID, "Call"),
    RecordField(logql.SERVICE_STREAM_LABEL, "Service"),
    RecordField(logql.STARTED_AT, "Started", kind="time"),
    RecordField(logql.DURATION, "Duration", "s", "number", decimals=1),
    RecordField(logql.COST, "Cost", "currencyUSD", "number", 4, _CALL_COST),
    RecordField(logql.TURNS, "Turns", "short", "number"),
    RecordField(
        logql.TURN_LATENCY_P95,
        "Turn latency p95",
        "ms",
        "number",
        0,
        _alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
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

ROWS: tuple[Row, ...] = (
    Row(
        "Overview",
        (
            Panel(
                "active-calls",
                "Active calls",
                "stat",
                "short",
                "Calls in progress now, all processes of the selected services "
                f"(`{m.CALLS_ACTIVE.prometheus_name}`).",
                (_instant(_ACTIVE),),
                width=4,
            ),
            Panel(
                "calls-per-hour",
                "Calls per hour",
                "stat",
                "short",
                "Calls started during the dashboard's range, per hour "
                f"(`{m.CALLS.prometheus_name}`). {_EXACT}",
                (_instant(f"{range_total(m.CALLS)} * 3600 / {RANGE_SECONDS}"),),
                width=4,
                decimals=1,
            ),
            Panel(
                "average-call-duration",
                "Average call duration",
                "stat",
                "s",
                "Mean length of the calls that ended during the dashboard's range "
                f"(`{m.SESSION_DURATION.prometheus_name}_sum / _count`).",
                (_instant(_per_call(range_total(m.SESSION_DURATION, suffix="_sum"))),),
                width=4,
            ),
            Panel(
                "cost-per-call",
                "Cost per call",
                "stat",
                "currencyUSD",
                "Estimated cost during the dashboard's range divided by the calls that ended "
                "in it. An estimate from the exporter's dated price table; unpriced models "
                "add nothing (see the call summaries). Thresholds: adjust to your budget.",
                (_instant(_per_call(range_total(m.COST))),),
                thresholds=_CALL_COST,
                width=4,
                decimals=4,
            ),
            Panel(
                "cost-today",
                "Cost today",
                "stat",
                "currencyUSD",
                "Estimated cost since midnight (dashboard time zone), whatever the "
                f"dashboard's range. {_EXACT}",
                (_instant(range_total(m.COST)),),
                thresholds=_DAY_COST,
                width=4,
                time_from="now/d",
                decimals=2,
            ),
            Panel(
                "calls-started",
                "Calls started per hour",
                "stat",
                "short",
                f"Calls started, per hour, over {RATE_INTERVAL}: the trend behind 'Calls "
                "per hour'.",
                (Query(f"{rate(m.CALLS)} * 3600", "calls/h"),),
                width=4,
                decimals=1,
            ),
            Panel(
                "active-calls-over-time",
                "Active calls over time",
                "timeseries",
                "short",
                "Calls in progress, all processes of the selected services.",
                (Query(_ACTIVE, "active calls"),),
                width=24,
                height=6,
            ),
        ),
    ),
    Row(
        "Conversation",
        (
            Panel(
                "turn-latency",
                "Turn latency",
                "timeseries",
                "ms",
                "The callers' wait from falling silent to the bot's first audio (Pipecat's "
                f"UserBotLatencyObserver), p50/p95/p99 over {RATE_INTERVAL}, from "
                f"`{m.TURN_LATENCY.prometheus_name}_bucket` (interpolated within histogram "
                "buckets). Dashed lines: the thresholds; red is the turn latency alert's level. "
                f"{_EXEMPLARS_NOTE}",
                _percentiles(m.TURN_LATENCY, (0.5, 0.95, 0.99), ()),
                thresholds=_alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
                width=12,
            ),
            Panel(
                "turn-latency-breakdown",
                "Where turn latency goes",
                "bargauge",
                "ms",
                "Average milliseconds per answered turn spent on each part of the wait "
                "(endpointing wait, transcription, turn detection, LLM inference, tool calls, "
                "speech synthesis, ...), from Pipecat's latency breakdown, over the dashboard's "
                "range. The parts add up to the average turn latency. "
                f"`{m.TURN_CONTRIBUTION.prometheus_name}` / "
                f"`{m.TURN_LATENCY.prometheus_name}_count`. {_EXACT}",
                (
                    _instant(
                        f"{range_total(m.TURN_CONTRIBUTION, (m.CONTRIBUTION,))} / on() "
                        f"group_left() {range_total(m.TURN_LATENCY, suffix='_count')}",
                        _legend((m.CONTRIBUTION,)),
                        (m.CONTRIBUTION,),
                    ),
                ),
                thresholds=((500.0, "orange"), (1000.0, "red")),
                width=12,
            ),
            Panel(
                "turns-per-call",
                "Turns per call",
                "stat",
                "short",
                "Turns the bot answered during the dashboard's range, interrupted or not, per "
                f"call that ended in it (`{m.TURNS.prometheus_name}`).",
                (_instant(_per_call(range_total(m.TURNS))),),
                base_color="blue",
                width=4,
                height=6,
                decimals=1,
            ),
            Panel(
                "interruptions-per-call",
                "Interruptions per call",
                "stat",
                "short",
                "Times a caller started speaking while the bot was speaking (barge-ins; not "
                "Pipecat's InterruptionFrame, which starts every user turn), per call that "
                f"ended during the dashboard's range (`{m.INTERRUPTIONS.prometheus_name}`). "
                "Frequent barge-ins: answers too long or too slow.",
                (_instant(_per_call(_or_zero(range_total(m.INTERRUPTIONS), _ENDED))),),
                thresholds=((2.0, "orange"), (4.0, "red")),
                width=4,
                height=6,
                decimals=2,
            ),
            Panel(
                "interrupted-turns",
                "Interrupted turns",
                "stat",
                "percentunit",
                "Share of the bot's answers the caller talked over, during the dashboard's "
                f'range (`{m.TURNS.prometheus_name}` with interrupted="true").',
                (_instant(_share(range_total(m.TURNS, interrupted="true"), range_total(m.TURNS))),),
                thresholds=((0.15, "orange"), (0.3, "red")),
                width=4,
                height=6,
            ),
            Panel(
                "resolution-rate",
                "Resolution rate",
                "stat",
                "percentunit",
                f"Share of the calls that ended during the dashboard's range with "
                f'{_OUTCOME}="{_RESOLVED}" (`{m.CALLS_ENDED.prometheus_name}`). Calls whose '
                f"outcome was never set count as not resolved. Needs the {_OUTCOME} call "
                'attribute: GrafanaMetricsExporter(call_attributes={"outcome": ["resolved", '
                "...]}) and set_call_attributes(outcome=...). Thresholds: adjust to your goals.",
                (
                    _instant(
                        _share(
                            range_total(m.CALLS_ENDED, **{_OUTCOME: _RESOLVED}),
                            range_total(m.CALLS_ENDED),
                        )
                    ),
                ),
                base_color="red",
                thresholds=((0.6, "orange"), (0.8, "green")),
                width=4,
                height=6,
            ),
            Panel(
                "calls-by-outcome",
                "Calls by outcome",
                "bargauge",
                "short",
                "Calls that ended during the dashboard's range, by the outcome the application "
                f"set (`{m.CALLS_ENDED.prometheus_name}`; unset: the call ended before it was "
                "set). Counts every call of the selected services, whichever call is chosen. "
                f"{_EXACT}",
                (_total_by(m.CALLS_ENDED, (_OUTCOME,)),),
                base_color="blue",
                width=8,
                height=6,
            ),
        ),
    ),
    Row(
        "Errors and tool calls",
        (
            Panel(
                "errors-per-minute-by-service",
                "Errors per minute by service",
                "timeseries",
                "short",
                f"ErrorFrames per minute over {RATE_INTERVAL} by service type and processor "
                f"(`{m.ERRORS.prometheus_name}`). The red line is the error-rate alert's level "
                "(per processor).",
                (_rate_by(m.ERRORS, _ERRORS_BY_SERVICE),),
                thresholds=((alerts.DEFAULT_ERRORS_PER_MINUTE, "red"),),
                width=8,
            ),
            Panel(
                "errors-per-minute-by-type",
                "Errors per minute by type",
                "timeseries",
                "short",
                f"ErrorFrames per minute over {RATE_INTERVAL} by error type: rate_limit (HTTP "
                "429 and the like), timeout, other. Dashed lines: the rate-limit alerts' "
                "levels (per processor).",
                (_rate_by(m.ERRORS, (m.ERROR_TYPE,)),),
                thresholds=(
                    (alerts.DEFAULT_RATE_LIMITS_PER_MINUTE, "orange"),
                    (alerts.DEFAULT_RATE_LIMIT_BURST_PER_MINUTE, "red"),
                ),
                width=8,
            ),
            Panel(
                "errors",
                "Errors by service and type",
                "bargauge",
                "short",
                "ErrorFrames during the dashboard's range by service type and error type. "
                f"{_EXACT}",
                (_total_by(m.ERRORS, (m.SERVICE_TYPE, m.ERROR_TYPE)),),
                base_color="orange",
                width=8,
            ),
            Panel(
                "tool-call-latency",
                "Tool-call latency by function",
                "timeseries",
                "ms",
                "Time from a tool call's start to its result (the handler's work, which the "
                f"caller waits through), p50/p95 per function over {RATE_INTERVAL}, from "
                f"`{m.FUNCTION_CALL_LATENCY.prometheus_name}_bucket`. {_EXEMPLARS_NOTE}",
                _percentiles(m.FUNCTION_CALL_LATENCY, (0.5, 0.95), (m.FUNCTION,)),
                thresholds=_SLOW_MS,
                width=8,
            ),
            Panel(
                "tool-calls-per-minute",
                "Tool calls per minute by status",
                "timeseries",
                "short",
                f"Tool calls that finished, per minute over {RATE_INTERVAL}, by function and "
                "status: ok, error (the handler failed), cancelled (an interruption or a "
                f"timeout) (`{m.FUNCTION_CALLS.prometheus_name}`).",
                (_rate_by(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY),),
                width=8,
            ),
            Panel(
                "tool-calls",
                "Tool calls by function and status",
                "bargauge",
                "short",
                f"Tool calls that finished during the dashboard's range. {_EXACT}",
                (_total_by(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY),),
                base_color="blue",
                width=8,
            ),
        ),
    ),
    Row(
        "Health",
        (
            Panel(
                "greeting-latency",
                "Greeting latency",
                "timeseries",
                "ms",
                "The callers' wait from connecting to the bot's first words, when the bot "
                "speaks first (Pipecat's UserBotLatencyObserver, from the transport's "
                f"ClientConnectedFrame), p50/p95 over {RATE_INTERVAL}, from "
                f"`{m.GREETING_LATENCY.prometheus_name}_bucket`. Red is the greeting alert's "
                "level.",
                _percentiles(m.GREETING_LATENCY, (0.5, 0.95), ()),
                thresholds=_alert_level(alerts.DEFAULT_GREETING_P95_MS),
                width=8,
            ),
            Panel(
                "event-loop-lag",
                "Event-loop lag",
                "timeseries",
                "ms",
                "How late the event loop that runs the calls ran a timer (sampled every 100 ms "
                f"while calls are in progress), p99 and max over {RATE_INTERVAL}, all processes "
                f"of the selected services (`{m.EVENT_LOOP_LAG.prometheus_name}_bucket`; max is "
                "its bucket's upper bound). Every call's audio waits this long. Red is the lag "
                "alert's level (per process).",
                (
                    Query(quantile(0.99, m.EVENT_LOOP_LAG, ()), "p99"),
                    Query(histogram_quantile(1, rate(m.EVENT_LOOP_LAG, ("le",), "_bucket")), "max"),
                ),
                thresholds=_alert_level(alerts.DEFAULT_EVENT_LOOP_LAG_P99_MS),
                width=8,
            ),
            Panel(
                "startup",
                "Start-up time p95 by processor",
                "timeseries",
                "ms",
                "What each processor costs to get ready before a caller can hear the bot "
                "(setup and start: connecting to its provider, loading a model), and when the "
                "transport connected (bot_connected, client_connected, from the pipeline "
                f"starting to set up), p95 over {RATE_INTERVAL}, from Pipecat's "
                f"StartupTimingObserver (`{m.STARTUP.prometheus_name}_bucket`).",
                _percentiles(m.STARTUP, (0.95,), (m.PHASE, m.PROCESSOR)),
                thresholds=_SLOW_MS,
                width=8,
            ),
            Panel(
                "exports-per-minute",
                "Metric exports per minute by outcome",
                "timeseries",
                "short",
                f"The exporter's requests to the OTLP endpoint per minute over {RATE_INTERVAL}, "
                "by outcome (ok, rejected, unreachable, timeout) and reason (the HTTP status: "
                "401/403 credentials, 404 URL, 429 rate limit, 5xx; or refused, dns, tls, "
                "timeout). A failure is counted by the next export that gets through: an "
                "endpoint that refuses everything shows nothing here until it recovers "
                f"(`{m.EXPORTS.prometheus_name}`). Red is the export alert's level.",
                (_rate_by(m.EXPORTS, (m.OUTCOME, m.REASON)),),
                thresholds=((alerts.DEFAULT_EXPORT_FAILURES_PER_MINUTE, "red"),),
                width=12,
            ),
            Panel(
                "calls-dropped",
                "Ended calls dropped",
                "stat",
                "short",
                "Ended calls whose final values were never exported during the dashboard's "
                "range: the endpoint did not accept them for 5 minutes (expired), or too many "
                "were waiting (overflow). Their summaries were still logged "
                f"(`{m.CALLS_DROPPED.prometheus_name}`). {_EXACT}",
                (_instant(_or_zero(range_total(m.CALLS_DROPPED), range_total(m.EXPORTS))),),
                thresholds=((1.0, "red"),),
                width=6,
            ),
            Panel(
                "export-age",
                "Age of the last accepted export",
                "stat",
                "s",
                "Seconds since the endpoint last accepted an export, the oldest of the "
                "processes of the selected services, as of their last export "
                f"(`{m.EXPORT_AGE.prometheus_name}`): about the export interval when all is "
                "well. A process whose exports all fail sends nothing, not even this.",
                (_instant(aggregate("max", (), selector(m.EXPORT_AGE))),),
                thresholds=((30.0, "orange"), (120.0, "red")),
                width=6,
                decimals=1,
            ),
        ),
    ),
    Row("Latency", tuple(latency.panel() for latency in LATENCY_PANELS)),
    Row(
        "Usage",
        (
            Panel(
                "tokens-per-minute",
                "LLM tokens per minute by type and model",
                "timeseries",
                "short",
                f"LLM tokens per minute over {RATE_INTERVAL}. {_TOKEN_TYPES_NOTE}",
                (_rate_by(m.LLM_TOKENS, _TOKENS_BY),),
                width=12,
            ),
            Panel(
                "tokens",
                "LLM tokens by type and model",
                "bargauge",
                "short",
                f"LLM tokens during the dashboard's range. {_TOKEN_TYPES_NOTE} {_EXACT}",
                (_total_by(m.LLM_TOKENS, _TOKENS_BY),),
                width=12,
            ),
            Panel(
                "tts-characters",
                "TTS characters",
                "bargauge",
                "short",
                f"Characters sent to text-to-speech during the dashboard's range, by model "
                f"(`{m.TTS_CHARACTERS.prometheus_name}`).",
                (_total_by(m.TTS_CHARACTERS, (m.MODEL,)),),
                width=6,
                height=6,
            ),
            Panel(
                "tts-audio-minutes",
                "TTS audio minutes",
                "bargauge",
                "m",
                f"Minutes of audio text-to-speech produced during the dashboard's range, by "
                f"model (`{m.TTS_AUDIO.prometheus_name}` / 60), interrupted answers included.",
                (
                    _instant(
                        f"{range_total(m.TTS_AUDIO, (m.MODEL,))} / 60",
                        _legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                width=6,
                height=6,
                decimals=2,
            ),
            Panel(
                "stt-audio-minutes",
                "STT audio minutes",
                "bargauge",
                "m",
                f"Minutes of audio sent to speech-to-text during the dashboard's range, by "
                f"model (`{m.STT_AUDIO.prometheus_name}` / 60).",
                (
                    _instant(
                        f"{range_total(m.STT_AUDIO, (m.MODEL,))} / 60",
                        _legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                width=6,
                height=6,
                decimals=2,
            ),
            Panel(
                "cache-read-share",
                "Cache-read share of prompt tokens",
                "bargauge",
                "percentunit",
                "Share of the prompt (input) tokens read from the provider's prompt cache, by "
                "model, during the dashboard's range: cache_read / prompt. Cached tokens are "
                "billed at a discount. A model whose service does not report cache reads "
                "shows nothing (not reported is not zero).",
                (
                    _instant(
                        f"{range_total(m.LLM_TOKENS, (m.MODEL,), token_type='cache_read')} / "
                        f"{range_total(m.LLM_TOKENS, (m.MODEL,), token_type='prompt')}",
                        _legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                base_color="blue",
                width=6,
                height=6,
            ),
        ),
    ),
    Row(
        "Cost",
        (
            Panel(
                "cost-per-hour",
                "Cost per hour by service and model",
                "timeseries",
                "currencyUSD",
                f"Estimated spend rate in USD per hour over {RATE_INTERVAL}, by service type "
                "and model, and in total. The red line is the alert rules' default budget.",
                (_rate_by(m.COST, _COST_BY, 3600), Query(f"{rate(m.COST)} * 3600", "total")),
                thresholds=((alerts.DEFAULT_BUDGET_USD_PER_HOUR, "red"),),
                width=12,
            ),
            Panel(
                "cost-by-service",
                "Cost by service and model",
                "bargauge",
                "currencyUSD",
                f"Estimated cost during the dashboard's range by service type and model. {_EXACT}",
                (_total_by(m.COST, _COST_BY),),
                width=6,
                decimals=4,
            ),
            Panel(
                "projected-cost-per-day",
                "Projected cost per day",
                "stat",
                "currencyUSD",
                "The dashboard range's average spend rate, times 24 hours. Choose a range "
                "long enough to be typical (a day or a week).",
                (_instant(f"{range_total(m.COST)} * 86400 / {RANGE_SECONDS}"),),
                thresholds=_DAY_COST,
                width=6,
                decimals=2,
            ),
            Panel(
                "most-expensive-calls",
                "Most expensive calls",
                "table",
                "currencyUSD",
                "Estimated cost of each call during the dashboard's range, most expensive "
                "first. Click a call to show it in the per-call row. Needs the exporter's "
                "call_id label.",
                (
                    Query(
                        f"topk(50, {range_total(m.COST, (m.CALL_ID,))})",
                        labels=(m.CALL_ID,),
                        instant=True,
                        table=True,
                    ),
                ),
                width=24,
                decimals=4,
                links=(_CALL_LINK,),
            ),
        ),
    ),
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
                f"The calls grouped by the {_OUTCOME} the application set (empty: never set), "
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
                (_instant(range_total(m.SESSION_DURATION, suffix="_sum")),),
                width=4,
            ),
            Panel(
                "call-cost",
                "Call cost",
                "stat",
                "currencyUSD",
                f"Estimated cost of the chosen call. {_PER_CALL_NOTE}",
                (_instant(range_total(m.COST)),),
                thresholds=_CALL_COST,
                width=4,
                decimals=4,
            ),
            Panel(
                "call-tts-characters",
                "Call TTS characters",
                "stat",
                "short",
                f"Characters the chosen call sent to text-to-speech. {_PER_CALL_NOTE}",
                (_instant(range_total(m.TTS_CHARACTERS)),),
                width=4,
            ),
            Panel(
                "call-stt-audio",
                "Call STT audio",
                "stat",
                "s",
                f"Audio the chosen call sent to speech-to-text. {_PER_CALL_NOTE}",
                (_instant(range_total(m.STT_AUDIO)),),
                width=4,
                decimals=1,
            ),
            Panel(
                "call-cost-by-service",
                "Call cost by service",
                "bargauge",
                "currencyUSD",
                f"Estimated cost of the chosen call by service type and model. {_PER_CALL_NOTE}",
                (_total_by(m.COST, _COST_BY),),
                width=8,
                height=6,
                decimals=4,
            ),
            Panel(
                "call-tokens",
                "Call LLM tokens",
                "bargauge",
                "short",
                f"LLM tokens of the chosen call by type. {_TOKEN_TYPES_NOTE} {_PER_CALL_NOTE}",
                (_total_by(m.LLM_TOKENS, (m.TOKEN_TYPE,)),),
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
                        _legend((m.SERVICE_TYPE,)),
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
                    RecordField(logql.COST, "Cost", "currencyUSD", "number", 4, _CALL_COST),
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
                thresholds=_alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
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
                thresholds=_SLOW_MS,
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
)


# --------------------------------------------------------------------------------------------
# For tests and checks: every query


@dataclass(frozen=True)
class PanelQuery:
    """One query of the dashboard, with where it stands."""

    row: str
    panel: Panel
    ref_id: str
    query: Query


def panel_queries() -> Iterator[PanelQuery]:
    """Every query of every panel, in dashboard order."""
    for row in ROWS:
        for panel in row.panels:
            for ref_id, query in panel.lettered_queries():
                yield PanelQuery(row.title, panel, ref_id, query)
