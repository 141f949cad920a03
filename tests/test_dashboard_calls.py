"""The dashboard's calls panels (Loki, Tempo) and its data source variables.

No Loki or Tempo runs here: every LogQL and TraceQL query of the dashboard, in its targets
and in its links to Explore, is checked for form by ``tests.query_forms``, and every key of
the call summary or turn record it reads is checked against the keys a ``CallSummary`` or a
``TurnRecord`` with every field set really produces. The Prometheus panels run against real databases in
``test_e2e_grafana.py``.
"""

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import dashboard, logql
from pipecat_grafana.recorder import _LATENCIES
from pipecat_grafana.summary import MAX_KEYS_PER_COUNT, CallSummary, LatencyStats, ServiceCost
from pipecat_grafana.turns import ToolCall, TurnRecord
from tests.query_forms import (
    FormError,
    LogQuery,
    MetricQuery,
    parse_logql,
    parse_logql_metric,
    parse_traceql,
)

DASHBOARD = dashboard.build_dashboard()
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
RECORD_PANELS = [p for p in PANELS if p["datasource"]["type"] == dashboard.LOKI]
LOG_PANELS = [p for p in RECORD_PANELS if all(t["queryType"] == "range" for t in p["targets"])]
"""The Loki panels that list records (the others are metric queries over them)."""
TRACE_PANELS = [p for p in PANELS if p["datasource"]["type"] == dashboard.TEMPO]

# Grafana's variables, as a user may set them: All, or one service and one call.
ALL_VALUES = {
    "service": ".*",
    "call_id": ".*",
    logql.MIN_COST_VAR.lstrip("$"): "0",
    logql.MIN_TURN_LATENCY_VAR.lstrip("$"): "0",
    "__range": "6h",
}
ONE_CALL_VALUES = {
    "service": "voice-rag-bot",
    "call_id": "399ee786-ea35-42b3-b355-7b5024a7cc80",
    logql.MIN_COST_VAR.lstrip("$"): "0.25",
    logql.MIN_TURN_LATENCY_VAR.lstrip("$"): "1500",
    "__range": "15m",
}
# What a data link reads from the row it is clicked on, and the link's other variables.
ROW_FIELD = re.compile(r"\$\{__data\.fields\.(\w+)(?::percentencode)?\}")
LINK_VALUES = {"loki": "loki-uid", "tempo": "tempo-uid", "__from": "1700000000000", "__to": "1"}


def _full_summary() -> CallSummary:
    """A call summary with every field set, so its record has every key it can have."""
    stats = {"count": 4, "avg_ms": 900.0, "min_ms": 700.0, "max_ms": 1400.0, "p50_ms": 871.0}
    summary = CallSummary(
        call_id="399ee786-ea35-42b3-b355-7b5024a7cc80",
        service_name="voice-rag-bot",
        llm_model="gpt-4o",
        stt_model="gladia",
        tts_model="cartesia",
        started_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        duration_seconds=6.9,
        end_reason="ended",
        tokens={"prompt": 2533, "completion": 136, "cache_read": 1664},
        tts_characters=437,
        tts_audio_seconds=12.5,
        greeting_latency_ms=850.0,
        stt_audio_seconds=12.0,
        # One of each latency metric the recorder reports (its names are the summary's).
        latency=[
            LatencyStats(metric=name, processor="LLM", p95_ms=384.0, **stats)
            for name in [*(latency.name for latency in _LATENCIES.values()), "function_call"]
        ],
        costs=[ServiceCost(service_type="llm", model="gpt-4o", usd=0.0056)],
        total_cost_usd=0.0056,
        unpriced_models=["tts:cartesia"],
        turns=4,
        interruptions=1,
        turn_latency=LatencyStats(metric="turn", processor="", p95_ms=1437.0, **stats),
        errors={"rate_limit": 1},
        function_calls={"lookup_account": 1},
        attributes={"outcome": "resolved"},
        not_measured=["latency"],  # for its key: a real call with it has no latency
    )
    unset = [
        name
        for name, field in CallSummary.model_fields.items()
        if getattr(summary, name) == field.get_default(call_default_factory=True)
    ]
    assert not unset, f"set these fields too, so their keys are compared: {unset}"
    return summary


def _full_turn() -> TurnRecord:
    """A turn record with every field set, so that it has every key it can have."""
    # Every contribution Pipecat names, and more than the bound, so that the rest is "other".
    contributions = {key: 100.0 + i for i, key in enumerate(m.CONTRIBUTIONS)}
    contributions |= {f"extra_{i}": 0.5 for i in range(MAX_KEYS_PER_COUNT)}
    turn = TurnRecord(
        call_id=RECORD["call_id"],
        turn=3,
        interrupted=True,
        started_at=datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC),
        latency_ms=1437.2,
        contributions_ms=contributions,
        ttfb_ms={"llm": 384.0, "tts": 210.5},
        tool_calls=1,
        tool_call_list=[ToolCall(name="lookup_account", duration_ms=220.0, status="ok")],
        errors={"rate_limit": 1},
        user_text="What is my balance?",
        bot_text="Let me look that up.",
    )
    unset = [
        name
        for name, field in TurnRecord.model_fields.items()
        if getattr(turn, name) == field.get_default(call_default_factory=True)
    ]
    assert not unset, f"set these fields too, so their keys are compared: {unset}"
    return turn


RECORD = _full_summary().log_attributes()
TURN_RECORD = _full_turn().log_attributes()
RECORDS = {record["event_name"]: record for record in (RECORD, TURN_RECORD)}
"""The records a Loki query may select, by their event name."""
STREAM_LABELS = {logql.SERVICE_STREAM_LABEL}
"""What a Loki record carries besides the summary's attributes: the service's stream label."""


def _parse(query: str) -> tuple[LogQuery, MetricQuery | None]:
    """A LogQL query as the records it selects, and the metric query over them if it is one."""
    if query.lstrip().startswith("{"):
        return parse_logql(query), None
    metric = parse_logql_metric(query)
    return metric.records, metric


def _record_of(records: LogQuery) -> dict[str, Any]:
    """The record a query selects, by the event name its first stage asks for."""
    event = records.stages[0]
    assert (event.key, event.op) == ("event_name", "="), records
    return RECORDS[str(event.value)]


def _substitute(text: str, values: dict[str, str]) -> str:
    return dashboard.substitute(text, values)


def _explore_queries(url: str) -> tuple[str, dict[str, Any]]:
    """The data source type and query of a link to Explore, as Grafana opens it."""
    row = {**TURN_RECORD, **RECORD}  # the same call_id; the turn's own keys
    url = ROW_FIELD.sub(
        lambda found: str(row[found.group(1)]) if found.group(1) in row else "svc", url
    )
    url = _substitute(url, LINK_VALUES)
    parsed = urlparse(url)
    assert parsed.path == "/explore", url
    (panes,) = parse_qs(parsed.query)["panes"]
    (pane,) = json.loads(panes).values()
    (query,) = pane["queries"]
    assert pane["datasource"] == query["datasource"]["uid"], url
    assert pane["range"] == {"from": LINK_VALUES["__from"], "to": LINK_VALUES["__to"]}, url
    return query["datasource"]["type"], query


def _links(panel: dict[str, Any]) -> list[dict[str, str]]:
    return panel["fieldConfig"]["defaults"].get("links", [])


def _loki_queries() -> list[tuple[str, str]]:
    """Every LogQL query of the dashboard, with where it is, variables as Grafana leaves them."""
    found = [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in RECORD_PANELS
        for target in panel["targets"]
    ]
    for panel in PANELS:
        for link in _links(panel):
            if link["url"].startswith("/explore"):
                source, query = _explore_queries(link["url"])
                if source == dashboard.LOKI:
                    found.append((f"{panel['title']} / {link['title']}", query["expr"]))
    return found


def _tempo_queries() -> list[tuple[str, str]]:
    found = [
        (f"{panel['title']} / {target['refId']}", target["query"])
        for panel in TRACE_PANELS
        for target in panel["targets"]
    ]
    for panel in PANELS:
        for link in _links(panel):
            if link["url"].startswith("/explore"):
                source, query = _explore_queries(link["url"])
                if source == dashboard.TEMPO:
                    found.append((f"{panel['title']} / {link['title']}", query["query"]))
    return found


# --------------------------------------------------------------------------------------------
# The checker itself: strict, or it proves nothing


@pytest.mark.parametrize(
    "query",
    [
        '{service_name=~".*"} | event_name="x"',  # every matcher matches "": Loki refuses
        '{service_name=""}',
        '{service_name!="a"}',
        "{}",
        "| cost_usd > 1",
        '{service_name="a"} | json',
        '{service_name="a"} | json | cost_usd > 1',
        '{service_name="a"} |= "call"',
        '{service_name="a"} | cost_usd >',
        '{service_name="a"} | cost_usd > "1"',
        '{service_name="a"} | call_id=x',
        '{service_name="a"} | call_id="x" |',
        '{service_name="a"} | call_id=~"("',
        '{service_name="a", } | call_id="x"',
        '{service_name="a"} | cost_usd > 1.',
        '{service_name="a"} | call_id="$call_id"',
        'sum(count_over_time({service_name="a"}[5m]))',
        '{service_name="a"} | call_id="x" | line_format "{{.call_id}}"',
        '{service_name="a"} | unwrap latency_ms',
    ],
)
def test_the_logql_checker_refuses_what_is_outside_the_subset(query):
    with pytest.raises(FormError):
        parse_logql(query)


_TURNS = '{service_name="a"} | event_name="pipecat_turn"'


@pytest.mark.parametrize(
    "query",
    [
        f"sum(count_over_time({_TURNS}[5m]))",
        f"avg_over_time({_TURNS} | unwrap latency_ms [1h])",  # no grouping: one series
        f"avg_over_time({_TURNS} | unwrap latency_ms [$__range]) by (turn)",
        f"avg_over_time({_TURNS} | unwrap latency_ms) by (turn)",
        f"avg_over_time({_TURNS} | unwrap latency_ms [1h]) by ()",
        f"avg_over_time(0.5, {_TURNS} | unwrap latency_ms [1h]) by (turn)",
        f"quantile_over_time({_TURNS} | unwrap latency_ms [1h]) by (turn)",
        f"quantile_over_time(95, {_TURNS} | unwrap latency_ms [1h]) by (turn)",
        f"rate({_TURNS} | unwrap latency_ms [1h]) by (turn)",
        f"avg_over_time({_TURNS} | json | unwrap latency_ms [1h]) by (turn)",
        'avg_over_time({service_name=~".*"} | unwrap latency_ms [1h]) by (turn)',
    ],
)
def test_the_logql_metric_checker_refuses_what_is_outside_the_subset(query):
    with pytest.raises(FormError):
        parse_logql_metric(query)


def test_the_logql_metric_checker_reads_the_subset():
    parsed = parse_logql_metric(
        f"quantile_over_time(0.95, {_TURNS} | turn <= 9 | unwrap latency_ms [6h]) by (turn)"
    )
    assert (parsed.function, parsed.quantile, parsed.unwrap, parsed.window, parsed.by) == (
        "quantile_over_time",
        0.95,
        "latency_ms",
        "6h",
        ("turn",),
    )
    assert [(s.key, s.op, s.value) for s in parsed.records.stages] == [
        ("event_name", "=", "pipecat_turn"),
        ("turn", "<=", 9.0),
    ]


def test_the_logql_checker_reads_the_subset():
    parsed = parse_logql(
        '{service_name=~".*", service_name!=""} | event_name="pipecat_call_summary" '
        '| cost_usd > 0.05 | call_id=~"a-b" | turns >= 2'
    )
    assert [(s.key, s.op, s.value) for s in parsed.selector] == [
        ("service_name", "=~", ".*"),
        ("service_name", "!=", ""),
    ]
    assert [(s.key, s.op, s.value) for s in parsed.stages] == [
        ("event_name", "=", "pipecat_call_summary"),
        ("cost_usd", ">", 0.05),
        ("call_id", "=~", "a-b"),
        ("turns", ">=", 2.0),
    ]
    assert parse_traceql('{ span.conversation.id =~ "a.*" }').key == "span.conversation.id"


@pytest.mark.parametrize(
    "query",
    [
        "{ span.conversation.id = }",
        '{ span.conversation.id = "a" && span.x = "b" }',
        'span.conversation.id = "a"',
        '{ span.conversation.id == "a" }',
        '{ .conversation.id = "a" }',
        '{ span.conversation. = "a" }',
        '{ span.conversation.id = "$call_id" }',
        '{ span.conversation.id =~ "(" }',
        '{ span.conversation.id = "a" } | count() > 1',
    ],
)
def test_the_traceql_checker_refuses_what_is_outside_the_subset(query):
    with pytest.raises(FormError):
        parse_traceql(query)


# --------------------------------------------------------------------------------------------
# The dashboard's queries


def test_the_dashboard_has_loki_and_tempo_queries_in_panels_and_links():
    loki, tempo = _loki_queries(), _tempo_queries()
    assert len(RECORD_PANELS) >= 4 and TRACE_PANELS
    assert any("/ Summary record in Explore" in where for where, _ in loki)
    assert any("/ Trace in Tempo" in where for where, _ in tempo)


@pytest.mark.parametrize("values", [ALL_VALUES, ONE_CALL_VALUES], ids=["all", "one-call"])
def test_every_logql_query_parses_and_selects_call_summaries_or_turn_records(values):
    selected = set()
    for where, query in _loki_queries():
        parsed, _ = _parse(_substitute(query, values))
        assert {matcher.key for matcher in parsed.selector} <= STREAM_LABELS, where
        # One kind of record and nothing else: the event name first, as the record has it.
        event = parsed.stages[0]
        assert (event.key, event.op) == ("event_name", "="), where
        assert event.value in RECORDS, where
        selected.add(event.value)
    assert selected == set(RECORDS)


@pytest.mark.parametrize("values", [ALL_VALUES, ONE_CALL_VALUES], ids=["all", "one-call"])
def test_every_traceql_query_parses_and_finds_the_calls_conversation(values):
    for where, query in _tempo_queries():
        parsed = parse_traceql(_substitute(query, values))
        assert parsed.key == f"span.{logql.CONVERSATION_ID}", where


def test_the_chosen_call_filters_the_records_and_all_lists_every_call():
    # The call variable's All is ".*": a regex filter passes every call, equality none.
    per_call = [p for p in RECORD_PANELS if "$call_id" in p["targets"][0]["expr"]]
    assert {record["event_name"] for record in RECORDS.values()} == {
        _panel_record(p)["event_name"] for p in per_call
    }
    for panel in per_call:
        (target,) = panel["targets"]
        stages = parse_logql(_substitute(target["expr"], ALL_VALUES)).stages
        (call,) = [s for s in stages if s.key == logql.CALL_ID]
        assert call.regex and re.fullmatch(str(call.value), RECORD[logql.CALL_ID]), panel["title"]


# --------------------------------------------------------------------------------------------
# Every key read is a key the record has


def _record_keys_used(panel: dict[str, Any]) -> dict[str, set[str]]:
    """The record keys a Loki panel reads, by what reads them."""
    used: dict[str, set[str]] = {
        "fields": set(),
        "number": set(),
        "boolean": set(),
        "time": set(),
        "override": set(),
        "sort": set(),
    }
    for transformation in panel.get("transformations", []):
        options = transformation["options"]
        match transformation["id"]:
            case "extractFields":
                assert options["source"] == "labels", panel["title"]
            case "filterFieldsByName":
                used["fields"] |= set(options["include"]["names"])
            case "organize":
                used["fields"] |= set(options["indexByName"])
                assert not options["renameByName"] and not options["excludeByName"]
            case "convertFieldType":
                for conversion in options["conversions"]:
                    used[conversion["destinationType"]].add(conversion["targetField"])
            case "sortBy":
                used["sort"] |= {sort["field"] for sort in options["sort"]}
            case other:
                raise AssertionError(f"{panel['title']}: unexpected transformation {other}")
    for override in panel["fieldConfig"]["overrides"]:
        assert override["matcher"]["id"] == "byName", panel["title"]
        used["override"].add(override["matcher"]["options"])
    return used


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_every_key_a_query_reads_is_a_key_of_its_record():
    for values in (ALL_VALUES, ONE_CALL_VALUES):
        for where, query in _loki_queries():
            parsed, metric = _parse(_substitute(query, values))
            record = _record_of(parsed)
            for stage in parsed.stages:
                assert stage.key in record, f"{where}: the record has no {stage.key}"
                if isinstance(stage.value, float):
                    # A numeric filter on a text key would drop every record.
                    assert _is_number(record[stage.key]), (where, stage.key)
                else:
                    assert isinstance(record[stage.key], str), (where, stage.key)
            if metric is not None:
                assert _is_number(record[metric.unwrap]), (where, metric.unwrap)
                assert set(metric.by) <= set(record), where


def _panel_record(panel: dict[str, Any]) -> dict[str, Any]:
    (target,) = panel["targets"]
    return _record_of(parse_logql(_substitute(target["expr"], ALL_VALUES)))


def test_every_key_a_panel_shows_is_a_key_of_its_record():
    assert len(LOG_PANELS) >= 5
    for panel in LOG_PANELS:
        record = _panel_record(panel)
        used = _record_keys_used(panel)
        where = panel["title"]
        assert used["fields"], where
        # Everything shown, converted, sorted by or styled is a field the panel keeps.
        typed = used["number"] | used["boolean"] | used["time"]
        assert typed | used["sort"] | used["override"] <= used["fields"]
        unknown = used["fields"] - set(record) - STREAM_LABELS
        assert not unknown, f"{where}: the record has no {sorted(unknown)}"
        for key in used["number"]:
            assert _is_number(record[key]), (where, key)
        for key in used["boolean"]:
            assert isinstance(record[key], bool), (where, key)
        for key in used["time"]:
            datetime.fromisoformat(str(record[key]))
        # A number left as text would sort and add up as text.
        numbers = {k for k in used["fields"] - STREAM_LABELS if _is_number(record[k])}
        assert numbers == used["number"], where


def test_every_row_field_a_link_reads_is_a_field_of_its_table():
    for panel in LOG_PANELS:
        shown = _record_keys_used(panel)["fields"]
        for link in _links(panel):
            read = set(ROW_FIELD.findall(link["url"]))
            assert read and read <= shown, (panel["title"], link["title"], read - shown)


# --------------------------------------------------------------------------------------------
# Links from a call


def test_a_call_links_to_its_trace_its_record_and_the_per_call_rows():
    tables = [p for p in LOG_PANELS if p["type"] == "table"]
    calls_row = [p for p in tables if p["gridPos"]["y"] < _row_y("Per call")]
    assert len(calls_row) == 4
    for panel in tables:
        links = {link["title"]: link["url"] for link in _links(panel)}
        trace = next(url for title, url in links.items() if title.startswith("Trace in Tempo"))
        source, query = _explore_queries(trace)
        assert source == dashboard.TEMPO and query["queryType"] == "traceql"
        assert parse_traceql(query["query"]).value == RECORD[logql.CALL_ID]
        source, query = _explore_queries(links["Summary record in Explore"])
        assert source == dashboard.LOKI
        stages = parse_logql(query["expr"]).stages
        assert (stages[-1].key, stages[-1].op, stages[-1].value) == (
            logql.CALL_ID,
            "=",
            RECORD[logql.CALL_ID],
        )
        if panel in calls_row:
            url = links["Show this call"]
            assert url.startswith("/d/${__dashboard.uid}/?var-call_id=${__data.fields.call_id}&")


def _row_y(title: str) -> int:
    (row,) = [p for p in DASHBOARD["panels"] if p["type"] == "row" and p["title"] == title]
    return row["gridPos"]["y"]


# --------------------------------------------------------------------------------------------
# Data sources


def test_data_source_variables_for_metrics_logs_and_traces():
    for source, name in dashboard.DATASOURCE_VARIABLES.items():
        variable = VARIABLES[name]
        assert (variable["type"], variable["query"]) == ("datasource", source), name
        assert not variable["multi"] and not variable["includeAll"], name
    assert dashboard.DATASOURCE_VARIABLES[dashboard.LOKI] == "loki"
    assert dashboard.DATASOURCE_VARIABLES[dashboard.TEMPO] == "tempo"


def test_every_panel_and_target_uses_its_data_source_variable():
    used = set()
    for panel in PANELS:
        source = panel["datasource"]["type"]
        expected = {"type": source, "uid": f"${{{dashboard.DATASOURCE_VARIABLES[source]}}}"}
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
        used.add(source)
    assert used == set(dashboard.DATASOURCE_VARIABLES)
    for panel in PANELS:
        for link in _links(panel):
            if link["url"].startswith("/explore"):
                # The link's data source is the dashboard's variable, replaced by its value.
                source, query = _explore_queries(link["url"])
                assert query["datasource"]["uid"] == LINK_VALUES[source], link["title"]


def test_thresholds_variables_are_numbers_by_default():
    for variable in (logql.MIN_COST_VAR, logql.MIN_TURN_LATENCY_VAR):
        textbox = VARIABLES[variable.lstrip("$")]
        assert textbox["type"] == "textbox"
        float(textbox["query"])
        assert textbox["current"]["value"] == textbox["query"]
