"""End-to-end: the real OpenTelemetry SDK pushes OTLP/HTTP into real metrics databases.

Two backends, both run from .tools/ (``scripts/install-backends.sh``) on 127.0.0.1:

* VictoriaMetrics, which ingests OTLP itself (``-opentelemetry.usePrometheusNaming``);
* Prometheus, fed by vmagent (OTLP in, Prometheus remote write out), since Debian's
  Prometheus has no OTLP receiver.

The assertions pin down what dashboards and alert rules can rely on: the Prometheus names,
the ``le`` buckets, the values, and which labels the resource attributes become.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.backends import PrometheusWithAgent, VictoriaMetrics, http_post

pytestmark = pytest.mark.e2e

Backend = VictoriaMetrics | PrometheusWithAgent

RESOURCE_ATTRIBUTES = {
    "service.name": "e2e-bot",
    "service.namespace": "voice",
    "service.instance.id": "bot-1",
    "deployment.environment.name": "test",
}
# What the resource attributes become on every series, on both backends (VictoriaMetrics'
# OTLP translation, used by VM itself and by vmagent): each attribute is a label, dots turned
# into underscores, the SDK's own telemetry.sdk.* included. No `job`, no `instance`, no
# target_info and no otel_scope_* labels (unlike Grafana Cloud's Mimir, which derives
# job/instance from service.* and moves other resource attributes to target_info).
RESOURCE_LABELS = {
    "service_name": "e2e-bot",
    "service_namespace": "voice",
    "service_instance_id": "bot-1",
    "deployment_environment_name": "test",
    "telemetry_sdk_language": "python",
    "telemetry_sdk_name": "opentelemetry",
}
TTFB_BUCKETS = (100.0, 250.0, 500.0, 1000.0)


@pytest.fixture(params=["victoriametrics", "prometheus+vmagent"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    server = VictoriaMetrics() if request.param == "victoriametrics" else PrometheusWithAgent()
    with server:
        yield server
        # Shown by pytest only when the test failed.
        print(f"--- {request.param} log ---\n{server.log_tail(60)}")


def _value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def _one(result: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(result) == 1, result
    return result[0]


def _push_with_sdk(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record a few instruments with the real SDK and export them once over OTLP/HTTP."""
    for var in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(var, raising=False)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, timeout=10),
        export_interval_millis=3_600_000,  # only the explicit flush exports
    )
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(RESOURCE_ATTRIBUTES))
    try:
        meter = provider.get_meter("pipecat_grafana.e2e", "0.0.0")
        tokens = meter.create_counter("voice.llm.tokens.total", unit="{token}")
        tokens.add(5, {"model": "m1", "call_id": "c1"})
        tokens.add(7, {"model": "m1", "call_id": "c1"})
        tokens.add(3, {"model": "m2", "call_id": "c2"})
        ttfb = meter.create_histogram(
            "voice.ttfb.milliseconds",
            unit="ms",
            explicit_bucket_boundaries_advisory=list(TTFB_BUCKETS),
        )
        for ms in (80, 120, 300, 2000):
            ttfb.record(ms, {"stage": "llm"})
        active = meter.create_up_down_counter("voice.calls.active", unit="{call}")
        active.add(3, {"transport": "webrtc"})
        active.add(-1, {"transport": "webrtc"})
        assert provider.force_flush(timeout_millis=15_000), "OTLP export failed"
    finally:
        provider.shutdown()


def test_sdk_metrics_land_with_prometheus_names(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push_with_sdk(backend.otlp_metrics_url, monkeypatch)

    # Counter: unit annotation {token} adds nothing, `.total` is not doubled.
    m1 = _one(backend.wait_for('voice_llm_tokens_total{model="m1"}'))
    assert _value(m1) == 12
    assert m1["metric"]["call_id"] == "c1"
    assert _value(_one(backend.wait_for("sum(voice_llm_tokens_total)"))) == 15

    # Histogram: unit ms is already in the name, so it is not appended again.
    buckets = backend.wait_for('voice_ttfb_milliseconds_bucket{stage="llm"}')
    by_le = {s["metric"]["le"]: _value(s) for s in buckets}
    assert by_le == {"100": 1, "250": 2, "500": 3, "1000": 3, "+Inf": 4}
    assert _value(_one(backend.wait_for("voice_ttfb_milliseconds_count"))) == 4
    assert _value(_one(backend.wait_for("voice_ttfb_milliseconds_sum"))) == 2500

    # Up-down counter: a gauge, no suffix.
    active = _one(backend.wait_for('voice_calls_active{transport="webrtc"}'))
    assert _value(active) == 2

    # Resource attributes -> labels, identical for every series.
    labels = dict(active["metric"])
    assert labels.pop("__name__") == "voice_calls_active"
    assert labels.pop("transport") == "webrtc"
    assert labels.pop("telemetry_sdk_version")  # the installed SDK's version
    assert labels == RESOURCE_LABELS
    for series in (m1, *buckets):
        assert {k: series["metric"].get(k) for k in RESOURCE_LABELS} == RESOURCE_LABELS


# --------------------------------------------------------------------------------------------
# Two points of one series in one request: a zero at the series' start, then the value.


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _cumulative_sum(name: str, points: list[tuple[int, int]], start_ns: int) -> Any:
    return metrics_pb2.Metric(
        name=name,
        sum=metrics_pb2.Sum(
            aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
            data_points=[
                metrics_pb2.NumberDataPoint(
                    start_time_unix_nano=start_ns,
                    time_unix_nano=ts,
                    as_int=value,
                    attributes=[_kv("call_id", "c1")],
                )
                for ts, value in points
            ],
        ),
    )


def _two_point_request(t0_ns: int, gap_ns: int) -> bytes:
    start = t0_ns - gap_ns
    metrics = [
        # A zero at the start time, then the real value, in one request.
        _cumulative_sum("e2e.zero.first", [(start, 0), (t0_ns, 42)], start),
        # Control: only the real value (a series first seen with a non-zero value).
        _cumulative_sum("e2e.single", [(t0_ns, 42)], start),
    ]
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=ProtoResource(attributes=[_kv("service.name", "e2e-bot")]),
                scope_metrics=[metrics_pb2.ScopeMetrics(metrics=metrics)],
            )
        ]
    )
    return request.SerializeToString()


def test_two_points_of_one_series_in_one_request(backend: Backend) -> None:
    gap_s = 10
    t0_ns = time.time_ns() // 1_000_000 * 1_000_000  # whole ms: both backends store ms
    t0 = t0_ns / 1e9
    status, body = http_post(
        backend.otlp_metrics_url,
        _two_point_request(t0_ns, gap_s * 1_000_000_000),
        "application/x-protobuf",
    )
    assert status in (200, 204), (status, body)
    backend.wait_for("e2e_zero_first_total", time=t0)
    backend.wait_for("e2e_single_total", time=t0)

    # Both points are stored, on both backends.
    raw = _one(backend.query("e2e_zero_first_total[5m]", time=t0 + 1))
    samples = [(round(float(ts) - t0, 3), float(v)) for ts, v in raw["values"]]
    assert samples == [(-gap_s, 0.0), (0.0, 42.0)]

    # Evaluated at the last sample, increase() counts exactly the full value on both.
    assert _value(_one(backend.query("increase(e2e_zero_first_total[5m])", time=t0))) == 42

    # Later, Prometheus extrapolates past the last sample (by up to half the average gap
    # between samples: 42 * 1.5 here), bounded below by the zero; VM never extrapolates.
    later = _value(_one(backend.query("increase(e2e_zero_first_total[5m])", time=t0 + 60)))
    if isinstance(backend, VictoriaMetrics):
        assert later == 42
    else:
        assert later == pytest.approx(63)

    # Without the zero, a series' first value is never counted by increase():
    # VM returns 0, Prometheus has no result (it needs two samples in the window).
    single = backend.query("increase(e2e_single_total[5m])", time=t0 + 1)
    if isinstance(backend, VictoriaMetrics):
        assert [_value(s) for s in single] == [0]
    else:
        assert single == []
