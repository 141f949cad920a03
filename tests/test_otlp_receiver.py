"""Proves tests/otlp_receiver.py against the real OpenTelemetry SDK exporter (no mocks)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.otlp_receiver import OtlpReceiver

CUMULATIVE = 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@contextmanager
def pipeline(receiver: OtlpReceiver, **exporter_kwargs) -> Iterator[MeterProvider]:
    """A real SDK pipeline to the receiver; exports only on force_flush()/shutdown()."""
    exporter_kwargs.setdefault("endpoint", receiver.metrics_url)
    exporter_kwargs.setdefault("timeout", 5)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(**exporter_kwargs), export_interval_millis=3_600_000
    )
    resource = Resource.create({"service.name": "bot-test", "deployment.environment": "ci"})
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    try:
        yield provider
    finally:
        provider.shutdown()


def record_some(provider: MeterProvider) -> None:
    meter = provider.get_meter("pipecat_grafana.test", "1.0")
    calls = meter.create_counter("bot.calls", unit="{call}")
    active = meter.create_up_down_counter("bot.active_calls", unit="{call}")
    ttfb = meter.create_histogram(
        "bot.ttfb", unit="s", explicit_bucket_boundaries_advisory=[0.1, 0.5, 1.0]
    )
    calls.add(1, {"outcome": "ok", "bot": "a"})
    calls.add(2, {"outcome": "ok", "bot": "a"})
    calls.add(1, {"outcome": "error", "bot": "a"})
    active.add(3, {"bot": "a"})
    active.add(-1, {"bot": "a"})
    for v in (0.05, 0.3, 0.3, 2.0):
        ttfb.record(v, {"service": "tts", "retries": 0, "ratio": 0.5, "cached": False})


def test_counter_updown_histogram_arrive_decoded(receiver: OtlpReceiver) -> None:
    with pipeline(receiver, headers={"Authorization": "Basic czNjcjN0"}) as provider:
        record_some(provider)
        provider.force_flush()
        assert receiver.names() == {"bot.calls", "bot.active_calls", "bot.ttfb"}

        (request,) = receiver.requests
        assert request.headers["authorization"] == "Basic czNjcjN0"
        assert request.headers["content-type"] == "application/x-protobuf"
        assert request.size == request.message.ByteSize()

        calls = receiver.latest("bot.calls")
        ok = calls[frozenset({("outcome", "ok"), ("bot", "a")})]
        assert (ok.kind, ok.unit, ok.is_monotonic, ok.temporality) == ("sum", "{call}", True, 2)
        assert ok.value == 3
        assert ok.scope == "pipecat_grafana.test"
        assert ok.resource["service.name"] == "bot-test"
        assert ok.resource["deployment.environment"] == "ci"
        assert ok.time_unix_nano > ok.start_time_unix_nano > 0
        assert receiver.total("bot.calls") == 4
        assert receiver.total("bot.calls", outcome="error") == 1
        assert receiver.total("bot.calls", outcome="nope") == 0

        (active,) = receiver.points("bot.active_calls")
        assert (active.kind, active.is_monotonic, active.value) == ("sum", False, 2)
        assert active.attributes == {"bot": "a"}

        (hist,) = receiver.points("bot.ttfb")
        assert hist.kind == "histogram" and hist.unit == "s"
        assert hist.temporality == CUMULATIVE and hist.is_monotonic is None
        assert hist.attributes == {"service": "tts", "retries": 0, "ratio": 0.5, "cached": False}
        assert hist.value == 4
        assert hist.sum == pytest.approx(2.65)
        assert hist.explicit_bounds == (0.1, 0.5, 1.0)
        assert hist.bucket_counts == (1, 2, 0, 1)
        assert (hist.min, hist.max) == (0.05, 2.0)
        assert receiver.total("bot.ttfb", service="tts") == 4


def test_latest_is_the_final_cumulative_value(receiver: OtlpReceiver) -> None:
    with pipeline(receiver) as provider:
        counter = provider.get_meter("m").create_counter("bot.turns")
        counter.add(1, {"call.id": "c1"})
        provider.force_flush()
        counter.add(5, {"call.id": "c1"})
        counter.add(7, {"call.id": "c2"})
        provider.force_flush()
    assert [p.value for p in receiver.points("bot.turns") if p.attributes["call.id"] == "c1"] == [
        1,
        6,
        6,  # shutdown() exports once more
    ]
    assert receiver.total("bot.turns", **{"call.id": "c1"}) == 6
    assert receiver.total("bot.turns") == 13
    (key,) = [k for k in receiver.latest("bot.turns", with_resource=True) if ("call.id", "c2") in k]
    assert ("resource.service.name", "bot-test") in key


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_bodies_are_decoded(receiver: OtlpReceiver, compression: Compression) -> None:
    with pipeline(receiver, compression=compression) as provider:
        record_some(provider)
        provider.force_flush()
        (request,) = receiver.requests
        assert request.headers["content-encoding"] == compression.value
        assert request.size < request.message.ByteSize()
        assert receiver.total("bot.calls") == 4


def test_base_endpoint_from_env(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    with pipeline(receiver, endpoint=None) as provider:
        record_some(provider)
        provider.force_flush()
        assert receiver.total("bot.calls") == 4


def test_401_is_rejected_and_not_retried(receiver: OtlpReceiver) -> None:
    receiver.respond_with(401)
    with pipeline(receiver) as provider:
        record_some(provider)
        provider.force_flush()  # returns True even though the export failed
        assert receiver.attempts == 1  # 401 is not retryable
        assert [r.status for r in receiver.rejected] == [401]
        assert receiver.requests == [] and receiver.points() == []
        with pytest.raises(KeyError, match="never arrived"):
            receiver.total("bot.calls")


def test_503_with_retry_after_is_retried_then_lands(receiver: OtlpReceiver) -> None:
    receiver.respond_with(503, retry_after=1, times=1)
    with pipeline(receiver) as provider:
        record_some(provider)
        started = time.monotonic()
        provider.force_flush()
        elapsed = time.monotonic() - started
        assert receiver.attempts == 2
        assert [r.status for r in receiver.rejected] == [503]
        assert 0.9 <= elapsed < 3  # waited Retry-After (1 s, no jitter) before retrying
        assert receiver.total("bot.calls") == 4


def test_retry_after_beyond_exporter_timeout_gives_up_at_once(receiver: OtlpReceiver) -> None:
    receiver.respond_with(429, retry_after=30)
    with pipeline(receiver, timeout=5) as provider:
        record_some(provider)
        started = time.monotonic()
        provider.force_flush()
        assert time.monotonic() - started < 1  # no waiting: 30 s exceeds the 5 s budget
        assert [r.status for r in receiver.rejected] == [429]
        receiver.respond_with(200)  # let the shutdown export land


def test_hang_does_not_block_stop() -> None:
    receiver = OtlpReceiver().start()
    receiver.hang()
    with pipeline(receiver, timeout=1) as provider:
        record_some(provider)
        flush = threading.Thread(target=provider.force_flush, daemon=True)
        flush.start()
        receiver.wait_for(lambda r: r.attempts >= 1, timeout=5)
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 0.5
        flush.join(timeout=3)
        assert not flush.is_alive()  # exporter gave up within its 1 s budget
    assert [r.status for r in receiver.rejected] == [None]
    assert receiver.requests == []


def test_hung_export_times_out_after_exporter_timeout(receiver: OtlpReceiver) -> None:
    receiver.hang()
    with pipeline(receiver, timeout=1) as provider:
        record_some(provider)
        started = time.monotonic()
        provider.force_flush()
        assert 0.9 <= time.monotonic() - started < 2
        receiver.unhang()
        receiver.wait_for(lambda r: r.rejected and r.rejected[0].status is None, timeout=2)
        receiver.clear()
    assert receiver.total("bot.calls") == 4  # the shutdown export is answered normally


def test_other_paths_404_and_helpers_fail_loudly(receiver: OtlpReceiver) -> None:
    req = urllib.request.Request(receiver.endpoint + "/v1/profiles", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=2)
    assert err.value.code == 404
    assert receiver.attempts == 0
    with pytest.raises(KeyError):
        receiver.total("missing")
    with pytest.raises(TimeoutError, match="attempts=0"):
        receiver.wait_for(lambda r: r.total("missing") > 0, timeout=0.1)
