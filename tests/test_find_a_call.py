"""A call can be found from its metrics, its summary record in Loki and its trace in Tempo.

Real offline calls (Pipecat pipelines with turns, a tool call, a barge-in) run
through the real SDK to the test receiver, which decodes metrics, logs and traces
as Grafana Cloud's OTLP gateway would receive them.
"""

import asyncio

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from pipecat.metrics.metrics import TTFBMetricsData, TTSUsageMetricsData

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.offline import run_offline_call
from pipecat_grafana.summary import EVENT_NAME
from tests.helpers import Reporter, Trigger, metric, run_pipeline

LATENCY_WITH_EXEMPLARS = [spec.name for spec in m.ALL if spec.exemplars]


def exporter(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


async def offline_calls(count: int, *, tracing: bool, **kwargs) -> list[GrafanaMetricsExporter]:
    exporters = [exporter(**kwargs) for _ in range(count)]
    await asyncio.gather(
        *(
            run_offline_call(turns=2, processors=[e], speed=0.05, seed=i, enable_tracing=tracing)
            for i, e in enumerate(exporters)
        )
    )
    return exporters


def record_of(receiver, call_id: str):
    """The call's one summary record, ``None`` while none arrived."""
    records = [r for r in receiver.records(EVENT_NAME) if r.attributes.get("call_id") == call_id]
    assert len(records) <= 1, f"{len(records)} records for call {call_id}"
    return records[0] if records else None


def exemplars(receiver, call_id: str) -> list:
    return [
        e
        for name in LATENCY_WITH_EXEMPLARS
        for point in receiver.points(name)
        for e in point.exemplars
        if e.attributes.get(m.CALL_ID) == call_id
    ]


async def test_metrics_summary_record_and_trace_of_every_call_share_one_id(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.TRACES, "true")
    calls = await offline_calls(2, tracing=True)
    for call in calls:
        receiver.wait_for(lambda r, c=call: record_of(r, c.call_id), timeout=5)
    receiver.wait_for(
        lambda r: len([s for s in r.spans if s.name == "conversation"]) == 2, timeout=5
    )

    for call in calls:
        call_id = call.call_id
        record = record_of(receiver, call_id)
        (conversation,) = [
            s
            for s in receiver.spans
            if s.name == "conversation" and s.attributes["conversation.id"] == call_id
        ]
        turns = [s for s in receiver.spans if s.trace_id == conversation.trace_id]
        assert {s.name for s in turns} >= {"conversation", "turn"}
        # The log record, the metrics and the trace carry the same ID.
        assert receiver.total(m.TTS_CHARACTERS.name, call_id=call_id) == (
            call.summary.tts_characters
        )
        assert record.trace_id == conversation.trace_id
        assert record.span_id == conversation.span_id
        # Exemplars lead from a latency point to the call and into its trace.
        linked = exemplars(receiver, call_id)
        assert linked and {e.trace_id for e in linked} == {conversation.trace_id}
        assert {e.span_id for e in linked} <= {s.span_id for s in turns}
        # The record says what the summary says, and where it comes from.
        assert record.attributes == call.summary.log_attributes()
        assert record.body == call.summary.log_body()
        assert record.attributes["event_name"] == EVENT_NAME
        (resource,) = {frozenset(p.resource.items()) for p in receiver.points()}
        assert frozenset(record.resource.items()) == resource
        assert {frozenset(s.resource.items()) for s in turns} == {resource}


async def test_a_call_is_findable_with_the_call_id_label_off_and_no_tracing(export_to):
    receiver = export_to
    (call,) = await offline_calls(1, tracing=False, call_id_label=False)
    receiver.wait_for(lambda r: record_of(r, call.call_id), timeout=5)
    assert all(m.CALL_ID not in p.attributes for p in receiver.points())
    linked = exemplars(receiver, call.call_id)
    assert linked and all(e.trace_id == "" for e in linked)
    assert record_of(receiver, call.call_id).trace_id == ""
    assert not receiver.spans


async def test_the_logs_endpoint_down_costs_no_metric_and_no_summary(
    export_to, monkeypatch, log_lines
):
    receiver = export_to
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the exporter's retries give up soon
    receiver.respond_to("logs", 503)
    reporter = Reporter([[metric(TTSUsageMetricsData, processor="T#1", value=40)]])
    call = exporter(call_id="logs-down")
    await run_pipeline([reporter, call], [Trigger("go")])
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="logs-down") == 40, 5)
    assert not receiver.logs

    def failing() -> list[str]:
        return [line for line in log_lines if "logs export failing" in line]

    receiver.wait_for(lambda r: failing(), timeout=5)
    assert len(failing()) == 1 and "503" in failing()[0]
    receiver.respond_to("logs", 200)  # it comes back: the kept record is sent again
    receiver.wait_for(lambda r: record_of(r, "logs-down"), timeout=5)
    receiver.wait_for(
        lambda r: any("logs export to" in line and "works again" in line for line in log_lines),
        timeout=5,
    )


async def test_the_metrics_endpoint_down_still_sends_the_summary(export_to):
    receiver = export_to
    receiver.respond_with(503)
    reporter = Reporter([[metric(TTSUsageMetricsData, processor="T#1", value=40)]])
    call = exporter(call_id="metrics-down", flush_timeout_s=0.5)
    await run_pipeline([reporter, call], [Trigger("go")])
    receiver.wait_for(lambda r: record_of(r, "metrics-down"), timeout=5)
    assert record_of(receiver, "metrics-down").attributes["tts_characters"] == 40
    assert not receiver.requests  # every metrics request was refused


async def test_a_hundred_concurrent_calls_send_one_record_each(export_to):
    receiver = export_to
    calls = [exporter(call_id=f"c{i}") for i in range(100)]
    await asyncio.gather(
        *(
            run_pipeline(
                [Reporter([[metric(TTSUsageMetricsData, processor="T#1", value=i + 1)]]), c],
                [Trigger("go")],
            )
            for i, c in enumerate(calls)
        )
    )
    receiver.wait_for(lambda r: len(r.logs) >= 100, timeout=10)
    assert sorted(r.attributes["call_id"] for r in receiver.logs) == sorted(
        c.call_id for c in calls
    )
    for i, call in enumerate(calls):
        assert record_of(receiver, call.call_id).attributes["tts_characters"] == i + 1


async def test_logs_can_be_switched_off(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.LOGS, "false")
    await run_pipeline([exporter(call_id="quiet")])
    receiver.wait_for(lambda r: r.total(m.CALLS.name) == 1, timeout=5)
    await asyncio.sleep(0.3)
    assert receiver.attempts_of("logs") == 0


async def test_traces_asked_for_without_a_tracing_worker_say_how_to_trace(
    export_to, monkeypatch, log_lines
):
    monkeypatch.setenv(cfg.TRACES, "true")
    for _ in range(2):
        await run_pipeline([exporter()])
    advice = [line for line in log_lines if "enable_tracing=True" in line]
    assert len(advice) == 1


async def test_an_application_tracer_provider_is_used_as_it_is(export_to, monkeypatch, log_lines):
    receiver = export_to
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel_trace.set_tracer_provider(provider)
    try:
        monkeypatch.setenv(cfg.TRACES, "true")
        (call,) = await offline_calls(1, tracing=True)
        conversation = [s for s in spans.get_finished_spans() if s.name == "conversation"]
        assert [s.attributes["conversation.id"] for s in conversation] == [call.call_id]
        assert any("tracer provider the application installed" in line for line in log_lines)
        await asyncio.sleep(0.3)
        assert receiver.attempts_of("traces") == 0
    finally:
        otel_trace._TRACER_PROVIDER = None
        otel_trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.mark.parametrize("signal", ["logs", "traces"])
async def test_a_token_without_the_scope_is_named(export_to, monkeypatch, log_lines, signal):
    receiver = export_to
    # Grafana Cloud's credentials (its scopes are per signal), sent to the local receiver.
    monkeypatch.delenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, "glc_" + "scope-token-0123456789")  # fake
    monkeypatch.setenv(cfg.TRACES, "true")
    receiver.respond_to(signal, 401)
    await offline_calls(1, tracing=True)
    receiver.wait_for(lambda r: r.attempts_of(signal) > 0, timeout=5)
    await asyncio.sleep(0.2)
    (failing,) = [line for line in log_lines if f"{signal} export failing" in line]
    assert f"{signal}:write" in failing


async def test_exemplars_carry_at_most_one_measurement_per_bucket_per_export(export_to):
    receiver = export_to
    same_bucket = [metric(TTFBMetricsData, processor="L#1", value=0.3) for _ in range(5)]
    call = exporter(call_id="five")
    await run_pipeline([Reporter([same_bucket]), call], [Trigger("go")])
    receiver.wait_for(lambda r: r.total(m.TTFB.name) == 5, timeout=5)
    points = receiver.points(m.TTFB.name)
    assert max(len(p.exemplars) for p in points) == 1
    assert [e.attributes[m.CALL_ID] for p in points for e in p.exemplars] == ["five"]
    # Not sent again with later exports (here, a heartbeat that re-sends the histogram).
    await asyncio.sleep(1.5)
    assert len(receiver.points(m.TTFB.name)) > len(points)
    assert [e.attributes[m.CALL_ID] for p in receiver.points(m.TTFB.name) for e in p.exemplars] == [
        "five"
    ]
