"""Many calls in one process: per-call truth, fleet totals, and constant threads and requests."""

import asyncio
import random
import threading

import pytest

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import instruments as m
from tests.helpers import LiveCall, Reporter
from tests.test_faults import arrived, truth, turn

pytestmark = pytest.mark.slow  # a hundred concurrent calls


async def run_calls(
    count: int, turns: int, seed: int = 7
) -> list[tuple[Reporter, GrafanaMetricsExporter]]:
    rng = random.Random(seed)
    calls = []
    for i in range(count):
        reporter = Reporter([turn(rng.randrange(50)) for _ in range(turns)])
        exporter = GrafanaMetricsExporter(
            llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", call_id=f"call-{i}"
        )
        calls.append((reporter, exporter))

    async def one(reporter, exporter):
        async with LiveCall([reporter, exporter]) as call:
            for _ in range(turns):
                await call.report()
                await asyncio.sleep(rng.uniform(0, 0.05))
            await call.end()

    await asyncio.gather(*(one(r, e) for r, e in calls))
    return calls


async def test_100_concurrent_calls_each_summary_matches_its_own_pipeline(export_to):
    receiver = export_to
    calls = await run_calls(100, turns=3)
    pipecat_grafana.shutdown(timeout_s=5)

    for reporter, exporter in calls:
        expected = truth([reporter])
        summary = exporter.summary
        assert summary.tokens["prompt"] == expected["prompt"]
        assert summary.tokens["completion"] == expected["completion"]
        assert summary.tts_characters == expected["characters"]
        assert summary.stt_audio_seconds == pytest.approx(expected["audio"])
        (ttfb,) = [s for s in summary.latency if s.metric == "ttfb"]
        assert ttfb.count == expected["ttfb"]
        # What arrived for this call is what its own pipeline reported.
        assert (
            receiver.total(m.TTS_CHARACTERS.name, call_id=exporter.call_id)
            == expected["characters"]
        )
    assert arrived(receiver) == pytest.approx(truth([r for r, _ in calls]))
    assert receiver.total(m.COST.name) == pytest.approx(
        sum(e.summary.total_cost_usd for _, e in calls)
    )
    assert receiver.total(m.CALLS.name) == 100
    assert receiver.total(m.CALLS_ACTIVE.name) == 0


async def test_threads_and_requests_per_interval_do_not_grow_with_calls(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")

    def active_threads() -> int:
        # The test receiver answers each request on a thread of its own; those are not ours.
        return sum("process_request" not in t.name for t in threading.enumerate())

    before = active_threads()

    async def observe(count: int) -> tuple[int, int]:
        """Threads while `count` calls are in progress, and requests in 2 s of them."""
        reporters = [Reporter([turn(0)]) for _ in range(count)]
        exporters = [GrafanaMetricsExporter(tts_model="cartesia") for _ in range(count)]
        calls = [LiveCall([r, e]) for r, e in zip(reporters, exporters, strict=True)]
        for call in calls:
            await call.__aenter__()
        for call in calls:
            await call.report()
        requests_before = len(receiver.requests)
        await asyncio.sleep(2)
        requests = len(receiver.requests) - requests_before
        threads = active_threads()
        for call in calls:
            await call.end()
        return threads, requests

    threads_1, requests_1 = await observe(1)
    threads_100, requests_100 = await observe(100)
    # One sending thread per signal (metrics, call summaries) and one that ends requests at
    # their deadline, for the whole process.
    assert threads_1 - before <= 3
    assert threads_100 == threads_1
    # About one request per 500 ms interval, whatever the number of calls.
    assert 2 <= requests_1 <= 5
    assert 2 <= requests_100 <= requests_1 + 1
