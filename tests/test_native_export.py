"""Native histograms end to end: the offline call pushed as OTLP exponential histograms.

Grafana Cloud keeps an OTLP exponential histogram as a native histogram, one series per
label set. What the receiver decodes must hold every measurement Pipecat reported, with
the exemplars that lead to the call; an endpoint that refuses exponential histograms
gets the classic form instead, with nothing lost.
"""

import asyncio

import pytest

import pipecat_grafana
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.commands.demo import OfflineDemo
from pipecat_grafana.summary import CallSummary
from tests.backends import free_port
from tests.otlp_receiver import OtlpReceiver
from tests.test_scrape import scrape_once

EXPONENTIAL = "exponential_histogram"
HISTOGRAMS = [spec for spec in m.ALL if spec.kind is m.Kind.HISTOGRAM]
# The summary names each latency after its instrument: voice.<name>.milliseconds.
SUMMARY_NAME = {spec: spec.name.split(".")[1] for spec in m.LATENCY}


async def _offline_calls(receiver: OtlpReceiver, *, shutdown: bool = True) -> list[CallSummary]:
    demo = OfflineDemo(turns=3, calls=1, speed=0.05, seed=5)
    await asyncio.wait_for(demo.run(), 60)
    if shutdown:
        pipecat_grafana.shutdown(timeout_s=5)
    assert len(demo.summaries) == 1
    return demo.summaries


def _counts_by_processor(receiver: OtlpReceiver, spec: m.InstrumentSpec, call_id: str):
    counts: dict[str, int] = {}
    for point in receiver.latest(spec.name).values():
        if point.attributes[m.CALL_ID] == call_id:
            processor = point.attributes[m.PROCESSOR]
            counts[processor] = counts.get(processor, 0) + int(point.value)
    return counts


async def test_every_histogram_arrives_exponential_and_holds_what_pipecat_reported(
    export_to, monkeypatch
):
    receiver = export_to
    monkeypatch.setenv(cfg.HISTOGRAMS, "native")
    monkeypatch.setenv(cfg.CALL_HISTOGRAMS, "true")  # each call's own: checked per call
    (summary,) = await _offline_calls(receiver)
    kinds = {p.name: p.kind for p in receiver.points() if p.name in {s.name for s in HISTOGRAMS}}
    assert kinds and set(kinds.values()) == {EXPONENTIAL}, kinds
    assert {m.TTFB.name, m.PROCESSING.name, m.SESSION_DURATION.name} <= set(kinds)
    reported = {}
    for stats in summary.latency:
        reported.setdefault(stats.metric, {})[stats.processor] = stats.count
    for spec in m.LATENCY:
        if SUMMARY_NAME[spec] in reported:
            got = _counts_by_processor(receiver, spec, summary.call_id)
            assert got == reported[SUMMARY_NAME[spec]], spec.name
    for point in receiver.latest(m.TTFB.name).values():
        buckets = sum(point.positive[1]) + sum(point.negative[1]) + point.zero_count
        assert buckets == point.value  # every measurement in a bucket
        assert point.scale == 3  # 1 ms to 60 s fits at full resolution
        assert point.min <= point.sum / point.value <= point.max
    exemplars = [e for p in receiver.points(m.TTFB.name) for e in p.exemplars]
    assert exemplars and {e.attributes[m.CALL_ID] for e in exemplars} == {summary.call_id}
    (duration,) = receiver.latest(m.SESSION_DURATION.name).values()
    assert duration.kind == EXPONENTIAL and duration.value == 1
    assert duration.sum == pytest.approx(summary.duration_seconds, rel=1e-6)


async def test_an_endpoint_refusing_exponential_histograms_gets_the_classic_form(
    export_to, monkeypatch, log_lines
):
    receiver = export_to
    receiver.refuse_exponential("native histograms are disabled for this tenant")
    monkeypatch.setenv(cfg.HISTOGRAMS, "native")
    monkeypatch.setenv(cfg.CALL_HISTOGRAMS, "true")
    (summary,) = await _offline_calls(receiver)
    refused = [line for line in log_lines if "refused native (exponential) histograms" in line]
    assert len(refused) == 1, refused
    assert "native histograms are disabled" in refused[0]
    assert {p.kind for p in receiver.points(m.TTFB.name)} == {"histogram"}
    for stats in summary.latency:
        if stats.metric == "ttfb":
            got = _counts_by_processor(receiver, m.TTFB, summary.call_id)
            assert got[stats.processor] == stats.count  # nothing lost
    assert receiver.total(m.CALLS.name) == 1


def test_native_is_the_default_for_grafana_cloud_only():
    cloud = {
        cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp",
        cfg.GRAFANA_CLOUD_INSTANCE_ID: "123456",
        cfg.GRAFANA_CLOUD_API_TOKEN: "glc_secret",
    }
    assert cfg.resolve(cloud).histograms == cfg.NATIVE
    on_grafana_net = {
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://otlp-gateway-prod-us-east-0.grafana.net/otlp"
    }
    assert cfg.resolve(on_grafana_net).histograms == cfg.NATIVE
    elsewhere = {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:8428/opentelemetry"}
    assert cfg.resolve(elsewhere).histograms == cfg.CLASSIC
    assert cfg.resolve({**cloud, cfg.HISTOGRAMS: "classic"}).histograms == cfg.CLASSIC
    assert cfg.resolve({**elsewhere, cfg.HISTOGRAMS: "Native"}).histograms == cfg.NATIVE
    assert cfg.resolve(elsewhere, histograms="native").histograms == cfg.NATIVE
    assert "Grafana Cloud" in cfg.resolve(cloud).describe()["histogram form"]


def test_a_bad_form_is_one_notice_naming_the_variable_and_both_values():
    env = {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318", cfg.HISTOGRAMS: "exp"}
    config = cfg.resolve(env)  # the setting's default, export still on
    assert config.enabled and config.histograms == cfg.CLASSIC
    (message,) = [n for n in config.notices if cfg.HISTOGRAMS in n]
    assert "native" in message and "classic" in message
    with pytest.raises(ValueError, match="histograms must be 'native' or 'classic'"):
        cfg.resolve(env, histograms="exp")


@pytest.mark.slow
async def test_the_prometheus_endpoint_serves_the_classic_form_of_native_histograms(
    export_to, monkeypatch
):
    receiver = export_to
    port = free_port()
    monkeypatch.setenv(cfg.HISTOGRAMS, "native")
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(port))
    await _offline_calls(receiver, shutdown=False)
    await asyncio.to_thread(scrape_once, port)  # a new series is served at zero first
    found = await asyncio.to_thread(scrape_once, port)
    served = [v for (name, _), v in found.items() if name == m.TTFB.prometheus_name + "_count"]
    pipecat_grafana.shutdown(timeout_s=5)
    pushed = receiver.total(m.TTFB.name)
    assert {p.kind for p in receiver.points(m.TTFB.name)} == {EXPONENTIAL}
    assert served and sum(served) == pushed  # the same measurements, in the classic form
