"""What callers feel before the first turn, and whether the bot and the exporter are healthy.

Real pipelines export through the real SDK to the local receiver: the greeting's latency
and the TTS's audio from a real TTS service and output transport on a controlled clock,
start-up time from Pipecat's own observer, the event loop's lag around a processor that
blocks it, and the export pipeline's own outcomes against a receiver that refuses,
rejects and hangs before it recovers.
"""

import asyncio
import socket
import time
from collections.abc import AsyncGenerator

import pytest
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import Resource
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    ClientConnectedFrame,
    Frame,
    StartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import TransportParams

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, loop_lag
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import create_meters
from pipecat_grafana.export import ExportPipeline
from pipecat_grafana.export import pending as pending_module
from pipecat_grafana.offline.transport import OfflineOutputTransport
from pipecat_grafana.otlp import Outcome, classify
from tests.helpers import FakeClock, LiveCall, Trigger
from tests.otlp_receiver import OtlpReceiver, _points

TONE_FRAMES = 7  # frames of audio the test TTS produces per sentence
TONE_FRAME_SECS = 0.04


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


class ToneTTS(TTSService):
    """A TTS service that speaks any sentence as ``TONE_FRAMES`` frames of a known length."""

    def __init__(self, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="tone-1", voice="a", language=None),
            **kwargs,
        )

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        chunk = b"\x10\x00" * int(self.sample_rate * TONE_FRAME_SECS)
        for _ in range(TONE_FRAMES):
            yield TTSAudioRawFrame(chunk, self.sample_rate, 1, context_id=context_id)


def output_transport():
    """A real output transport, which plays the TTS's audio and re-chunks it downstream."""
    return OfflineOutputTransport(TransportParams(audio_out_enabled=True))


async def wait_until(condition) -> None:
    """Poll ``condition`` for up to 5 s."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


# --------------------------------------------------------------------------------------------
# Greeting latency and TTS audio


async def test_greeting_latency_and_tts_audio_seconds_from_a_real_pipeline(export_to):
    receiver = export_to
    clock = FakeClock()
    exporter = grafana(time_source=clock)
    tts = ToneTTS()
    async with LiveCall([tts, output_transport(), exporter]) as call:
        await call.worker.queue_frame(ClientConnectedFrame())
        await asyncio.sleep(0.05)  # the exporter's observer takes the connection's time
        clock.now += 1.25  # the bot takes 1.25 s to greet
        await call.worker.queue_frame(TTSSpeakFrame("Hello, how can I help?"))
        await wait_until(lambda: exporter.summary.greeting_latency_ms is not None)
        await call.worker.queue_frame(TTSSpeakFrame("Anything else?"))
        await asyncio.sleep(0.2)
        await call.end()
    pipecat_grafana.shutdown(timeout_s=5)

    summary = exporter.summary
    produced = 2 * TONE_FRAMES * TONE_FRAME_SECS  # two sentences, whatever is played of them
    assert summary.greeting_latency_ms == pytest.approx(1.25 * 1000)
    assert summary.tts_audio_seconds == pytest.approx(produced)
    attributes = summary.log_attributes()
    assert attributes["greeting_latency_ms"] == pytest.approx(1250)
    assert attributes["tts_audio_seconds"] == pytest.approx(produced)

    (greeting,) = receiver.latest(m.GREETING_LATENCY.name).values()
    assert (greeting.value, greeting.sum) == (1, pytest.approx(1250))
    assert greeting.attributes == {}  # latency histograms are per process
    (audio,) = receiver.latest(m.TTS_AUDIO.name).values()
    assert audio.value == pytest.approx(produced)
    assert audio.attributes == {
        m.CALL_ID: exporter.call_id,
        m.PROCESSOR: "ToneTTS",
        m.MODEL: "tone-1",
        m.SERVICE_TYPE: "tts",
    }
    assert audio.unit == "s"


async def test_no_greeting_is_measured_when_the_caller_speaks_first(export_to):
    receiver = export_to
    exporter = grafana()
    async with LiveCall([exporter]) as call:
        for frame in (
            ClientConnectedFrame(),
            VADUserStartedSpeakingFrame(),
            BotStartedSpeakingFrame(),
        ):
            await call.worker.queue_frame(frame)
        await asyncio.sleep(0.1)
        await call.end()
    pipecat_grafana.shutdown(timeout_s=5)

    assert exporter.summary.greeting_latency_ms is None
    assert "greeting_latency_ms" not in exporter.summary.log_attributes()
    assert "Greeting" not in exporter.summary.format()
    assert m.GREETING_LATENCY.name not in receiver.names()
    assert m.CALLS.name in receiver.names()  # the call itself was exported


# --------------------------------------------------------------------------------------------
# Start-up time


class SlowToConnect(FrameProcessor):
    """Takes ``SETUP_SECS`` to set up, like a service opening a WebSocket; once started,
    says that a client connected, as a transport does."""

    SETUP_SECS = 0.3

    async def setup(self, setup):
        await super().setup(setup)
        await asyncio.sleep(self.SETUP_SECS)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(ClientConnectedFrame())


async def test_startup_time_is_the_slowest_processor_per_phase(export_to):
    receiver = export_to
    exporter = grafana()
    async with LiveCall([SlowToConnect(), exporter]) as call:
        await asyncio.sleep(0.1)
        await call.end()
    pipecat_grafana.shutdown(timeout_s=5)

    points = list(receiver.latest(m.STARTUP.name).values())
    assert all(p.kind == "gauge" for p in points)
    # One series per phase: ten processors' start-ups cost two series, not eighty.
    series = {p.attributes[m.PHASE]: p for p in points}
    assert len(series) == len(points) == 2
    slow = series["processor"]
    assert slow.attributes[m.PROCESSOR] == "SlowToConnect"
    assert slow.value >= SlowToConnect.SETUP_SECS * 1000
    connected = series["client_connected"]
    assert connected.attributes[m.PROCESSOR] == "SlowToConnect"
    # The client connected once the pipeline had set up, the slow processor included.
    assert connected.value >= SlowToConnect.SETUP_SECS * 1000
    assert all(m.CALL_ID not in p.attributes for p in points)  # process-wide
    assert set(series) <= set(m.STARTUP_PHASES)


class QuickToConnect(FrameProcessor):
    """Sets up at once: another processor is the slowest."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def test_a_new_slowest_processor_replaces_the_phases_series(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.HEARTBEAT, "0.2")  # every series in every export
    async with LiveCall([SlowToConnect(), grafana()]) as call:
        await call.end()
    async with LiveCall([QuickToConnect(), grafana()]) as call:
        await call.end()
    await asyncio.sleep(0.6)  # exports of every series since the second call started
    pipecat_grafana.shutdown(timeout_s=5)

    # The last export of the gauge holds the phase's one series: the second call's slowest.
    sent = [_points(r.message, m.STARTUP.name) for r in receiver.requests if r.message]
    last = [points for points in sent if points][-1]
    processors = [p.attributes[m.PROCESSOR] for p in last if p.attributes[m.PHASE] == "processor"]
    assert len(processors) == 1 and processors != ["SlowToConnect"], processors


# --------------------------------------------------------------------------------------------
# Event-loop lag


class Blocker(FrameProcessor):
    """Holds the event loop for ``BLOCK_SECS`` on each trigger: a blocking call in a processor."""

    BLOCK_SECS = 0.2

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, Trigger):
            time.sleep(self.BLOCK_SECS)  # noqa: ASYNC251 - the blocking call under test
        await self.push_frame(frame, direction)


async def _lag_of_a_call(receiver: OtlpReceiver, *, block: bool):
    exporter = grafana()
    async with LiveCall([Blocker(), exporter]) as call:
        await asyncio.sleep(0.5)
        if block:
            await call.report()
        await asyncio.sleep(0.5)
        await call.end()
    pipecat_grafana.shutdown(timeout_s=5)
    (lag,) = receiver.latest(m.EVENT_LOOP_LAG.name).values()
    return lag


@pytest.mark.slow  # the loop's own time: a loaded machine adds lag of its own
async def test_event_loop_lag_sees_a_processor_block_the_loop(export_to):
    lag = await _lag_of_a_call(export_to, block=True)
    # The timer due during the block runs when it ends: late by the block less at most
    # one interval.
    assert lag.max >= (Blocker.BLOCK_SECS - loop_lag.SAMPLE_INTERVAL_S) * 1000
    assert lag.max < 2 * Blocker.BLOCK_SECS * 1000
    assert lag.value >= 5  # sampled all call long, every 100 ms
    assert lag.attributes == {}  # process-wide


@pytest.mark.slow  # the loop's own time: a loaded machine adds lag of its own
async def test_event_loop_lag_reads_near_zero_when_nothing_blocks(export_to):
    lag = await _lag_of_a_call(export_to, block=False)
    assert lag.value >= 5
    assert lag.max < Blocker.BLOCK_SECS * 1000 / 2
    # Most samples fall in the first buckets (a few milliseconds).
    low = sum(c for c, le in zip(lag.bucket_counts, lag.explicit_bounds, strict=False) if le <= 5)
    assert low >= lag.value / 2


async def test_one_sampler_per_loop_runs_while_calls_are_in_progress():
    first, second = _meters(), _meters()
    sampler = loop_lag.attach(first)
    assert sampler is not None and sampler.running
    assert loop_lag.attach(second) is sampler  # the same loop: the same timer
    assert loop_lag.attach(first) is sampler  # a second call of the same pipeline
    await asyncio.sleep(3 * loop_lag.SAMPLE_INTERVAL_S)
    sampler.detach(first)
    sampler.detach(second)
    assert sampler.running  # a call is still in progress
    sampler.detach(first)
    assert not sampler.running
    for meters in (first, second):
        (metric,) = [x for x in meters.metrics() if x.name == m.EVENT_LOOP_LAG.name]
        (point,) = metric.data.data_points
        assert point.count >= 2  # both destinations received every sample


def _meters():
    return create_meters(NoOpMeter("test"), own=True)


def test_no_sampler_without_a_running_loop():
    assert loop_lag.attach(_meters()) is None


# --------------------------------------------------------------------------------------------
# The exporter's own health


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _exports(receiver: OtlpReceiver) -> dict[tuple[str, str], float]:
    return {
        (p.attributes[m.OUTCOME], p.attributes[m.REASON]): p.value
        for p in receiver.latest(m.EXPORTS.name).values()
    }


async def test_export_failures_are_counted_and_arrive_once_the_endpoint_recovers(
    monkeypatch, log_lines
):
    port = _free_port()  # nothing listens there yet: connections are refused
    monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, f"http://127.0.0.1:{port}")
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "200")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    exporter = grafana()  # starts the export pipeline
    down_since = time.monotonic()
    await wait_until(lambda: any("refused" in line for line in log_lines))
    await asyncio.sleep(0.3)

    with OtlpReceiver(port=port) as receiver:
        receiver.respond_with(401, times=1)
        await asyncio.to_thread(receiver.wait_for, lambda r: r.requests, 5)
        down_for = time.monotonic() - down_since
        receiver.hang()
        await asyncio.to_thread(receiver.wait_for, lambda r: r.rejected[-1].status is None, 5)
        await asyncio.sleep(0.7)  # the export times out
        receiver.unhang()
        await asyncio.to_thread(
            receiver.wait_for, lambda r: ("timeout", "timeout") in _exports(r), 10
        )
        await asyncio.to_thread(receiver.wait_for, lambda r: ("ok", "none") in _exports(r), 5)
        exports = _exports(receiver)
        ages = [p.value for p in receiver.points(m.EXPORT_AGE.name)]
        pipecat_grafana.shutdown(timeout_s=2)

    assert exports[("unreachable", "refused")] >= 1
    assert exports[("rejected", "401")] == 1  # the receiver rejected exactly one
    assert exports[("timeout", "timeout")] >= 1
    assert exports[("ok", "none")] >= 1
    assert set(k for k, _ in exports) <= set(m.EXPORT_OUTCOMES)
    assert set(r for _, r in exports) <= set(m.EXPORT_REASONS)
    for point in receiver.latest(m.EXPORTS.name).values():
        assert m.CALL_ID not in point.attributes  # process-wide
    # The first accepted export says how long none had been (its exact figures: below).
    assert {p.kind for p in receiver.points(m.EXPORT_AGE.name)} == {"gauge"}
    assert 0.5 <= ages[0] <= down_for + 1
    assert exporter.summary is None  # no call: the exporter's own series alone


def test_the_export_age_is_the_time_since_the_last_accepted_export(receiver):
    clock = FakeClock(1000.0)
    pipeline = ExportPipeline(
        cfg.ExportConfig(endpoint=receiver.metrics_url, export_interval_s=3600),
        Resource({"service.name": "bot", "service.instance.id": "age"}),
        time_source=clock,
    )
    try:
        clock.now = 1010.0  # none accepted yet: the age runs from the start
        receiver.respond_with(400, times=1)  # refused, not retried
        assert not pipeline.export()
        clock.now = 1012.0
        assert pipeline.export()  # carries the age as it was when it was read
        clock.now = 1013.5
        assert pipeline.export()
        ages = [p.value for p in receiver.points(m.EXPORT_AGE.name)]
        assert ages == [12.0, 1.5]
    finally:
        pipeline.shutdown(1)


async def test_a_call_dropped_while_the_endpoint_was_down_is_counted(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setattr(pending_module, "PENDING_RETENTION_S", 0.3)
    receiver.respond_with(401)
    exporter = grafana()
    async with LiveCall([exporter]) as call:
        await call.end()
    await asyncio.sleep(0.8)  # failed exports past the retention: the call is given up
    receiver.respond_with(200)
    await asyncio.to_thread(
        receiver.wait_for, lambda r: r.total(m.CALLS_DROPPED.name, reason="expired") == 1, 5
    )
    assert exporter.summary.end_reason == "ended"  # its summary was kept


def test_every_export_outcome_is_a_bounded_label():
    outcomes = [Outcome(status) for status in range(100, 600)]
    outcomes += [Outcome(None, error) for error in (ConnectionRefusedError("refused"), None)]
    outcomes += [None]
    for outcome in outcomes:
        for accepted in (False, True):
            kind, reason = classify(outcome, accepted=accepted)
            assert kind in m.EXPORT_OUTCOMES and reason in m.EXPORT_REASONS, outcome
