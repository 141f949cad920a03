"""What a real OTLP/HTTP receiver gets from the exporter: names, units, labels, values."""

import asyncio
import base64
import gc

import pytest
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, TextFrame
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, export
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters
from pipecat_grafana.endpoints import basic_auth
from tests.helpers import Reporter, Trigger, metric, run_pipeline
from tests.test_exporter import ALL_TYPES

KIND = {
    m.Kind.COUNTER: "sum",
    m.Kind.UP_DOWN_COUNTER: "sum",
    m.Kind.HISTOGRAM: "histogram",
    m.Kind.GAUGE: "gauge",
}


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


async def test_a_call_arrives_with_the_contract_names_units_and_labels(export_to):
    exporter = grafana(service_name="voice-rag-bot", call_id="call-1")
    await run_pipeline([Reporter([ALL_TYPES]), exporter], [Trigger("go")])
    # The call's end exports at once: no need to wait for the interval.
    receiver = export_to
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name) == 1, timeout=5)

    # Not in this call: conversation metrics (it has no turns or errors), a greeting, a TTS,
    # a dropped call; the loop's lag is sampled every 100 ms, which this call may not last.
    absent = {*m.CONVERSATION, m.GREETING_LATENCY, m.TTS_AUDIO, m.CALLS_DROPPED}
    absent.add(m.SUMMARIES_DROPPED)
    expected = set(m.ALL) - absent - {m.EVENT_LOOP_LAG}
    # An export is counted once it is answered: the next export carries it.
    receiver.wait_for(lambda r: m.EXPORTS.name in r.names(), timeout=5)
    assert receiver.names() - {m.EVENT_LOOP_LAG.name} == {spec.name for spec in expected}
    # One ID per process (from the SDK), so two bot processes never share a series.
    (instance_id,) = {p.resource["service.instance.id"] for p in receiver.points()}
    for spec in expected:
        points = receiver.points(spec.name)
        assert {p.unit for p in points} == {spec.unit}, spec.name
        assert {p.kind for p in points} == {KIND[spec.kind]}, spec.name
        for point in points:
            # Cumulative, what Prometheus-style backends store (a gauge has no temporality).
            assert point.temporality == (0 if spec.kind is m.Kind.GAUGE else 2), spec.name
            assert point.resource["service.name"] == "voice-rag-bot"
            assert point.resource["service.instance.id"] == instance_id
            assert (m.CALL_ID in point.attributes) == m.carries_call_id(spec), spec.name
            if m.carries_call_id(spec):
                assert point.attributes[m.CALL_ID] == "call-1"
    (ttfb,) = receiver.latest(m.TTFB.name).values()
    # Latency histograms are process-wide: the call's latency is in its summary record.
    assert ttfb.attributes == {
        m.PROCESSOR: "OpenAILLMService",
        m.MODEL: "gpt-4o",
        m.SERVICE_TYPE: "llm",
    }
    assert ttfb.sum == pytest.approx(800.0)
    assert ttfb.explicit_bounds == m.LATENCY_BUCKETS_MS
    assert receiver.total(m.TTS_CHARACTERS.name, call_id="call-1") == 57
    assert receiver.total(m.LLM_TOKENS.name, token_type="prompt") == 100
    summary = exporter.summary
    assert receiver.total(m.COST.name) == pytest.approx(summary.total_cost_usd)
    assert receiver.total(m.CALLS.name) == 1
    assert receiver.total(m.CALLS_ACTIVE.name) == 0
    (duration,) = receiver.latest(m.SESSION_DURATION.name).values()
    assert duration.attributes[m.END_REASON] == "ended"


async def test_every_new_cumulative_series_starts_with_a_zero_point(export_to):
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=9)]]), grafana()], [Trigger("go")]
    )
    receiver = export_to
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) == 9, timeout=5)
    first, *rest = receiver.points(m.TTS_CHARACTERS.name)
    assert first.value == 0 and first.time_unix_nano < rest[0].time_unix_nano
    assert rest[0].value == 9
    assert all(p.value == 9 for p in rest)  # the zero is sent once per series


async def test_grafana_cloud_shortcut_sends_basic_auth_and_never_logs_the_token(
    monkeypatch, receiver, log_lines
):
    token = "glc_" + "secretsecretsecretsecret0123456789"  # fake
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, token)
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "100")
    exporter = grafana()
    await run_pipeline([Reporter([ALL_TYPES]), exporter], [Trigger("go")])
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name) == 1, timeout=5)

    expected = "Basic " + base64.b64encode(f"123456:{token}".encode()).decode()
    assert {r.headers["authorization"] for r in receiver.requests} == {expected}
    # A failing endpoint makes the exporter log errors too: they must not leak either.
    receiver.respond_with(401)
    await run_pipeline([Reporter([ALL_TYPES]), grafana()], [Trigger("go")])
    pipecat_grafana.shutdown(timeout_s=2)
    encoded = expected.split(" ", 1)[1]
    assert any("rejected the credentials (401)" in line for line in log_lines)
    for line in log_lines:
        assert token not in line and encoded not in line
    assert token not in repr(exporter) and token not in exporter.summary.model_dump_json()


async def test_no_endpoint_logs_once_how_to_turn_export_on(log_lines):
    first = grafana()
    await run_pipeline([Reporter([ALL_TYPES]), first], [Trigger("go")])
    await run_pipeline([grafana()])
    off = [line for line in log_lines if "metrics export is off" in line]
    assert len(off) == 1
    assert "GRAFANA_CLOUD_OTLP_ENDPOINT" in off[0]
    assert first.summary.tts_characters == 57  # the summary works without export


@pytest.mark.slow
async def test_ten_thousand_calls_keep_memory_and_exported_series_flat(export_to, monkeypatch):
    """A process serving calls one after another exports only the calls in progress.

    Every series goes in every request here (the shortest heartbeat), so that a
    request's series count what the process holds.

    10,000 real pipelines would take minutes, so the first 200 calls run through
    real Pipecat pipelines and the rest through the same exporter objects'
    call lifecycle (setup, start, metrics, end, cleanup) without a pipeline.
    """
    receiver = export_to
    monkeypatch.setenv(cfg.HEARTBEAT, "0.1")
    batch = [
        metric(TTFBMetricsData, processor="OpenAILLMService#1", value=0.3),
        metric(LLMUsageMetricsData, processor="OpenAILLMService#1", model="gpt-4o"),
        metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=40),
        metric(STTUsageMetricsData, processor="GladiaSTTService#1"),
    ]
    for _ in range(200):
        await run_pipeline([Reporter([batch]), grafana()], [Trigger("go")])
    (pipeline,) = export.pipelines()
    await asyncio.to_thread(pipeline.export)

    def retained() -> tuple[int, int]:
        gc.collect()
        objects = sum(isinstance(o, CallMeters) for o in gc.get_objects())
        return len(pipeline.calls.pending()), objects

    calls_before, objects_before = retained()
    series_per_export_before = _series_in_last_request(receiver)
    await _run_calls_without_pipelines(9_800, batch[2:3])  # 49 rounds of 200
    await asyncio.to_thread(pipeline.export)
    calls_after, objects_after = retained()

    assert calls_before == calls_after == 0  # every ended call was exported and dropped
    assert objects_after <= objects_before + 2
    assert _series_in_last_request(receiver) == series_per_export_before
    assert receiver.total(m.CALLS.name) == 10_000
    assert receiver.total(m.TTS_CHARACTERS.name) == 10_000 * 40
    assert receiver.total(m.CALLS_ACTIVE.name) == 0


def _series_in_last_request(receiver) -> int:
    request = receiver.requests[-1].message
    return sum(
        len(getattr(metric_, metric_.WhichOneof("data")).data_points)
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric_ in sm.metrics
    )


async def _run_calls_without_pipelines(count: int, batch) -> None:
    from pipecat.frames.frames import MetricsFrame

    Exporter = GrafanaMetricsExporter

    class _Worker:
        _conversation_id = None

        def add_observer(self, observer):
            pass

        def add_event_handler(self, event, handler):
            pass

    async def call() -> None:
        exporter = Exporter(llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia")
        exporter._open_call(_Worker())
        exporter._start_call()
        exporter._observe(MetricsFrame(data=batch), None)
        exporter._end_call("ended")
        await exporter._finish_call()

    # Calls overlap as on a busy server: 200 at a time.
    for _ in range(count // 200):
        await asyncio.gather(*(call() for _ in range(200)))


class Slow(FrameProcessor):
    """A processor that takes 0.1 s over each text frame, as a service takes its time."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            await asyncio.sleep(0.1)
        await self.push_frame(frame, direction)


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize("end", [EndFrame, CancelFrame])
async def test_the_call_lasts_from_the_pipelines_start_to_its_end_wherever_the_exporter_is(
    export_to, position, end
):
    # The call's frames and its EndFrame are queued at once: the EndFrame passes the first
    # processor at once and reaches the end of the pipeline 0.3 s later.
    exporter = grafana(call_id=f"{position}-{end.__name__}")
    processors = [exporter, Slow()] if position == "first" else [Slow(), exporter]
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        cancel_on_idle_timeout=False,
    )

    @worker.event_handler("on_pipeline_started")
    async def queue_the_call(worker, frame):
        await worker.queue_frames([TextFrame("one"), TextFrame("two"), TextFrame("three")])
        if end is EndFrame:
            await worker.queue_frame(EndFrame())
        else:
            await asyncio.sleep(0.3)  # the call is under way: cancelled, as a hang-up
            await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(runner.run(), timeout=10)
    receiver = export_to
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name) == 1, timeout=5)
    (duration,) = receiver.latest(m.SESSION_DURATION.name).values()
    assert duration.attributes[m.END_REASON] == ("ended" if end is EndFrame else "cancelled")
    assert 0.3 <= duration.sum < 1.0
    assert exporter.summary.duration_seconds == pytest.approx(duration.sum)


async def test_credentials_are_explained_by_the_variables_the_bot_uses(
    monkeypatch, receiver, log_lines
):
    token = "glc_" + "header-token-0123456789"  # fake
    encoded = base64.b64encode(f"123456:{token}".encode()).decode()
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization=Basic%20{encoded}")
    receiver.respond_with(401)
    await run_pipeline([Reporter([ALL_TYPES]), grafana()], [Trigger("go")])
    pipecat_grafana.shutdown(timeout_s=2)

    (explained,) = [line for line in log_lines if "rejected the credentials (401)" in line]
    assert cfg.OTEL_EXPORTER_OTLP_HEADERS in explained
    assert cfg.GRAFANA_CLOUD_INSTANCE_ID not in explained
    assert not [line for line in log_lines if token in line or encoded in line]


async def test_an_unencoded_basic_header_turns_export_off_before_anything_is_sent(
    monkeypatch, receiver, log_lines
):
    token = "glc_" + "plain-token-0123456789"  # fake
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, f"Authorization=Basic 123456:{token}")
    exporter = grafana()
    await run_pipeline([Reporter([ALL_TYPES]), exporter], [Trigger("go")])
    pipecat_grafana.shutdown(timeout_s=2)

    assert receiver.attempts == 0
    (error,) = [line for line in log_lines if "unencoded" in line]
    assert "ERROR" in error and cfg.OTEL_EXPORTER_OTLP_HEADERS in error
    assert not [line for line in log_lines if token in line]
    assert exporter.summary.end_reason == "ended"  # the bot went on


async def test_both_credentials_set_the_bot_says_once_which_wins(monkeypatch, receiver, log_lines):
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, "glc_" + "shortcut-token")  # fake
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_HEADERS, "Authorization=Basic%20b3RoZXI6b25l")
    for _ in range(2):
        await run_pipeline([Reporter([ALL_TYPES]), grafana()], [Trigger("go")])
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name) == 2, timeout=5)

    said = [line for line in log_lines if "is set too and is not used" in line]
    assert len(said) == 1 and "WARNING" in said[0]
    assert cfg.GRAFANA_CLOUD_AUTH in said[0]
    expected = basic_auth("123456", "glc_" + "shortcut-token")
    assert {r.headers["authorization"] for r in receiver.requests} == {expected}
