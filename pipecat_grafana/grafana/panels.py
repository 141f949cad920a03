"""The panel table's vocabulary: panels, queries, rows, and the helpers that build them.

Each panel names its data source, its queries (built by ``promql`` from the instruments, or by
``logql`` from the call summary record), its unit, its thresholds and what it shows. The rows
themselves are in ``fleet_rows`` (the service as a whole) and ``call_rows`` (single calls);
``dashboard`` turns them into Grafana's JSON. The thresholds of the latency, error and cost
panels are the alert rules' default levels, so that a panel's red line is where an alert
fires.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import logql
from pipecat_grafana.grafana.promql import NATIVE_VAR, RATE_INTERVAL, quantile, range_total, rate
from pipecat_grafana.instruments import InstrumentSpec

__all__ = [
    "CALL_COST",
    "CALL_LINK",
    "COST_BY",
    "DATASOURCE_VARIABLES",
    "EXEMPLARS_NOTE",
    "LOKI",
    "LatencyPanel",
    "OUTCOME",
    "PROMETHEUS",
    "Panel",
    "Query",
    "RecordField",
    "Row",
    "SLOW_MS",
    "TEMPO",
    "TOKEN_TYPES_NOTE",
    "alert_level",
    "instant",
    "legend",
    "percentiles",
    "rate_by",
    "total_by",
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
    """A key of a call's log record, shown by a Loki panel as a column or a stat.

    Loki returns every structured metadata value as text; ``kind`` says what to make of it.
    A column whose key no record of the result has is not shown.

    Parameters:
        key: The record's key (``CallSummary.log_attributes()``,
            ``TurnRecord.log_attributes()``), or the stream label ``service_name``.
        title: The column's or the stat's name.
        unit: Grafana's unit id; empty for text and times.
        kind: ``number``, ``boolean``, ``time`` (ISO 8601) or ``string``.
        decimals: Decimals to show, when Grafana's choice is not good.
        thresholds: ``(value, color)`` steps that color the value, above the panel's base
            color.
        gauge: Tables: draw the value as a bar from 0, colored by ``thresholds``, so that
            the largest of the column stands out.
    """

    key: str
    title: str
    unit: str = ""
    kind: str = "string"
    decimals: int | None = None
    thresholds: tuple[tuple[float, str], ...] = ()
    gauge: bool = False


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


def instant(expr: str, legend: str = "", labels: tuple[str, ...] = ()) -> Query:
    """An instant query: a stat, a bar gauge or a table."""
    return Query(expr, legend, labels, instant=True)


def legend(labels: tuple[str, ...], *words: str) -> str:
    """A legend naming each series by its ``labels``: ``{{model}} {{token_type}}``."""
    return " ".join((*(f"{{{{{label}}}}}" for label in labels), *words))


def total_by(spec: InstrumentSpec, by: tuple[str, ...]) -> Query:
    """How much ``spec`` grew during the dashboard's range, a series per value of ``by``."""
    return instant(range_total(spec, by), legend(by), by)


def rate_by(spec: InstrumentSpec, by: tuple[str, ...], per_seconds: int = 60) -> Query:
    """``spec`` per minute (or per ``per_seconds``) over ``$__rate_interval``, by ``by``."""
    return Query(f"{rate(spec, by)} * {per_seconds}", legend(by), by)


def percentiles(
    spec: InstrumentSpec, quantiles: tuple[float, ...], by: tuple[str, ...] = (m.PROCESSOR,)
) -> tuple[Query, ...]:
    """Percentiles of a histogram over ``$__rate_interval``, with its exemplars if it has them."""
    return tuple(
        Query(quantile(q, spec, by), legend(by, f"p{q * 100:g}"), by, exemplars=spec.exemplars)
        for q in quantiles
    )


def alert_level(level: float) -> tuple[tuple[float, str], ...]:
    """Thresholds for an alert's level: orange from half of it, red at it."""
    return ((level / 2, "orange"), (level, "red"))


SLOW_MS = ((1000.0, "orange"), (2000.0, "red"))
"""Latency a voice team would flag where no alert has a level."""
CALL_COST = ((0.25, "orange"), (1.0, "red"))
"""A call's cost: levels to adjust to the budget."""

TOKEN_TYPES_NOTE = (
    "Token types overlap: prompt and completion are totals; cache_read, cache_creation and "
    "input_audio are parts of prompt; reasoning and output_audio are parts of completion. "
    "Never add them all up."
)
COST_BY = (m.SERVICE_TYPE, m.MODEL)
EXEMPLARS_NOTE = (
    "Dots: exemplars, measurements with the call_id they belong to (and, with tracing on, "
    "a link to their trace)."
)
OUTCOME = "outcome"
"""The call attribute the conversation panels read: the application declares it with
``GrafanaMetricsExporter(call_attributes={"outcome": [...]})`` and sets it per call."""


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
        shown = "/".join(f"p{q * 100:g}" for q in self.quantiles)
        return Panel(
            key=f"latency-{self.key}",
            title=self.title,
            kind="timeseries",
            unit="ms",
            description=(
                f"{self.what} {shown} per processor over {RATE_INTERVAL}, from "
                f"`{self.spec.prometheus_name}_bucket` or the native histogram "
                "(interpolated within histogram buckets). Dashed lines: the thresholds; red is the "
                f"alert rule's level where there is one. {EXEMPLARS_NOTE}"
            ),
            queries=percentiles(self.spec, self.quantiles),
            thresholds=self.thresholds,
            width=self.width,
        )


_KEPT_VARIABLES = (
    *DATASOURCE_VARIABLES.values(),
    "service_label",
    NATIVE_VAR.strip("${}"),
    "service",
    m.MODEL,
    logql.MIN_COST_VAR.lstrip("$"),
    logql.MIN_TURN_LATENCY_VAR.lstrip("$"),
)
"""The dashboard's variables but the call: a link to another call keeps them."""
CALL_LINK = (
    "Show this call",
    # This dashboard, whatever UID it was imported under, with the call chosen and the
    # other filters and the time range kept.
    f"/d/${{__dashboard.uid}}/?var-{m.CALL_ID}=${{__data.fields.{m.CALL_ID}}}&"
    + "&".join(f"${{{name}:queryparam}}" for name in _KEPT_VARIABLES)
    + "&${__url_time_range}",
)
