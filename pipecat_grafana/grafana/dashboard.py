"""The Grafana dashboard, built from the metric contract rather than kept as hand-edited JSON.

A dashboard exported from Grafana's UI drifts from the metrics the code emits: a renamed
instrument leaves a panel that silently shows "No data". So every query is built from
``instruments`` (Prometheus names, label keys) by the helpers of ``promql``, the panels are
rows of a table (``panels``), and this module turns them, with the filter variables, into the
JSON Grafana imports. The tests run every query against real metrics databases fed by the
exporter.

Example::

    from pipecat_grafana.grafana.dashboard import build_dashboard, dashboard_json

    Path("voice-bot.json").write_text(dashboard_json())
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana.panels import (
    CALLS_ENDED,
    LATENCY_PANELS,
    ROWS,
    LatencyPanel,
    Panel,
    PanelQuery,
    Query,
    Row,
    panel_queries,
)
from pipecat_grafana.grafana.promql import (
    ALL,
    CALL_ID_VAR,
    MODEL_FILTER,
    MODEL_VAR,
    RANGE,
    SERVICE_FILTER,
    SERVICE_LABEL_VAR,
    SERVICE_LABELS,
    SERVICE_VAR,
    USAGE,
    quantile,
    range_quantile,
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
    "MODEL_VAR",
    "RANGE",
    "SERVICE_LABELS",
    "SERVICE_LABEL_VAR",
    "SERVICE_VAR",
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
SHIPPED_DASHBOARD = Path(__file__).parent / "pipecat-voice-bot.json"
"""The dashboard as shipped in the package: ``build_dashboard()`` with its defaults."""

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# --------------------------------------------------------------------------------------------
# Variables


def _series(specs: tuple[tuple[InstrumentSpec, str], ...], *filters: str) -> str:
    """A selector of several metrics, as ``label_values()`` takes it."""
    names = [spec.prometheus_name + suffix for spec, suffix in specs]
    if len(names) == 1:
        return names[0] + (f"{{{', '.join(filters)}}}" if filters else "")
    return "{" + ", ".join((f'__name__=~"{"|".join(names)}"', *filters)) + "}"


_PRICED_USAGE = tuple((spec, "") for spec in (*USAGE, m.COST))


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
        _series(_PRICED_USAGE, SERVICE_FILTER),
        "LLM, STT and TTS models. Filters the latency, usage and cost panels; the calls "
        "panels count every call.",
    ),
    Variable(
        m.CALL_ID,
        "Call",
        m.CALL_ID,
        _series((*_PRICED_USAGE, CALLS_ENDED), SERVICE_FILTER, MODEL_FILTER),
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
        "targets": [_target(query, ref_id) for ref_id, query in panel.lettered_queries()],
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


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    return {
        "refId": ref_id,
        "datasource": DATASOURCE,
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
    "table": {
        "showHeader": True,
        "cellHeight": "sm",
        "sortBy": [{"displayName": "Cost", "desc": True}],
    },
}
