"""The Grafana dashboard, built from the metric contract rather than kept as hand-edited JSON.

A dashboard exported from Grafana's UI drifts from the metrics the code emits: a renamed
instrument leaves a panel that silently shows "No data". So every query here is built from
``instruments`` (Prometheus names, label keys) by a few helpers, and the panels are rows of a
table; the tests run every query against real metrics databases fed by the exporter.

Three things shape the queries:

- Where the service name lands depends on the backend: Grafana Cloud (Mimir) and
  Prometheus's OTLP receiver put ``service.name`` in ``job``, VictoriaMetrics keeps it as
  ``service_name``. Grafana interpolates variables anywhere in a query, label names
  included, so the ``service_label`` variable (``job`` by default) names the label and
  every selector reads ``{${service_label}=~"$service"}``.
- ``call_id`` may be switched off. A regex matcher also matches a missing label, so the
  variables' "All" value is ``.*`` and fleet queries work in both modes.
- Per-call series are short-lived. ``increase()`` extrapolates past the end of a series that
  ends inside its window (Prometheus and Mimir; not VictoriaMetrics), so totals over the
  dashboard's range use ``max_over_time(x[$__range]) - min_over_time(x[$__range])`` per
  series, which is exact here: every cumulative series is exported first with a zero at its
  start, and never resets (a restarted process writes new series). Rates over
  ``$__rate_interval`` are used for trends only.

Example::

    from pipecat_grafana.dashboard import build_dashboard, dashboard_json

    Path("voice-bot.json").write_text(dashboard_json())
"""

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat_grafana import alerts
from pipecat_grafana import instruments as m
from pipecat_grafana.instruments import InstrumentSpec

__all__ = [
    "ALL",
    "DASHBOARD_UID",
    "SERVICE_LABELS",
    "SHIPPED_DASHBOARD",
    "Panel",
    "PanelQuery",
    "Query",
    "LATENCY_PANELS",
    "LatencyPanel",
    "Row",
    "ROWS",
    "VARIABLES",
    "Variable",
    "build_dashboard",
    "dashboard_json",
    "panel_queries",
    "quantile",
    "range_quantile",
    "range_total",
    "rate",
    "selector",
    "substitute",
]

DASHBOARD_UID = "pipecat-voice-bot"
DASHBOARD_TITLE = "Pipecat voice bot"
SHIPPED_DASHBOARD = Path(__file__).parent / "grafana" / "pipecat-voice-bot.json"
"""The dashboard as shipped in the package: ``build_dashboard()`` with its defaults."""

SERVICE_LABELS = ("job", "service_name")
"""Where ``service.name`` lands: ``job`` on Grafana Cloud (Mimir) and Prometheus's OTLP
receiver, ``service_name`` on VictoriaMetrics and vmagent. The first is the default."""

ALL = ".*"
"""The "All" value of every filter variable: a regex that also matches a missing label."""

# The Grafana variables the queries use.
SERVICE_LABEL_VAR = "${service_label}"
SERVICE_VAR = "$service"
MODEL_VAR = "$model"
CALL_ID_VAR = "$call_id"
RANGE = "$__range"
RANGE_SECONDS = "$__range_s"
RATE_INTERVAL = "$__rate_interval"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Which instruments carry which labels (METRICS.md, "Attributes").
_USAGE = (m.LLM_TOKENS, m.TTS_CHARACTERS, m.STT_AUDIO)
_WITH_MODEL = frozenset((*m.LATENCY, *_USAGE, m.COST))

# --------------------------------------------------------------------------------------------
# PromQL building blocks


def selector(spec: InstrumentSpec, suffix: str = "", **matchers: str) -> str:
    """A series selector for ``spec`` with the dashboard's filters.

    Every selector filters by service; ``model`` and ``call_id`` filters are added only to
    instruments that carry those labels, so that choosing a model does not hide the calls
    gauges.

    Args:
        spec: The instrument.
        suffix: ``_bucket``, ``_sum`` or ``_count`` for histograms.
        **matchers: Extra equality matchers, e.g. ``token_type="prompt"``.

    Returns:
        For example ``voice_cost_usd_total{${service_label}=~"$service", model=~"$model"}``.
    """
    parts = [f'{SERVICE_LABEL_VAR}=~"{SERVICE_VAR}"']
    if spec in _WITH_MODEL:
        parts.append(f'{m.MODEL}=~"{MODEL_VAR}"')
    if spec.per_call:
        parts.append(f'{m.CALL_ID}=~"{CALL_ID_VAR}"')
    parts += [f'{key}="{value}"' for key, value in matchers.items()]
    return f"{spec.prometheus_name}{suffix}{{{', '.join(parts)}}}"


def _by(labels: tuple[str, ...]) -> str:
    return f" by ({', '.join(labels)})" if labels else ""


def range_total(
    spec: InstrumentSpec, by: tuple[str, ...] = (), suffix: str = "", **matchers: str
) -> str:
    """How much a cumulative instrument grew during the dashboard's range.

    ``max_over_time - min_over_time`` per series, summed: exact for per-call series that
    start and end inside the range (each starts with an exported zero and never resets),
    where ``increase()`` would extrapolate past the series' last sample on Prometheus and
    Mimir.
    """
    series = selector(spec, suffix, **matchers)
    return f"sum{_by(by)} (max_over_time({series}[{RANGE}]) - min_over_time({series}[{RANGE}]))"


def rate(spec: InstrumentSpec, by: tuple[str, ...] = (), suffix: str = "", **matchers: str) -> str:
    """Per-second rate of a cumulative instrument, summed, for trend panels."""
    return f"sum{_by(by)} (rate({selector(spec, suffix, **matchers)}[{RATE_INTERVAL}]))"


def quantile(q: float, spec: InstrumentSpec, by: tuple[str, ...] = (m.PROCESSOR,)) -> str:
    """The ``q`` quantile of a histogram over ``$__rate_interval``, by ``by``."""
    return f"histogram_quantile({q:g}, {rate(spec, ('le', *by), '_bucket')})"


def range_quantile(q: float, spec: InstrumentSpec, by: tuple[str, ...] = (m.PROCESSOR,)) -> str:
    """The ``q`` quantile of a histogram over the dashboard's whole range, by ``by``."""
    return f"histogram_quantile({q:g}, {range_total(spec, ('le', *by), '_bucket')})"


# --------------------------------------------------------------------------------------------
# The table of panels


@dataclass(frozen=True)
class Query:
    """One query of a panel.

    Parameters:
        expr: The PromQL, with Grafana variables.
        legend: Grafana's legend format.
        labels: The labels every result series carries (its shape); ``call_id`` is absent
            when the exporter runs with the label off.
        instant: An instant query (stat, bar gauge, table) rather than a range query.
        table: Return the result as a table (one row per series).
    """

    expr: str
    legend: str = ""
    labels: tuple[str, ...] = ()
    instant: bool = False
    table: bool = False


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


@dataclass(frozen=True)
class Row:
    """A row of panels."""

    title: str
    panels: tuple[Panel, ...]


def _instant(expr: str, legend: str = "", labels: tuple[str, ...] = ()) -> Query:
    return Query(expr, legend, labels, instant=True)


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
                "there is one."
            ),
            queries=tuple(
                Query(quantile(q, self.spec), f"{{{{{m.PROCESSOR}}}}} p{q * 100:g}", (m.PROCESSOR,))
                for q in self.quantiles
            ),
            thresholds=self.thresholds,
            width=self.width,
        )


LATENCY_PANELS = (
    LatencyPanel(
        "ttfb",
        m.TTFB,
        "TTFB by processor",
        (0.5, 0.95, 0.99),
        ((alerts.DEFAULT_TTFB_P95_MS / 2, "orange"), (alerts.DEFAULT_TTFB_P95_MS, "red")),
        12,
        "Time to first byte of each service's response (STT: from the end of speech to the "
        "final transcript; LLM: request to first chunk; TTS: request to first audio).",
    ),
    LatencyPanel(
        "ttfa",
        m.TTFA,
        "Time to first audio (TTS) p95",
        (0.95,),
        ((alerts.DEFAULT_TTFA_P95_MS / 2, "orange"), (alerts.DEFAULT_TTFA_P95_MS, "red")),
        6,
        "TTS time to first audible audio: TTFB plus the leading silence the TTS pads its "
        "audio with.",
    ),
    LatencyPanel(
        "ttfat",
        m.TTFAT,
        "Time to first answer token (LLM) p95",
        (0.95,),
        ((1000.0, "orange"), (2000.0, "red")),
        6,
        "LLM time to the first token of the answer: TTFB plus thinking time.",
    ),
    LatencyPanel(
        "processing",
        m.PROCESSING,
        "Processing time by processor",
        (0.5, 0.95),
        ((1000.0, "orange"), (2000.0, "red")),
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
_CALLS_ENDED = (m.SESSION_DURATION, "_count")
"""Calls that ended: the session duration histogram's count (per call, unlike ``CALLS``)."""
_EXACT = (
    "Totals over the dashboard's range use max_over_time - min_over_time per series, exact "
    "for calls that start and end inside the range."
)
_PER_CALL_NOTE = (
    "Choose one call in the call_id variable (the 'Most expensive calls' table links to it). "
    "With All, the panel adds up every call of the range. Needs the exporter's call_id label "
    "(PIPECAT_GRAFANA_CALL_ID_LABEL, on by default)."
)
_OUTCOME = "outcome"
"""The call attribute the conversation panels read: the application declares it with
``GrafanaMetricsExporter(call_attributes={"outcome": [...]})`` and sets it per call."""
_RESOLVED = "resolved"
_ERRORS_BY_SERVICE = (m.SERVICE_TYPE, m.PROCESSOR)
_FUNCTION_CALLS_BY = (m.FUNCTION, m.STATUS)
_DEMO_NOTE = "`pipecat-grafana demo` makes one of each per call."


def _per_call(total: str) -> str:
    """A range total divided by the calls that ended in the range."""
    return f"{total} / {range_total(_CALLS_ENDED[0], suffix=_CALLS_ENDED[1])}"


def _or_zero(expr: str, like: str) -> str:
    """``expr``, or 0 where it has no series but ``like`` has.

    A counter never incremented is never exported: none counted is zero, not "No data".
    """
    return f"({expr} or 0 * {like})"


def _share(part: str, whole: str) -> str:
    """``part / whole`` of two range totals; 0 when nothing of ``whole`` is ``part``."""
    return f"{_or_zero(part, whole)} / {whole}"


_CALL_LINK = (
    "Show this call",
    f"/d/{DASHBOARD_UID}/?var-{m.CALL_ID}=${{__data.fields.{m.CALL_ID}}}"
    "&${datasource:queryparam}&${service_label:queryparam}&${service:queryparam}"
    "&${__url_time_range}",
)

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
                (_instant(f"sum({selector(m.CALLS_ACTIVE)})"),),
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
                (
                    _instant(
                        f"{range_total(m.SESSION_DURATION, suffix='_sum')} / "
                        f"{range_total(_CALLS_ENDED[0], suffix=_CALLS_ENDED[1])}"
                    ),
                ),
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
                (
                    _instant(
                        f"{range_total(m.COST)} / {range_total(_CALLS_ENDED[0], suffix=_CALLS_ENDED[1])}"
                    ),
                ),
                thresholds=((0.25, "orange"), (1.0, "red")),
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
                thresholds=(
                    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 12, "orange"),
                    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 24, "red"),
                ),
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
                (Query(f"sum({selector(m.CALLS_ACTIVE)})", "active calls"),),
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
                "buckets). Dashed lines: the thresholds; red is the turn latency alert's level.",
                tuple(
                    Query(quantile(q, m.TURN_LATENCY, ()), f"p{q * 100:g}")
                    for q in (0.5, 0.95, 0.99)
                ),
                thresholds=(
                    (alerts.DEFAULT_TURN_LATENCY_P95_MS / 2, "orange"),
                    (alerts.DEFAULT_TURN_LATENCY_P95_MS, "red"),
                ),
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
                        "{{contribution}}",
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
                (
                    _instant(
                        _per_call(
                            _or_zero(
                                range_total(m.INTERRUPTIONS),
                                range_total(_CALLS_ENDED[0], suffix=_CALLS_ENDED[1]),
                            )
                        )
                    ),
                ),
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
                (
                    _instant(
                        range_total(m.CALLS_ENDED, (_OUTCOME,)), f"{{{{{_OUTCOME}}}}}", (_OUTCOME,)
                    ),
                ),
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
                (
                    Query(
                        f"{rate(m.ERRORS, _ERRORS_BY_SERVICE)} * 60",
                        "{{service_type}} {{processor}}",
                        _ERRORS_BY_SERVICE,
                    ),
                ),
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
                (
                    Query(
                        f"{rate(m.ERRORS, (m.ERROR_TYPE,))} * 60",
                        "{{error_type}}",
                        (m.ERROR_TYPE,),
                    ),
                ),
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
                (
                    _instant(
                        range_total(m.ERRORS, (m.SERVICE_TYPE, m.ERROR_TYPE)),
                        "{{service_type}} {{error_type}}",
                        (m.SERVICE_TYPE, m.ERROR_TYPE),
                    ),
                ),
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
                f"`{m.FUNCTION_CALL_LATENCY.prometheus_name}_bucket`.",
                tuple(
                    Query(
                        quantile(q, m.FUNCTION_CALL_LATENCY, (m.FUNCTION,)),
                        f"{{{{{m.FUNCTION}}}}} p{q * 100:g}",
                        (m.FUNCTION,),
                    )
                    for q in (0.5, 0.95)
                ),
                thresholds=((1000.0, "orange"), (2000.0, "red")),
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
                (
                    Query(
                        f"{rate(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY)} * 60",
                        "{{function}} {{status}}",
                        _FUNCTION_CALLS_BY,
                    ),
                ),
                width=8,
            ),
            Panel(
                "tool-calls",
                "Tool calls by function and status",
                "bargauge",
                "short",
                f"Tool calls that finished during the dashboard's range. {_EXACT}",
                (
                    _instant(
                        range_total(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY),
                        "{{function}} {{status}}",
                        _FUNCTION_CALLS_BY,
                    ),
                ),
                base_color="blue",
                width=8,
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
                (
                    Query(
                        f"{rate(m.LLM_TOKENS, _TOKENS_BY)} * 60",
                        "{{model}} {{token_type}}",
                        _TOKENS_BY,
                    ),
                ),
                width=12,
            ),
            Panel(
                "tokens",
                "LLM tokens by type and model",
                "bargauge",
                "short",
                f"LLM tokens during the dashboard's range. {_TOKEN_TYPES_NOTE} {_EXACT}",
                (
                    _instant(
                        range_total(m.LLM_TOKENS, _TOKENS_BY),
                        "{{model}} {{token_type}}",
                        _TOKENS_BY,
                    ),
                ),
                width=12,
            ),
            Panel(
                "tts-characters",
                "TTS characters",
                "bargauge",
                "short",
                f"Characters sent to text-to-speech during the dashboard's range, by model "
                f"(`{m.TTS_CHARACTERS.prometheus_name}`).",
                (_instant(range_total(m.TTS_CHARACTERS, (m.MODEL,)), "{{model}}", (m.MODEL,)),),
                width=8,
                height=6,
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
                        f"{range_total(m.STT_AUDIO, (m.MODEL,))} / 60", "{{model}}", (m.MODEL,)
                    ),
                ),
                width=8,
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
                        "{{model}}",
                        (m.MODEL,),
                    ),
                ),
                base_color="blue",
                width=8,
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
                (
                    Query(
                        f"{rate(m.COST, _COST_BY)} * 3600", "{{service_type}} {{model}}", _COST_BY
                    ),
                    Query(f"{rate(m.COST)} * 3600", "total"),
                ),
                thresholds=((alerts.DEFAULT_BUDGET_USD_PER_HOUR, "red"),),
                width=12,
            ),
            Panel(
                "cost-by-service",
                "Cost by service and model",
                "bargauge",
                "currencyUSD",
                f"Estimated cost during the dashboard's range by service type and model. {_EXACT}",
                (_instant(range_total(m.COST, _COST_BY), "{{service_type}} {{model}}", _COST_BY),),
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
                thresholds=(
                    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 12, "orange"),
                    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 24, "red"),
                ),
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
                thresholds=((0.25, "orange"), (1.0, "red")),
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
                (_instant(range_total(m.COST, _COST_BY), "{{service_type}} {{model}}", _COST_BY),),
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
                (
                    _instant(
                        range_total(m.LLM_TOKENS, (m.TOKEN_TYPE,)),
                        "{{token_type}}",
                        (m.TOKEN_TYPE,),
                    ),
                ),
                width=8,
                height=6,
            ),
            Panel(
                "call-latency",
                "Call latency p95",
                "bargauge",
                "ms",
                "p95 of each latency metric per processor over the whole of the chosen call "
                f"(interpolated within histogram buckets). {_PER_CALL_NOTE}",
                tuple(
                    _instant(
                        range_quantile(0.95, latency.spec),
                        f"{{{{{m.PROCESSOR}}}}} {latency.key}",
                        (m.PROCESSOR,),
                    )
                    for latency in LATENCY_PANELS
                ),
                thresholds=((1000.0, "orange"), (2000.0, "red")),
                width=8,
                height=12,
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
                        f"sum by ({m.SERVICE_TYPE}) ({selector(m.COST)})",
                        "{{service_type}}",
                        (m.SERVICE_TYPE,),
                    ),
                ),
                width=16,
                height=6,
            ),
        ),
    ),
)


# --------------------------------------------------------------------------------------------
# Variables


def _series(specs: tuple[tuple[InstrumentSpec, str], ...], *filters: str) -> str:
    """A selector of several metrics, as ``label_values()`` takes it."""
    names = [spec.prometheus_name + suffix for spec, suffix in specs]
    if len(names) == 1:
        return names[0] + (f"{{{', '.join(filters)}}}" if filters else "")
    return "{" + ", ".join((f'__name__=~"{"|".join(names)}"', *filters)) + "}"


_SERVICE_FILTER = f'{SERVICE_LABEL_VAR}=~"{SERVICE_VAR}"'
_MODEL_FILTER = f'{m.MODEL}=~"{MODEL_VAR}"'
_PRICED_USAGE = tuple((spec, "") for spec in (*_USAGE, m.COST))


@dataclass(frozen=True)
class Variable:
    """A filter variable listing the values of one label, "All" (``.*``) by default.

    Parameters:
        name: The variable's name (``$name`` in queries).
        label: What the variable bar shows.
        label_name: The label whose values it lists (may itself be a variable).
        series: The series selector the values are read from.
        description: The variable's tooltip.
        multi: Whether several values may be chosen.
    """

    name: str
    label: str
    label_name: str
    series: str
    description: str
    multi: bool = True

    @property
    def definition(self) -> str:
        """Grafana's query: ``label_values(series, label)``."""
        return f"label_values({self.series}, {self.label_name})"

    @property
    def promql(self) -> str:
        """The same values as a PromQL query (``group by (label) (series)``), for tests."""
        return f"group by ({self.label_name}) ({self.series})"


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "service",
        "Service",
        SERVICE_LABEL_VAR,
        _series(((m.CALLS, ""),)),
        "The bots' service.name (OTEL_SERVICE_NAME), read from the label the service label "
        "variable names.",
    ),
    Variable(
        m.MODEL,
        "Model",
        m.MODEL,
        _series(_PRICED_USAGE, _SERVICE_FILTER),
        "LLM, STT and TTS models. Filters the latency, usage and cost panels; the calls "
        "panels count every call.",
    ),
    Variable(
        m.CALL_ID,
        "Call",
        m.CALL_ID,
        _series((*_PRICED_USAGE, _CALLS_ENDED), _SERVICE_FILTER, _MODEL_FILTER),
        "One call, for the per-call row (every per-call panel follows it). Empty when the "
        "exporter runs with PIPECAT_GRAFANA_CALL_ID_LABEL=false; All works in both modes.",
        multi=False,
    ),
)

# --------------------------------------------------------------------------------------------
# Building the JSON

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def build_dashboard(*, service_label: str = SERVICE_LABELS[0]) -> dict[str, Any]:
    """Build the dashboard, ready for Grafana's import or for file provisioning.

    The data source is a variable (``${datasource}``), not an ``__inputs`` entry, so the
    same JSON imports through the UI or the API and loads by file provisioning, which does
    not resolve ``${DS_...}`` inputs.

    Args:
        service_label: The label holding ``service.name``: ``job`` for Grafana Cloud and
            Prometheus's OTLP receiver (the default), ``service_name`` for VictoriaMetrics.
            Users can switch it in the dashboard.

    Returns:
        The dashboard as a JSON-ready dict.

    Raises:
        ValueError: ``service_label`` is not a valid label name.
    """
    if not _LABEL_NAME.fullmatch(service_label):
        raise ValueError(f"service_label must be a label name such as 'job', not {service_label!r}")
    return {
        "id": None,
        "uid": DASHBOARD_UID,
        "title": DASHBOARD_TITLE,
        "description": (
            "Turn latency, barge-ins, errors, tool calls, outcomes, service latency, usage "
            "and estimated cost of Pipecat voice bots, per call, exported by pipecat-grafana "
            "over OTLP. Generated by `pipecat-grafana dashboard`."
        ),
        "tags": ["pipecat", "voice", "opentelemetry"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [],
        "templating": {"list": _templating(service_label)},
        "panels": _panels(),
    }


def dashboard_json(*, service_label: str = SERVICE_LABELS[0]) -> str:
    """The dashboard as the JSON text Grafana imports (see ``build_dashboard``)."""
    return json.dumps(build_dashboard(service_label=service_label), indent=2) + "\n"


def _templating(service_label: str) -> list[dict[str, Any]]:
    labels = list(dict.fromkeys((service_label, *SERVICE_LABELS)))
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "description": "The Prometheus data source your bots' metrics go to (on Grafana "
            "Cloud: grafanacloud-<stack>-prom).",
            "current": {},
            "options": [],
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "includeAll": False,
            "multi": False,
        },
        {
            "name": "service_label",
            "label": "Service label",
            "type": "custom",
            "query": ",".join(labels),
            "description": "The label holding service.name: job on Grafana Cloud, Mimir and "
            "Prometheus's OTLP receiver; service_name on VictoriaMetrics.",
            "current": {"selected": True, "text": service_label, "value": service_label},
            "options": [
                {"selected": label == service_label, "text": label, "value": label}
                for label in labels
            ],
            "hide": 0,
            "includeAll": False,
            "multi": False,
        },
    ]
    for variable in VARIABLES:
        all_value: Any = ["$__all"] if variable.multi else "$__all"
        all_text: Any = ["All"] if variable.multi else "All"
        variables.append(
            {
                "name": variable.name,
                "label": variable.label,
                "type": "query",
                "datasource": DATASOURCE,
                "definition": variable.definition,
                "query": {
                    "query": variable.definition,
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                },
                "description": variable.description,
                "current": {"selected": True, "text": all_text, "value": all_value},
                "options": [],
                "includeAll": True,
                "allValue": ALL,
                "multi": variable.multi,
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "hide": 0,
            }
        )
    return variables


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "color": {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": panel.base_color, "value": None}]
            + [{"color": color, "value": value} for value, color in panel.thresholds],
        },
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.links:
        defaults["links"] = [{"title": title, "url": url} for title, url in panel.links]
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(query, ref_id) for query, ref_id in _with_ref_ids(panel.queries)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": _OPTIONS[panel.kind],
    }
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        }
    if panel.kind == "table":
        result["transformations"] = [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "Cost"}},
            }
        ]
    if panel.time_from:
        result["timeFrom"] = panel.time_from
    return result


def _with_ref_ids(queries: tuple[Query, ...]) -> Iterator[tuple[Query, str]]:
    for index, query in enumerate(queries):
        yield query, chr(ord("A") + index)


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    return {
        "refId": ref_id,
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "instant": query.instant,
        "range": not query.instant,
        "format": "table" if query.table else "time_series",
        "editorMode": "code",
    }


_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}
_OPTIONS: dict[str, dict[str, Any]] = {
    "stat": {
        "reduceOptions": _REDUCE_LAST,
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    },
    "timeseries": {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "bargauge": {
        "reduceOptions": _REDUCE_LAST,
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
    },
    "table": {
        "showHeader": True,
        "cellHeight": "sm",
        "sortBy": [{"displayName": "Cost", "desc": True}],
    },
}

# --------------------------------------------------------------------------------------------
# For tests and checks: every query, and Grafana's variable substitution


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
            for query, ref_id in _with_ref_ids(panel.queries):
                yield PanelQuery(row.title, panel, ref_id, query)


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's variables in ``expr`` with ``values``, as Grafana does before a query.

    Grafana substitutes text, anywhere (label names included). Tests use this to run the
    dashboard's queries against a database directly: ``$__rate_interval`` and ``$__range``
    become durations (``"1m"``, ``"45s"``), ``$__range_s`` a number of seconds, and the
    filter variables a regex (``.*`` for All).

    Args:
        expr: A query with ``$name`` or ``${name}`` variables.
        values: The value of each variable, by name without ``$``
            (``{"service_label": "job", "__range": "1h", ...}``).

    Returns:
        The query Grafana would send.

    Raises:
        KeyError: A variable of ``expr`` has no value.
    """
    return _VARIABLE.sub(lambda match: values[match.group(1) or match.group(2)], expr)
