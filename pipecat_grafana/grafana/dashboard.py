"""The Grafana dashboard, built from the metric contract rather than kept as hand-edited JSON.

A dashboard exported from Grafana's UI drifts from the metrics the code emits: a renamed
instrument leaves a panel that silently shows "No data". So every query is built from
``instruments`` (Prometheus names, label keys) by the helpers of ``promql``, or from the keys
of the call summary and turn records by ``logql``, the panels are rows of a table
(``fleet_rows``, ``call_rows``, in the vocabulary of ``panels``), and this module turns them,
with the data source and filter variables, into the JSON Grafana imports. The tests run every PromQL query
against real metrics databases fed by the exporter, and check the LogQL and TraceQL for form
(no Loki or Tempo runs where they do).

Example::

    from pipecat_grafana.grafana.dashboard import build_dashboard, dashboard_json

    Path("voice-bot.json").write_text(dashboard_json())
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import logql
from pipecat_grafana.grafana.call_rows import CALL_ROWS
from pipecat_grafana.grafana.fleet_rows import FLEET_ROWS, LATENCY_PANELS
from pipecat_grafana.grafana.panels import (
    DATASOURCE_VARIABLES,
    LOKI,
    PROMETHEUS,
    TEMPO,
    LatencyPanel,
    Panel,
    Query,
    RecordField,
    Row,
)
from pipecat_grafana.grafana.promql import (
    ALL,
    CALL_ID_VAR,
    MODEL_FILTER,
    MODEL_VAR,
    NATIVE_READ,
    NATIVE_SKIP,
    NATIVE_VAR,
    RANGE,
    SERVICE_FILTER,
    SERVICE_LABEL_VAR,
    SERVICE_LABELS,
    SERVICE_NAME_REGEX,
    SERVICE_VAR,
    USAGE,
    quantile,
    range_total,
    rate,
    selector,
    substitute,
)
from pipecat_grafana.instruments import InstrumentSpec

__all__ = [
    "ALL",
    "CALL_ID_VAR",
    "DASHBOARD_UID",
    "DATASOURCE_VARIABLES",
    "LOKI",
    "MODEL_VAR",
    "NATIVE_READ",
    "NATIVE_SKIP",
    "NATIVE_VAR",
    "PROMETHEUS",
    "RANGE",
    "SERVICE_LABELS",
    "SERVICE_LABEL_VAR",
    "SERVICE_VAR",
    "SHIPPED_DASHBOARD",
    "TEMPO",
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
    "range_total",
    "rate",
    "selector",
    "substitute",
]

ROWS: tuple[Row, ...] = (*FLEET_ROWS, *CALL_ROWS)
"""The dashboard's rows, top to bottom."""


@dataclass(frozen=True)
class PanelQuery:
    """One query of the dashboard, with where it stands."""

    row: str
    panel: Panel
    ref_id: str
    query: Query


def panel_queries() -> Iterator[PanelQuery]:
    """Every query of every panel, in dashboard order (for tests and checks)."""
    for row in ROWS:
        for panel in row.panels:
            for ref_id, query in panel.lettered_queries():
                yield PanelQuery(row.title, panel, ref_id, query)


DASHBOARD_UID = "pipecat-voice-bot"
DASHBOARD_TITLE = "Pipecat voice bot"
SHIPPED_DASHBOARD = Path(__file__).parent / "pipecat-voice-bot.json"
"""The dashboard as shipped in the package: ``build_dashboard()`` with its defaults."""

DATASOURCES = {
    source: {"type": source, "uid": f"${{{variable}}}"}
    for source, variable in DATASOURCE_VARIABLES.items()
}
"""Each panel's data source, by type: a variable, chosen in the dashboard."""
DATASOURCE = DATASOURCES[PROMETHEUS]

# --------------------------------------------------------------------------------------------
# Variables


def _series(specs: tuple[tuple[InstrumentSpec, str], ...], *filters: str) -> str:
    """A selector of several metrics, as ``label_values()`` takes it."""
    names = [spec.prometheus_name + suffix for spec, suffix in specs]
    if len(names) == 1:
        return names[0] + (f"{{{', '.join(filters)}}}" if filters else "")
    return "{" + ", ".join((f'__name__=~"{"|".join(names)}"', *filters)) + "}"


_PRICED_USAGE = tuple((spec, "") for spec in (*USAGE, m.COST))
_ENDED_CALLS = ((m.SESSION_DURATION, "_count"), (m.SESSION_DURATION, ""))
"""A series per call that ended: the session duration histogram's count, classic or native."""


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
        regex: Grafana's ``/regex/`` applied to each value; its capture group is the value.
    """

    name: str
    label: str
    label_name: str
    series: str
    description: str
    multi: bool = True
    regex: str = ""

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
        "variable names, without the service.namespace/ that Grafana Cloud puts before it in "
        "job: Loki's service_name has none.",
        regex=SERVICE_NAME_REGEX,
    ),
    Variable(
        m.MODEL,
        "Model",
        m.MODEL,
        _series(_PRICED_USAGE, SERVICE_FILTER),
        "LLM, STT and TTS models. Filters the latency, usage and cost panels; the calls "
        "panels count every call.",
    ),
    Variable(
        m.CALL_ID,
        "Call",
        m.CALL_ID,
        _series((*_PRICED_USAGE, *_ENDED_CALLS), SERVICE_FILTER, MODEL_FILTER),
        "One call, for the per-call rows (every per-call panel follows it). Empty when the "
        "exporter runs with PIPECAT_GRAFANA_CALL_ID_LABEL=false: then click a call in the Calls "
        "row (or add &var-call_id=<id> to the URL), and the summary record row shows it. All "
        "works in both modes.",
        multi=False,
    ),
)

# --------------------------------------------------------------------------------------------
# Building the JSON

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def build_dashboard(
    *, service_label: str = SERVICE_LABELS[0], native_histograms: bool = True
) -> dict[str, Any]:
    """Build the dashboard, ready for Grafana's import or for file provisioning.

    The data source is a variable (``${datasource}``), not an ``__inputs`` entry, so the
    same JSON imports through the UI or the API and loads by file provisioning, which does
    not resolve ``${DS_...}`` inputs.

    Args:
        service_label: The label holding ``service.name``: ``job`` for Grafana Cloud and
            Prometheus's OTLP receiver (the default), ``service_name`` for VictoriaMetrics.
            Users can switch it in the dashboard.
        native_histograms: Whether the totals read native histograms too (the
            ``native_histograms`` variable's default): true for Grafana Cloud, Mimir and
            Prometheus, false for VictoriaMetrics, which refuses ``histogram_count``. Users
            can switch it in the dashboard.

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
        "templating": {"list": _templating(service_label, native_histograms)},
        "panels": _panels(),
    }


def dashboard_json(
    *, service_label: str = SERVICE_LABELS[0], native_histograms: bool = True
) -> str:
    """The dashboard as the JSON text Grafana imports (see ``build_dashboard``)."""
    built = build_dashboard(service_label=service_label, native_histograms=native_histograms)
    return json.dumps(built, indent=2) + "\n"


_DATASOURCE_CHOICES = (
    (
        PROMETHEUS,
        "Data source",
        "The Prometheus data source your bots' metrics go to (on Grafana Cloud: "
        "grafanacloud-<stack>-prom). Link its exemplars' trace_id to Tempo in its settings to "
        "go from a latency point to its trace.",
    ),
    (
        LOKI,
        "Logs",
        "The Loki data source the call summary records go to (on Grafana Cloud: "
        "grafanacloud-<stack>-logs), for the Calls rows.",
    ),
    (
        TEMPO,
        "Traces",
        "The Tempo data source Pipecat's traces go to when tracing is on (on Grafana Cloud: "
        "grafanacloud-<stack>-traces).",
    ),
)
_CALL_THRESHOLDS = (
    (
        logql.MIN_COST_VAR,
        "Calls costing over (USD)",
        "The 'Most expensive calls (summary records)' table lists the calls that cost more. "
        "Grafana fetches at most 1000 records: with many calls, raise it until the list fits.",
    ),
    (
        logql.MIN_TURN_LATENCY_VAR,
        "Calls slower than (ms)",
        "The 'Slowest calls' table lists the calls whose turn latency p95 is higher. Grafana "
        "fetches at most 1000 records: with many calls, raise it until the list fits.",
    ),
)


_NATIVE_CHOICES = (("read", NATIVE_READ), ("skip (VictoriaMetrics)", NATIVE_SKIP))
"""The ``native_histograms`` variable's options: its text and its value."""


def _templating(service_label: str, native_histograms: bool) -> list[dict[str, Any]]:
    native = _NATIVE_CHOICES[0 if native_histograms else 1]
    labels = list(dict.fromkeys((service_label, *SERVICE_LABELS)))
    variables: list[dict[str, Any]] = [
        {
            "name": DATASOURCE_VARIABLES[source],
            "label": label,
            "type": "datasource",
            "query": source,
            "description": description,
            "current": {},
            "options": [],
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "includeAll": False,
            "multi": False,
        }
        for source, label, description in _DATASOURCE_CHOICES
    ]
    variables += [
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
        {
            "name": NATIVE_VAR.strip("${}"),
            "label": "Native histograms",
            "type": "custom",
            "query": ", ".join(f"{text} : {value}" for text, value in _NATIVE_CHOICES),
            "description": "Whether the totals read native histograms as well as classic ones: "
            "read on Grafana Cloud, Mimir and Prometheus; skip on VictoriaMetrics, which has "
            "none and refuses histogram_count. Percentiles read both forms either way.",
            "current": {"selected": True, "text": native[0], "value": native[1]},
            "options": [
                {"selected": choice == native, "text": choice[0], "value": choice[1]}
                for choice in _NATIVE_CHOICES
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
                "regex": variable.regex,
                "sort": 1,
                "hide": 0,
            }
        )
    for threshold, label, description in _CALL_THRESHOLDS:
        value = {"selected": True, "text": "0", "value": "0"}
        variables.append(
            {
                "name": threshold.lstrip("$"),
                "label": label,
                "type": "textbox",
                "query": "0",
                "description": description,
                "current": value,
                "options": [value],
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
        "thresholds": _thresholds(panel.base_color, panel.thresholds),
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.links:
        defaults["links"] = [{"title": title, "url": url} for title, url in panel.links]
    options = dict(_OPTIONS[panel.kind])
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCES[panel.source],
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [
            _target(panel.source, query, ref_id) for ref_id, query in panel.lettered_queries()
        ],
        "fieldConfig": {
            "defaults": defaults,
            "overrides": [_field_override(field, panel.kind) for field in panel.fields],
        },
        "options": options,
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
    if panel.kind == "stat":
        options["reduceOptions"] = {**_REDUCE_LAST, "calcs": [panel.reduce]}
    if panel.source == LOKI and panel.fields:
        result["transformations"] = _record_transformations(panel)
        if panel.kind == "table":
            defaults["custom"] = {"filterable": True}
    elif panel.kind == "table" and panel.source == PROMETHEUS:
        result["transformations"] = [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "Cost"}},
            }
        ]
        options["sortBy"] = [{"displayName": "Cost", "desc": True}]
    if panel.time_from:
        result["timeFrom"] = panel.time_from
    return result


def _thresholds(base_color: str, steps: tuple[tuple[float, str], ...]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": base_color, "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


# Grafana returns each Loki record's stream labels and structured metadata together, as the
# object in the record's "labels" field: the calls panels make a field of each key.
_LOKI_LABELS_FIELD = "labels"


def _record_transformations(panel: Panel) -> list[dict[str, Any]]:
    """Loki records to a table of ``panel.fields``: one row per call, typed, sorted."""
    keys = [field.key for field in panel.fields]
    conversions = [
        {"targetField": field.key, "destinationType": field.kind}
        for field in panel.fields
        if field.kind != "string"
    ]
    return [
        {
            "id": "extractFields",
            "options": {"source": _LOKI_LABELS_FIELD, "format": "auto", "replace": True},
        },
        {"id": "filterFieldsByName", "options": {"include": {"names": keys}}},
        {
            "id": "organize",
            "options": {
                "indexByName": {key: index for index, key in enumerate(keys)},
                "excludeByName": {},
                "renameByName": {},
            },
        },
        {"id": "convertFieldType", "options": {"conversions": conversions, "fields": {}}},
        *(
            {"id": "sortBy", "options": {"sort": [{"field": key, "desc": desc}], "fields": {}}}
            for key, desc in panel.sort_by
        ),
    ]


def _field_override(field: RecordField, kind: str) -> dict[str, Any]:
    """The title, unit and colors of one key of the record."""
    properties: list[dict[str, Any]] = [{"id": "displayName", "value": field.title}]
    if field.unit:
        properties.append({"id": "unit", "value": field.unit})
    if field.decimals is not None:
        properties.append({"id": "decimals", "value": field.decimals})
    if field.thresholds:
        properties.append({"id": "thresholds", "value": _thresholds("green", field.thresholds)})
    if kind == "table" and field.gauge:
        # A bar from 0 to the column's largest value: the longest bar is the slowest row.
        properties += [
            {"id": "min", "value": 0},
            {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
        ]
    elif kind == "table" and field.thresholds:
        properties.append({"id": "custom.cellOptions", "value": {"type": "color-text"}})
    return {"matcher": {"id": "byName", "options": field.key}, "properties": properties}


def _target(source: str, query: Query, ref_id: str) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": ref_id, "datasource": DATASOURCES[source]}
    if source == LOKI and query.instant:
        # A metric query over the records: one value per series over the dashboard's range.
        return {
            **target,
            "expr": query.expr,
            "queryType": "instant",
            "legendFormat": query.legend or "__auto",
            "editorMode": "code",
        }
    if source == LOKI:
        # A log query: one row per record.
        return {**target, "expr": query.expr, "queryType": "range", "editorMode": "code"}
    if source == TEMPO:
        return {
            **target,
            "queryType": "traceql",
            "query": query.expr,
            "limit": 20,
            "tableType": "traces",
        }
    return {
        **target,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "instant": query.instant,
        "range": not query.instant,
        "format": "table" if query.table else "time_series",
        "exemplar": query.exemplars,
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
    "table": {"showHeader": True, "cellHeight": "sm"},
}
