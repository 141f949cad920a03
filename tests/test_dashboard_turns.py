"""The dashboard's turn panels: a call's turns as a table, and turn latency by turn number.

Both read the turn records (``event_name="pipecat_turn"``) in Loki. No Loki runs here: the
queries are checked for form by ``tests.query_forms`` and their keys against a real
``TurnRecord``'s (``test_dashboard_calls.py`` checks every Loki panel that way); these tests
check what each panel is for.
"""

from typing import Any

import pytest

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts, dashboard, logql
from pipecat_grafana.summary import OTHER_KEY
from pipecat_grafana.turns import TURN_EVENT_NAME, TURN_LOG_KEYS
from tests.query_forms import parse_logql, parse_logql_metric
from tests.test_dashboard_calls import (
    ALL_VALUES,
    DASHBOARD,
    ONE_CALL_VALUES,
    PANELS,
    TURN_RECORD,
    _explore_queries,
    _links,
    _record_keys_used,
    _substitute,
)


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for p in PANELS if p["title"] == title]
    return panel


TURNS_TABLE = _panel("Call turns")
BY_TURN = _panel("Turn latency by turn number")


def _row_of(panel: dict[str, Any]) -> str:
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    above = [row for row in rows if row["gridPos"]["y"] < panel["gridPos"]["y"]]
    return above[-1]["title"]


def _override(panel: dict[str, Any], key: str) -> dict[str, Any]:
    (override,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == key]
    return {prop["id"]: prop["value"] for prop in override["properties"]}


@pytest.mark.parametrize("values", [ALL_VALUES, ONE_CALL_VALUES], ids=["all", "one-call"])
def test_the_call_view_lists_the_chosen_calls_turn_records(values):
    assert TURNS_TABLE["type"] == "table" and TURNS_TABLE["datasource"]["type"] == dashboard.LOKI
    assert _row_of(TURNS_TABLE).startswith("Per call")
    (target,) = TURNS_TABLE["targets"]
    assert target["queryType"] == "range"  # a log query: one row per turn record
    stages = parse_logql(_substitute(target["expr"], values)).stages
    assert [(s.key, s.op, s.value) for s in stages] == [
        ("event_name", "=", TURN_EVENT_NAME),
        (logql.CALL_ID, "=~", values["call_id"]),
    ]


def test_the_turns_are_in_the_order_the_caller_spoke_call_by_call():
    sorts = [t["options"]["sort"] for t in TURNS_TABLE["transformations"] if t["id"] == "sortBy"]
    # Grafana applies them in order and keeps the order of rows the next finds equal: the
    # last groups the turns by call, the one before orders each call's turns by number.
    assert sorts == [[{"field": logql.TURN, "desc": False}], [{"field": "call_id", "desc": False}]]
    assert logql.TURN in _record_keys_used(TURNS_TABLE)["number"]  # 10 after 9, not after 1


def test_the_turns_table_shows_timing_contributions_interruptions_tools_errors_and_words():
    shown = _record_keys_used(TURNS_TABLE)["fields"]
    assert {
        logql.TURN,
        logql.TURN_LATENCY,
        logql.INTERRUPTED,
        logql.TOOL_CALLS,
        logql.TOOL_CALL_LIST,
        logql.ERRORS,
        *logql.TURN_TEXTS,
    } <= shown
    assert set(logql.TURN_TEXTS) <= set(TURN_LOG_KEYS)
    # Where the latency went: every contribution Pipecat names, and the rest.
    contributions = {logql.CONTRIBUTION.format(key=key) for key in (*m.CONTRIBUTIONS, OTHER_KEY)}
    assert contributions <= set(TURN_RECORD)
    assert contributions <= shown
    for key in contributions:
        assert _override(TURNS_TABLE, key)["unit"] == "ms"
    assert _record_keys_used(TURNS_TABLE)["boolean"] == {logql.INTERRUPTED}


def test_the_slowest_turn_stands_out():
    latency = _override(TURNS_TABLE, logql.TURN_LATENCY)
    # A bar from 0 per turn: the longest is the slowest; colored at the alert's levels.
    assert latency["custom.cellOptions"]["type"] == "gauge" and latency["min"] == 0
    assert latency["unit"] == "ms"
    steps = [(step["value"], step["color"]) for step in latency["thresholds"]["steps"]]
    level = alerts.DEFAULT_TURN_LATENCY_P95_MS
    assert steps == [(None, "green"), (level / 2, "orange"), (level, "red")]


def test_a_turn_links_to_its_record_in_explore():
    links = {link["title"]: link["url"] for link in _links(TURNS_TABLE)}
    source, query = _explore_queries(links["Turn record in Explore"])
    assert source == dashboard.LOKI
    stages = parse_logql(query["expr"]).stages
    assert [(s.key, s.op, s.value) for s in stages] == [
        ("event_name", "=", TURN_EVENT_NAME),
        (logql.CALL_ID, "=", TURN_RECORD[logql.CALL_ID]),
        (logql.TURN, "==", float(TURN_RECORD[logql.TURN])),
    ]
    assert {"Summary record in Explore", "Trace in Tempo (with tracing on)"} <= set(links)


@pytest.mark.parametrize("values", [ALL_VALUES, ONE_CALL_VALUES], ids=["all", "one-call"])
def test_turn_latency_by_turn_number_is_a_bounded_metric_query_over_the_turn_records(values):
    assert _row_of(BY_TURN) == "Conversation"
    assert BY_TURN["datasource"]["type"] == dashboard.LOKI
    quantiles = []
    for target in BY_TURN["targets"]:
        assert target["queryType"] == "instant"  # one value per turn number over the range
        assert target["legendFormat"].startswith(f"turn {{{{{logql.TURN}}}}} ")
        metric = parse_logql_metric(_substitute(target["expr"], values))
        assert metric.window == values["__range"]
        assert (metric.unwrap, metric.by) == (logql.TURN_LATENCY, (logql.TURN,))
        stages = {(s.key, s.op): s.value for s in metric.records.stages}
        assert stages[("event_name", "=")] == TURN_EVENT_NAME
        # At most FIRST_TURNS series per query, whatever the length of the calls.
        assert stages[(logql.TURN, "<=")] == logql.FIRST_TURNS
        # A turn whose latency was not measured has no key: left out, not an unwrap error.
        assert stages[(logql.TURN_LATENCY, ">=")] == 0
        quantiles.append(metric.quantile)
    assert quantiles == [0.5, 0.95]
    assert "transformations" not in BY_TURN  # series, not records


def test_over_turns_takes_a_quantile_exactly_where_logql_does():
    assert logql.over_turns("avg_over_time", logql.TURN_LATENCY).startswith("avg_over_time({")
    with pytest.raises(ValueError, match="quantile"):
        logql.over_turns("quantile_over_time", logql.TURN_LATENCY)
    with pytest.raises(ValueError, match="quantile"):
        logql.over_turns("avg_over_time", logql.TURN_LATENCY, quantile=0.5)


def test_the_per_call_metric_panels_point_to_loki_when_their_series_are_absent():
    per_call = [p for p in PANELS if _row_of(p) == "Per call"]
    assert per_call
    for panel in per_call:
        assert "PIPECAT_GRAFANA_CALL_ID_LABEL" in panel["description"], panel["title"]
        assert "turns from their records, in Loki" in panel["description"], panel["title"]
