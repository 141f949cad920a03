"""The dashboard: built from the contract, importable and provisionable, every query valid.

Fast checks of the JSON's structure and of every query's text; ``promtool`` parses every
query. The end-to-end test runs the queries against real databases fed by the exporter.
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipecat_grafana import cli
from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import dashboard
from tests.backends import require_tools

DASHBOARD = dashboard.build_dashboard()
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
QUERIES = [pq for pq in dashboard.panel_queries() if pq.panel.source == dashboard.PROMETHEUS]
"""The PromQL queries; test_dashboard_calls.py checks the Loki and Tempo ones."""
SERVICE_FILTER = f'{dashboard.SERVICE_LABEL_VAR}=~"([^/]+/)?{dashboard.SERVICE_VAR}"'
SELECTOR = re.compile(
    r"\b((?:voice|pipecat_grafana)_\w+)\{((?:\$\{\w+\}|[^{}])*)\}"
)  # ${vars} inside


def _spec_of(name: str) -> m.InstrumentSpec:
    for spec in m.ALL:
        base = spec.prometheus_name
        if name == base or (
            spec.kind is m.Kind.HISTOGRAM
            and name in (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        ):
            return spec
    raise AssertionError(f"{name} is not a metric of the contract")


def test_shipped_dashboard_is_the_generated_one():
    assert dashboard.SHIPPED_DASHBOARD.read_text() == dashboard.dashboard_json(), (
        "pipecat_grafana/grafana/ is stale: run "
        f"`pipecat-grafana dashboard --out {dashboard.SHIPPED_DASHBOARD.relative_to(Path.cwd())}`"
    )


def test_importable_and_provisionable_with_a_datasource_variable():
    text = dashboard.dashboard_json()
    assert "__inputs" not in DASHBOARD
    assert "${DS_" not in text  # file provisioning would not resolve it
    assert DASHBOARD["id"] is None and DASHBOARD["uid"] == dashboard.DASHBOARD_UID
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in PANELS:
        source = panel["datasource"]["type"]
        variable = dashboard.DATASOURCE_VARIABLES[source]
        assert panel["datasource"] == {"type": source, "uid": f"${{{variable}}}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    assert json.loads(text) == DASHBOARD


def test_only_loki_and_tempo_panels_are_left_to_the_form_checks():
    # Every query not run against a database here is knowingly so: a Loki or Tempo one.
    others = {pq.panel.source for pq in dashboard.panel_queries()} - {dashboard.PROMETHEUS}
    assert others == {dashboard.LOKI, dashboard.TEMPO}


def test_variables_service_model_and_call_id_default_to_all():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables) == [
        "datasource",
        "loki",
        "tempo",
        "service_label",
        "native_histograms",
        "service",
        m.MODEL,
        m.CALL_ID,
        "calls_min_cost_usd",
        "calls_min_turn_latency_ms",
    ]
    assert variables["service_label"]["current"]["value"] == "job"
    assert [o["value"] for o in variables["service_label"]["options"]] == list(
        dashboard.SERVICE_LABELS
    )
    for name in ("service", m.MODEL, m.CALL_ID):
        variable = variables[name]
        assert variable["includeAll"] and variable["allValue"] == ".*", name
        assert variable["current"]["value"] in ("$__all", ["$__all"]), name
        assert variable["query"]["query"] == variable["definition"], name
    assert variables["service"]["definition"].startswith(f"label_values({m.CALLS.prometheus_name}")
    assert variables["service"]["definition"].endswith(", ${service_label})")
    assert variables[m.CALL_ID]["definition"].endswith(f", {m.CALL_ID})")


def test_service_label_can_default_to_service_name():
    built = dashboard.build_dashboard(service_label="service_name")
    (variable,) = [v for v in built["templating"]["list"] if v["name"] == "service_label"]
    assert variable["current"]["value"] == "service_name"
    with pytest.raises(ValueError, match="service_label"):
        dashboard.build_dashboard(service_label='job"}')


def test_links_open_the_dashboard_they_are_in_with_its_filters():
    # Imported under another UID, a link to the shipped UID would open nothing, or another copy.
    links = [
        (panel["title"], link["url"])
        for panel in PANELS
        for link in panel["fieldConfig"]["defaults"].get("links", [])
        if not link["url"].startswith("/explore?")  # Loki and Tempo: test_dashboard_calls.py
    ]
    assert {"Most expensive calls", "Newest calls"} <= {title for title, _ in links}
    carried = [v["name"] for v in DASHBOARD["templating"]["list"] if v["name"] != m.CALL_ID]
    assert m.MODEL in carried
    for title, url in links:
        assert url.startswith("/d/${__dashboard.uid}/"), (title, url)
        assert dashboard.DASHBOARD_UID not in url, (title, url)
        for name in carried:
            assert f"${{{name}:queryparam}}" in url, (title, name)


def test_panel_keys_and_titles_are_unique():
    # Tests and links find a panel by its key; a user by its title.
    panels = [p for row in dashboard.ROWS for p in row.panels]
    assert len({p.key for p in panels}) == len(panels)
    assert len({p.title for p in panels}) == len(panels)


def test_every_panel_has_a_description_a_unit_and_thresholds():
    for panel in PANELS:
        defaults = panel["fieldConfig"]["defaults"]
        assert len(panel["description"]) > 40, panel["title"]
        assert defaults["unit"], panel["title"]
        steps = defaults["thresholds"]["steps"]
        assert steps[0]["value"] is None, panel["title"]
        values = [step["value"] for step in steps[1:]]
        assert values == sorted(values), panel["title"]
        assert panel["targets"], panel["title"]


def test_rows_and_panels_a_voice_team_needs():
    rows = {row.title: {p.key for p in row.panels} for row in dashboard.ROWS}
    assert list(rows) == [
        "Overview",
        "Conversation",
        "Errors and tool calls",
        "Health",
        "Latency",
        "Usage",
        "Cost",
        "Calls",
        "Per call",
        "Per call, from its summary record",
        "Per call, turn by turn",
    ]
    assert {
        "active-calls",
        "calls-per-hour",
        "average-call-duration",
        "cost-per-call",
        "cost-today",
    } <= rows["Overview"]
    latency = {q.query.expr for q in QUERIES if q.row == "Latency"}
    for spec in m.LATENCY:
        assert any(f"{spec.prometheus_name}_bucket" in expr for expr in latency), spec.name
    for q in (0.5, 0.95, 0.99):
        assert any(expr.startswith(f"(histogram_quantile({q:g}, ") for expr in latency), q
    assert {
        "tokens",
        "tts-characters",
        "tts-audio-minutes",
        "stt-audio-minutes",
        "cache-read-share",
    } <= rows["Usage"]
    assert {"cost-by-service", "projected-cost-per-day", "most-expensive-calls"} <= rows["Cost"]
    assert {"call-cost", "call-duration", "call-tokens"} <= rows["Per call"]
    # A call's latency comes from its summary record: latency histograms are process-wide.
    assert "call-record-latency" in rows["Per call, from its summary record"]
    assert {
        "calls-table-newest",
        "calls-table-most-expensive",
        "calls-table-slowest",
        "calls-table-by-outcome",
    } <= rows["Calls"]
    assert {"call-record-figures", "call-record", "call-traces"} <= rows[
        "Per call, from its summary record"
    ]
    (today,) = [p for p in PANELS if p["title"] == "Cost today"]
    assert today["timeFrom"] == "now/d"


def test_conversation_rows_show_every_conversation_instrument():
    rows = {row.title: {p.key for p in row.panels} for row in dashboard.ROWS}
    assert {
        "turn-latency",
        "turn-latency-breakdown",
        "turns-per-call",
        "interruptions-per-call",
        "interrupted-turns",
        "resolution-rate",
        "calls-by-outcome",
    } <= rows["Conversation"]
    assert {
        "errors-per-minute-by-service",
        "errors-per-minute-by-type",
        "errors",
        "tool-call-latency",
        "tool-calls-per-minute",
        "tool-calls",
    } <= rows["Errors and tool calls"]
    exprs = [q.query.expr for q in QUERIES if q.row in ("Conversation", "Errors and tool calls")]
    for spec in (*m.CONVERSATION, m.CALLS_ENDED):
        assert any(spec.prometheus_name in expr for expr in exprs), spec.name
    turn_latency = [q.query.expr for q in QUERIES if q.panel.key == "turn-latency"]
    assert [expr.split(",")[0] for expr in turn_latency] == [
        f"(histogram_quantile({q:g}" for q in (0.5, 0.95, 0.99)
    ]


def test_health_row_shows_every_health_instrument():
    rows = {row.title: {p.key for p in row.panels} for row in dashboard.ROWS}
    assert {
        "greeting-latency",
        "event-loop-lag",
        "startup",
        "exports-per-minute",
        "calls-dropped",
        "export-age",
    } <= rows["Health"]
    exprs = [q.query.expr for q in QUERIES if q.row == "Health"]
    for spec in m.HEALTH:
        assert any(spec.prometheus_name in expr for expr in exprs), spec.name
    lag = [q.query.expr for q in QUERIES if q.panel.key == "event-loop-lag"]
    assert [expr.split(",")[0] for expr in lag] == [
        "(histogram_quantile(0.99",
        "(histogram_quantile(1",
    ]
    (dropped,) = [q.query.expr for q in QUERIES if q.panel.key == "calls-dropped"]
    assert " or 0 * " in dropped  # none dropped is zero, not "No data"


def test_shares_and_per_call_averages_show_zero_rather_than_no_data():
    # A counter that was never incremented is never exported: no barge-in is 0, not "No data".
    for key in ("interruptions-per-call", "interrupted-turns", "resolution-rate"):
        (query,) = [q.query for q in QUERIES if q.panel.key == key]
        assert " or 0 * " in query.expr, key


def test_every_selector_uses_contract_names_and_the_right_filters():
    for pq in QUERIES:
        selectors = SELECTOR.findall(pq.query.expr)
        assert selectors, pq.query.expr
        for name, matchers in selectors:
            spec = _spec_of(name)
            where = f"{pq.panel.title}: {name}"
            assert SERVICE_FILTER in matchers, where
            assert (f'{m.CALL_ID}=~"{dashboard.CALL_ID_VAR}"' in matchers) == spec.per_call, where
            assert (f'{m.MODEL}=~"{dashboard.MODEL_VAR}"' in matchers) == (
                spec
                in (*m.LATENCY, m.LLM_TOKENS, m.TTS_CHARACTERS, m.TTS_AUDIO, m.STT_AUDIO, m.COST)
            ), where


def test_token_types_are_never_added_up():
    tokens = m.LLM_TOKENS.prometheus_name
    for pq in QUERIES:
        if tokens in pq.query.expr:
            assert m.TOKEN_TYPE in pq.query.labels or f'{m.TOKEN_TYPE}="' in pq.query.expr, (
                pq.panel.title
            )


def test_totals_over_the_range_are_exact_for_short_series():
    # increase() extrapolates past the end of per-call series on Prometheus and Mimir.
    for pq in QUERIES:
        assert "increase(" not in pq.query.expr, pq.panel.title
        if dashboard.RANGE in pq.query.expr:
            assert "max_over_time(" in pq.query.expr, pq.panel.title


# What callers wait for, each measurement linked to its call: Pipecat's service latencies,
# turn, tool-call and greeting latency (start-up and event-loop lag are the process's).
_LATENCY_HISTOGRAMS = [spec for spec in m.ALL if spec.exemplars]


def _is_latency_trend(panel: dict[str, Any]) -> bool:
    """A time series of latency histogram percentiles: where exemplars show."""
    buckets = [f"{spec.prometheus_name}_bucket{{" for spec in _LATENCY_HISTOGRAMS]
    return panel["type"] == "timeseries" and all(
        any(bucket in target.get("expr", "") for bucket in buckets) for target in panel["targets"]
    )


def test_exemplars_are_shown_exactly_on_the_latency_panels():
    shown = set()
    for panel in PANELS:
        for target in panel["targets"]:
            # No flag (Loki, Tempo) is no exemplars.
            assert target.get("exemplar", False) is _is_latency_trend(panel), panel["title"]
            if target.get("exemplar"):
                shown.add(panel["title"])
    keys = {p.title: p.key for row in dashboard.ROWS for p in row.panels}
    assert {
        "latency-ttfb",
        "latency-ttfa",
        "latency-ttfat",
        "turn-latency",
        "tool-call-latency",
    } <= {keys[title] for title in shown}
    for spec in _LATENCY_HISTOGRAMS:
        assert any(spec.prometheus_name in json.dumps(p) for p in PANELS if p["title"] in shown)


def test_panels_do_not_overlap():
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
    assert [p["id"] for p in DASHBOARD["panels"]] == list(range(1, len(DASHBOARD["panels"]) + 1))


def test_substitute_replaces_every_kind_of_variable():
    values = {"a": "1", "__range": "1h", "__range_s": "3600", "service_label": "job"}
    assert dashboard.substitute("x[$__range] / $__range_s ${service_label} $a", values) == (
        "x[1h] / 3600 job 1"
    )
    with pytest.raises(KeyError):
        dashboard.substitute("$missing", values)


VALUES = {
    "service_label": "job",
    "native_histograms": dashboard.NATIVE_READ,
    "service": ".*",
    "model": ".*",
    "call_id": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
}


@pytest.mark.parametrize("native", [dashboard.NATIVE_READ, dashboard.NATIVE_SKIP])
def test_promtool_parses_every_query(tmp_path, native):
    promtool = require_tools("promtool")["promtool"]
    values = {**VALUES, "native_histograms": native}
    exprs = [dashboard.substitute(pq.query.expr, values) for pq in QUERIES]
    exprs += [dashboard.substitute(v.promql, values) for v in dashboard.VARIABLES]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_dashboard_command_prints_the_json(capsys):
    assert cli.main(["dashboard"]) == 0
    assert capsys.readouterr().out == dashboard.dashboard_json()


def test_dashboard_command_writes_the_file(tmp_path, capsys):
    out = tmp_path / "voice-bot.json"
    args = ["--service-label", "service_name", "--no-native-histograms"]
    assert cli.main(["dashboard", "--out", str(out), *args]) == 0
    assert out.read_text() == dashboard.dashboard_json(
        service_label="service_name", native_histograms=False
    )
    assert capsys.readouterr().out == ""


def test_dashboard_command_refuses_a_bad_label(capsys):
    assert cli.main(["dashboard", "--service-label", "not a label"]) == 2
    assert "service_label" in capsys.readouterr().err


_HISTOGRAM_PARTS = re.compile(r"\b((?:voice|pipecat_grafana)_\w+?)_(bucket|count|sum)\{")


def test_every_histogram_read_also_reads_the_native_histogram():
    # One dashboard for classic and native histograms, and a fleet moving between them.
    read = 0
    for pq in QUERIES:
        expr = pq.query.expr
        for base, part in _HISTOGRAM_PARTS.findall(expr):
            where = f"{pq.panel.title} / {pq.ref_id}: {base}_{part}"
            native = re.escape(base) + r"\{"
            if part == "bucket":
                assert re.search(rf"histogram_quantile\([\d.]+, sum [^_]*\(rate\({native}", expr), (
                    where
                )
            else:
                # Per series, then summed: a process with both forms counts once.
                line = next(line for line in expr.splitlines() if f"histogram_{part}(" in line)
                assert line.strip().startswith(dashboard.NATIVE_VAR + " "), where
                assert re.search(rf"histogram_{part}\(last_over_time\({native}", line), where
            read += 1
    assert read >= 20  # every latency panel, the call duration, the calls that ended


def test_native_totals_become_a_comment_where_the_backend_has_no_native_histograms():
    # VictoriaMetrics refuses histogram_count and histogram_sum; the variable comments them out.
    skip = {**VALUES, "native_histograms": dashboard.NATIVE_SKIP}
    for pq in QUERIES:
        code = [
            line.split("#")[0] for line in dashboard.substitute(pq.query.expr, skip).splitlines()
        ]
        assert not any("histogram_count" in c or "histogram_sum" in c for c in code), pq.panel.title
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["native_histograms"]["current"]["value"] == dashboard.NATIVE_READ
    built = dashboard.build_dashboard(service_label="service_name", native_histograms=False)
    (variable,) = [v for v in built["templating"]["list"] if v["name"] == "native_histograms"]
    assert variable["current"]["value"] == dashboard.NATIVE_SKIP
    assert [o["value"] for o in variable["options"]] == [
        dashboard.NATIVE_READ,
        dashboard.NATIVE_SKIP,
    ]
