"""What a call costs on Grafana Cloud: fewer series per call, fewer data points per series.

Grafana Cloud bills the higher of active series and data points per minute. By
default latency histograms are process-wide (a call's latency is in its summary
record and its exemplars), an unchanged series is sent again only after a
heartbeat, and a changed histogram at most once per histogram interval, except
at a call's end. A fresh process serving one call (Pipecat Cloud starts one per
call) stays within a series budget in both histogram forms. Real pipelines, the
real SDK, the test receiver.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from pipecat.metrics.metrics import TTFBMetricsData, TTSUsageMetricsData

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.helpers import LiveCall, Reporter, Trigger, metric, run_pipeline
from tests.process_cost import ProcessCost, run_call_process

pytestmark = pytest.mark.slow  # a one-call process measured against a real receiver


def tts(characters: int) -> list:
    return [metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=characters)]


def ttfb(seconds: float) -> list:
    return [metric(TTFBMetricsData, processor="OpenAILLMService#1", value=seconds)]


def sends(receiver, name: str, **attributes) -> int:
    """How many points of the series arrived (its zero point included)."""
    return len(
        [
            p
            for p in receiver.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
    )


async def test_latency_histograms_are_per_process_unless_asked_per_call(export_to, monkeypatch):
    receiver = export_to
    await run_pipeline(
        [Reporter([ttfb(0.3)]), GrafanaMetricsExporter(call_id="a")], [Trigger("go")]
    )
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name, call_id="a") == 1, timeout=5)
    assert all(m.CALL_ID not in p.attributes for p in receiver.points(m.TTFB.name))
    assert receiver.total(m.TTFB.name) == 1

    monkeypatch.setenv(cfg.CALL_HISTOGRAMS, "true")  # a new pipeline: another configuration
    await run_pipeline(
        [Reporter([ttfb(0.3)]), GrafanaMetricsExporter(call_id="b")], [Trigger("go")]
    )
    receiver.wait_for(lambda r: r.total(m.TTFB.name, call_id="b") == 1, timeout=5)


async def test_an_unchanged_series_waits_for_its_heartbeat(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.HEARTBEAT, "1.5")
    exporter = GrafanaMetricsExporter(call_id="quiet")
    async with LiveCall([Reporter([tts(40)]), exporter]) as call:
        await call.report()
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="quiet") == 40, 5)
        first = sends(receiver, m.TTS_CHARACTERS.name, call_id="quiet")
        await asyncio.sleep(1.0)  # five exports of 200 ms: the value did not change
        assert sends(receiver, m.TTS_CHARACTERS.name, call_id="quiet") == first
        await asyncio.sleep(1.2)  # past the heartbeat: sent again, so it never looks stale
        assert sends(receiver, m.TTS_CHARACTERS.name, call_id="quiet") == first + 1
        await call.end()


async def test_a_changed_histogram_waits_its_interval_but_a_call_end_sends_it(
    export_to, monkeypatch
):
    receiver = export_to
    monkeypatch.setenv(cfg.HISTOGRAM_INTERVAL, "30")
    exporter = GrafanaMetricsExporter(call_id="busy")
    async with LiveCall([Reporter([ttfb(0.3), ttfb(0.4), ttfb(0.5)]), exporter]) as call:
        for _ in range(3):
            await call.report()
            await asyncio.sleep(0.5)  # a couple of exports each
        # A new series starts with its zero point only; the values wait for the interval.
        assert [p.value for p in receiver.points(m.TTFB.name)] == [0]
        await call.end()
    # The call's end sends what it changed at once.
    receiver.wait_for(lambda r: r.total(m.TTFB.name) == 3, timeout=5)
    assert [p.value for p in receiver.points(m.TTFB.name)] == [0, 3]


async def test_counters_are_not_held_back_by_the_histogram_interval(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.HISTOGRAM_INTERVAL, "30")
    exporter = GrafanaMetricsExporter(call_id="live")
    async with LiveCall([Reporter([tts(10), tts(20)]), exporter]) as call:
        await call.report()
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="live") == 10, 5)
        await call.report()
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="live") == 30, 5)
        await call.end()


async def test_nothing_is_lost_when_a_skipped_send_was_refused(export_to, monkeypatch):
    receiver = export_to
    monkeypatch.setenv(cfg.HEARTBEAT, "30")
    exporter = GrafanaMetricsExporter(call_id="outage", flush_timeout_s=0.5)
    async with LiveCall([Reporter([tts(10), tts(20)]), exporter]) as call:
        await call.report()
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="outage") == 10, 5)
        receiver.respond_with(503)  # down: the change below is refused
        await call.report()
        await asyncio.sleep(0.6)
        receiver.respond_with(200)  # back: what was refused is still a change, so it goes
        receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="outage") == 30, 10)
        await call.end()
    assert exporter.summary.tts_characters == 30


# Issue 18's targets for a fresh process serving the offline call, as Pipecat Cloud and
# per-room runners start one per call.
SERIES_PER_PROCESS = {"native": 60, "classic": 200}


@pytest.fixture(scope="module")
def call_processes() -> dict[str, ProcessCost]:
    """One fresh process of the offline call per histogram form, run side by side."""
    with ThreadPoolExecutor(len(SERIES_PER_PROCESS)) as pool:
        runs = {form: pool.submit(run_call_process, form) for form in SERIES_PER_PROCESS}
        return {form: run.result() for form, run in runs.items()}


@pytest.mark.parametrize("form", SERIES_PER_PROCESS)
def test_a_process_serving_one_call_stays_within_its_series(call_processes, form):
    cost = call_processes[form]
    # The form really applied: native sends its latency histograms as native histograms.
    assert (cost.native_histograms > 0) == (form == "native")
    assert cost.series <= SERIES_PER_PROCESS[form], cost
