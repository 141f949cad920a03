"""Faults of the endpoint and of the pipeline: the bot goes on, and no data is lost or invented.

Every test here talks to a local receiver that the test controls (down, rejecting,
rate-limiting, hanging) and checks what finally arrived against what the
pipeline really reported.
"""

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest
from pipecat.frames.frames import CancelFrame, Frame
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.helpers import LiveCall, Reporter, Trigger, metric, run_pipeline


def turn(i: int) -> list:
    """What one turn of a call reports: gross token counts, so the truth is a plain sum."""
    return [
        metric(
            TTFBMetricsData, processor="OpenAILLMService#1", model="gpt-4o", value=0.3 + i / 100
        ),
        LLMUsageMetricsData(
            processor="OpenAILLMService#1",
            model="gpt-4o",
            value=LLMTokenUsage(
                prompt_tokens=500 + i, completion_tokens=40 + i, total_tokens=540 + 2 * i
            ),
        ),
        metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=80 + i),
        metric(STTUsageMetricsData, processor="GladiaSTTService#1"),
    ]


def truth(reporters: list[Reporter]) -> dict[str, float]:
    """The totals the reporters really reported, summed from the raw reports."""
    reported = [d for r in reporters for d in r.reported]
    return {
        "prompt": sum(
            d.value.prompt_tokens for d in reported if isinstance(d, LLMUsageMetricsData)
        ),
        "completion": sum(
            d.value.completion_tokens for d in reported if isinstance(d, LLMUsageMetricsData)
        ),
        "characters": sum(d.value for d in reported if isinstance(d, TTSUsageMetricsData)),
        "audio": sum(d.value.audio_seconds for d in reported if isinstance(d, STTUsageMetricsData)),
        "ttfb": sum(isinstance(d, TTFBMetricsData) for d in reported),
    }


def arrived(receiver) -> dict[str, float]:
    return {
        "prompt": receiver.total(m.LLM_TOKENS.name, token_type="prompt"),
        "completion": receiver.total(m.LLM_TOKENS.name, token_type="completion"),
        "characters": receiver.total(m.TTS_CHARACTERS.name),
        "audio": receiver.total(m.STT_AUDIO.name),
        "ttfb": receiver.total(m.TTFB.name),
    }


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


@pytest.mark.slow
async def test_endpoint_down_for_30_seconds_mid_call_loses_and_doubles_nothing(
    export_to, monkeypatch
):
    receiver = export_to
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    long_call = Reporter([turn(i) for i in range(6)])
    short_call = Reporter([turn(10), turn(11)])
    exporters = [grafana(call_id="long"), grafana(call_id="short")]
    async with LiveCall([long_call, exporters[0]]) as call:
        await call.report()
        await call.report()
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) > 0, timeout=5)

        receiver.respond_with(503)  # down: the load balancer answers, nothing behind it
        outage_started = time.monotonic()
        await call.report()
        # A whole call starts and ends while the endpoint is down.
        await run_pipeline([short_call, exporters[1]], [Trigger("1"), Trigger("2")])
        await call.report()
        await asyncio.sleep(30 - (time.monotonic() - outage_started))
        receiver.respond_with(200)

        await call.report()
        await call.report()
        await call.end()
    pipecat_grafana.shutdown(timeout_s=5)

    assert receiver.rejected, "the outage was never seen by the exporter"
    expected = truth([long_call, short_call])
    assert arrived(receiver) == pytest.approx(expected)
    assert receiver.total(m.COST.name) == pytest.approx(
        sum(e.summary.total_cost_usd for e in exporters)
    )
    assert receiver.total(m.CALLS.name) == 2
    assert receiver.total(m.CALLS_ACTIVE.name) == 0
    assert receiver.total(m.SESSION_DURATION.name) == 2


async def test_rejected_credentials_are_explained_once_and_the_bot_goes_on(
    export_to, log_lines, monkeypatch
):
    receiver = export_to
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "100")  # the shortest allowed
    receiver.respond_with(401)
    exporter = grafana()
    reporter = Reporter([turn(i) for i in range(5)])
    async with LiveCall([reporter, exporter]) as call:
        for _ in range(5):
            await call.report()
            await asyncio.sleep(0.1)
        await call.end()

    assert len(receiver.rejected) >= 5  # many exports failed...
    # No Authorization is sent here: said so, with the variable that would send one (a plain
    # OTLP endpoint: not Grafana Cloud's variables).
    explained = [line for line in log_lines if "asks for credentials (401)" in line]
    assert len(explained) == 1  # ...and the user read about it once
    assert cfg.OTEL_EXPORTER_OTLP_HEADERS in explained[0]
    assert cfg.GRAFANA_CLOUD_INSTANCE_ID not in explained[0]
    assert not [line for line in log_lines if "Failed to export" in line]  # the SDK's own lines
    assert exporter.summary.tts_characters == truth([reporter])["characters"]

    receiver.respond_with(200)
    await asyncio.to_thread(receiver.wait_for, lambda r: r.requests, 5)
    await asyncio.sleep(0.2)
    assert any("works again" in line for line in log_lines)


@pytest.mark.parametrize("status", [429, 503])
async def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(export_to, status):
    receiver = export_to
    receiver.respond_with(status, retry_after=1, times=1)
    reporter = Reporter([turn(0)])
    await run_pipeline([reporter, grafana()], [Trigger("go")])
    await asyncio.to_thread(receiver.wait_for, lambda r: r.total(m.TTS_CHARACTERS.name) == 80, 10)
    (refused,) = receiver.rejected
    retried = receiver.requests[0]
    assert retried.received_at - refused.received_at >= 1.0  # Retry-After, not the 1 s backoff
    assert arrived(receiver) == pytest.approx(truth([reporter]))


async def test_a_hanging_endpoint_never_blocks_the_event_loop_and_call_end_is_bounded(
    export_to, monkeypatch, log_lines
):
    receiver = export_to
    receiver.hang()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, "1")
    lags: list[float] = []

    async def watch_loop():
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - started - 0.01)

    watcher = asyncio.create_task(watch_loop())
    exporter = grafana()
    started = time.monotonic()
    await run_pipeline([Reporter([turn(0)]), exporter], [Trigger("go")])
    elapsed = time.monotonic() - started
    watcher.cancel()

    assert receiver.attempts >= 1  # the export really hangs on the wire
    assert elapsed < 5  # bounded by the 1 s flush timeout, not the 30 s request timeout
    assert max(lags) < 0.5  # the loop kept running while the export hung
    assert exporter.summary.end_reason == "ended"
    assert len([line for line in log_lines if "were not exported within 1s" in line]) == 1


@pytest.mark.slow
def test_process_exit_is_bounded_when_the_endpoint_hangs(receiver, tmp_path):
    receiver.hang()
    script = tmp_path / "bot.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from tests.helpers import Reporter, Trigger, run_pipeline
            from tests.test_faults import grafana, turn

            asyncio.run(run_pipeline([Reporter([turn(0)]), grafana()], [Trigger("go")]))
            print("call over")
            """
        )
    )
    env = {
        **os.environ,
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
        cfg.FLUSH_TIMEOUT: "1",
        "PYTHONPATH": os.getcwd(),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "call over" in result.stdout
    # Imports take a few seconds; the hanging export adds at most the flush timeout twice
    # (call end, then exit), never the 60 s request timeout.
    assert elapsed < 20
    assert "dropped the final metrics" in result.stderr or "not exported within" in result.stderr


class Explodes(FrameProcessor):
    """A processor with a bug: it raises on the second trigger."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, Trigger):
            self.seen += 1
            if self.seen == 2:
                raise RuntimeError("bug in another processor")
        await self.push_frame(frame, direction)


@pytest.mark.parametrize("how", ["cancel_frame", "worker_cancel", "exception"])
async def test_summary_and_final_export_survive_cancellation_and_other_processors_bugs(
    export_to, log_lines, how
):
    receiver = export_to
    reporter = Reporter([turn(0), turn(1)])
    exporter = grafana()
    async with LiveCall([reporter, Explodes(), exporter]) as call:
        await call.report()
        await call.report()
        if how == "cancel_frame":
            await call.end(CancelFrame())
        elif how == "worker_cancel":
            await call.worker.cancel()
        else:
            await call.end()

    summary = exporter.summary
    assert summary is not None and summary.end_reason == (
        "ended" if how == "exception" else "cancelled"
    )
    assert any("Call Summary" in line and exporter.call_id in line for line in log_lines)
    await asyncio.to_thread(receiver.wait_for, lambda r: r.total(m.SESSION_DURATION.name) == 1, 5)
    assert receiver.total(m.TTS_CHARACTERS.name) == summary.tts_characters > 0
    assert receiver.total(m.CALLS_ACTIVE.name) == 0


async def test_a_redirect_is_a_failure_not_a_silent_loss(export_to, log_lines):
    receiver = export_to
    receiver.respond_with(301)  # the exporter does not follow redirects
    exporter = grafana(flush_timeout_s=1)
    await run_pipeline([Reporter([turn(0)]), exporter], [Trigger("go")])
    assert receiver.rejected and not receiver.requests
    assert any("answered with a redirect (301)" in line for line in log_lines)
    # The ended call is still pending, so it arrives once the endpoint is fixed.
    receiver.respond_with(200)
    await asyncio.to_thread(receiver.wait_for, lambda r: r.total(m.TTS_CHARACTERS.name) == 80, 5)
