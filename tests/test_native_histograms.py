"""The dashboard's latency queries and the latency alerts, evaluated on native histograms.

Grafana Cloud stores an OTLP exponential histogram as a native histogram. No Mimir runs here,
but promtool 2.53 evaluates PromQL on native histograms in its rule tests. A real offline call
(real Pipecat pipeline) runs two exporters side by side, which see the same measurements: the
package's own, pushing native histograms (``histograms="native"``) to the receiver, and one
recording into a real OpenTelemetry SDK provider whose views give each histogram its
explicit-bucket twin and every raw measurement (as exemplars of an SDK exponential histogram,
for the exact quantiles). ``tests/promtool_native.py`` turns the decoded points into
promtool's series: native from the exporter's exponential points, classic from the twins.
Nothing of the expected histograms is written by hand.

Then every latency query of the dashboard and every latency alert runs on the native series
alone, on the classic ones alone, and on both at once:

- native quantiles lie within one bucket of the call summary's figures;
- each alert fires for the same label sets on either form;
- with both forms in one process (a native export refused, then sent classic) every result
  is the classic one, totals not doubled; with one process of each form, totals add up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import (
    AlwaysOnExemplarFilter,
    ExemplarReservoir,
    MeterProvider,
    SimpleFixedSizeExemplarReservoir,
)
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, offline
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts, dashboard, promql
from pipecat_grafana.summary import CallSummary
from tests import promtool_native as native
from tests.backends import INSTALL_SCRIPT, require_tools
from tests.otlp_receiver import OtlpReceiver, Point

pytestmark = pytest.mark.slow  # promtool evaluates a real offline call's points

TURNS = 4
SPEED = 0.05
SEED = 7
RUN_TIMEOUT_S = 60
SERVICE = "native-histograms"
INSTANCE = "process-a"
CALL_ID = "native-call"
# Grafana Cloud keeps at most 160 buckets a native histogram; scale 3 is 9 % a bucket.
EXPONENTIAL = ExponentialBucketHistogramAggregation(max_size=160, max_scale=3)
RAW = 10_000  # more measurements than a call has of any one series
TWIN = ".classic"
"""The explicit-bucket twin of each histogram is exported under its name plus this."""
RAW_VALUES = ".raw"
"""The SDK's exponential histogram holding every measurement as an exemplar: name plus this."""
HISTOGRAMS = [spec for spec in m.ALL if spec.kind is m.Kind.HISTOGRAM]
VALUES = {
    "service_label": "job",
    "native_histograms": dashboard.NATIVE_READ,
    "service": dashboard.ALL,
    "model": dashboard.ALL,
    "call_id": dashboard.ALL,
    "__rate_interval": "1m",
    "__range": "9m",  # from the first step on: see the totals below
    "__range_s": "540",
}
RANGE_STEPS = 36  # the steps of growth "9m" holds at the evaluation time (10m, 15 s a step)


def _promtool() -> Path:
    """promtool 2.53 or later; skip (fail under CI) with the reason when it is not there."""
    promtool = require_tools("promtool")["promtool"]
    version = subprocess.run([str(promtool), "--version"], capture_output=True, text=True)
    found = re.search(r"version (\d+)\.(\d+)", version.stdout + version.stderr)
    if not found or (int(found.group(1)), int(found.group(2))) < (2, 53):
        msg = (
            f"{promtool} is older than 2.53 and cannot read native histograms: run "
            f"{INSTALL_SCRIPT} --force (it takes promtool from trixie)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return promtool


# --------------------------------------------------------------------------------------------
# The source: a real call, its histograms exported over OTLP in both forms


def _every_measurement(aggregation_type: type) -> Callable[..., ExemplarReservoir]:
    """A reservoir keeping every measurement (up to ``RAW``) as an exemplar: the raw values."""
    return functools.partial(SimpleFixedSizeExemplarReservoir, size=RAW)


def _views() -> list[View]:
    views = []
    for spec in HISTOGRAMS:
        views.append(
            View(
                instrument_name=spec.name,
                name=spec.name + RAW_VALUES,
                aggregation=EXPONENTIAL,
                exemplar_reservoir_factory=_every_measurement,
            )
        )
        twin = ExplicitBucketHistogramAggregation(boundaries=list(spec.buckets or ()))
        views.append(View(instrument_name=spec.name, name=spec.name + TWIN, aggregation=twin))
    return views


async def _run_call(receiver: OtlpReceiver) -> CallSummary:
    """One offline call: the exporter's native histograms, and their twins, reach ``receiver``."""
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=receiver.metrics_url), export_interval_millis=60_000
    )
    resource = Resource.create({"service.name": SERVICE, "service.instance.id": INSTANCE})
    provider = MeterProvider(
        metric_readers=[reader],
        resource=resource,
        views=_views(),
        exemplar_filter=AlwaysOnExemplarFilter(),
    )
    models = {
        "llm_model": offline.DEFAULT_LLM_MODEL,
        "stt_model": offline.DEFAULT_STT_MODEL,
        "tts_model": offline.DEFAULT_TTS_MODEL,
    }
    variables = {
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        cfg.OTEL_RESOURCE_ATTRIBUTES: f"service.instance.id={INSTANCE}",
        cfg.LOGS: "false",
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        # One call ID: the two exporters' series of the call are one call's.
        pushed = GrafanaMetricsExporter(
            service_name=SERVICE, histograms="native", call_id=CALL_ID, **models
        )
        twins = GrafanaMetricsExporter(
            meter_provider=provider, call_id=CALL_ID, call_id_label=True, **models
        )
        await asyncio.wait_for(
            offline.run_offline_call(
                turns=TURNS, processors=[pushed, twins], speed=SPEED, seed=SEED, incidents=True
            ),
            RUN_TIMEOUT_S,
        )
    finally:
        pipecat_grafana.shutdown(timeout_s=5)
        provider.shutdown()  # a last export, of everything
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert pushed.summary is not None
    return pushed.summary


@dataclass(frozen=True)
class Call:
    summary: CallSummary
    exponential: list[Point]  # the final point of each series the exporter pushed
    twins: list[Point]
    raw: list[Point]  # every measurement of each series, as exemplars


@pytest.fixture(scope="module")
def call() -> Call:
    with OtlpReceiver() as receiver:
        summary = asyncio.run(_run_call(receiver))
        latest = [
            point
            for spec in HISTOGRAMS
            for name in (spec.name, spec.name + TWIN, spec.name + RAW_VALUES)
            for point in receiver.latest(name).values()
        ]
    exponential = [p for p in latest if p.name in {s.name for s in HISTOGRAMS}]
    twins = [p for p in latest if p.name.endswith(TWIN)]
    raw = [
        dataclasses.replace(p, name=p.name.removesuffix(RAW_VALUES))
        for p in latest
        if p.name.endswith(RAW_VALUES)
    ]
    assert exponential and len(exponential) == len(twins) == len(raw)
    assert {p.kind for p in exponential} == {"exponential_histogram"}
    return Call(summary, exponential, twins, raw)


def _classic(point: Point) -> Point:
    """A twin point under its histogram's own name."""
    return dataclasses.replace(point, name=point.name.removesuffix(TWIN))


def _native_series(call: Call, **labels: str) -> list[native.Series]:
    return [native.growing_native(p, {**native.labels_of(p), **labels}) for p in call.exponential]


def _classic_series(call: Call, **labels: str) -> list[native.Series]:
    return [
        series
        for p in call.twins
        for series in native.growing_classic(_classic(p), {**native.labels_of(p), **labels})
    ]


def _idle_classic_series(call: Call) -> list[native.Series]:
    """The classic series of a process that saw nothing in the window: flat at their values."""
    flat = []
    for series in _classic_series(call):
        start, _, rest = series.values.partition("+")
        growth = rest.split("x")[0]
        flat.append(dataclasses.replace(series, values=f"{growth}+0x{native.STEPS}"))
        assert start == "0", series
    return flat


# --------------------------------------------------------------------------------------------
# What is evaluated


def _latency_queries() -> list[str]:
    """Every percentile query of the dashboard, its variables substituted."""
    return [
        dashboard.substitute(pq.query.expr, VALUES)
        for pq in dashboard.panel_queries()
        if pq.panel.source == dashboard.PROMETHEUS and "histogram_quantile(" in pq.query.expr
    ]


def _totals() -> dict[str, tuple[m.InstrumentSpec, str]]:
    """A histogram's count and sum over the range, as the dashboard's totals read them."""
    return {
        dashboard.substitute(promql.histogram_total(spec, field), VALUES): (spec, field)
        for spec in HISTOGRAMS
        for field in ("count", "sum")
    }


def _latency_rules(**levels: float) -> dict:
    rules = alerts.build_rules(**levels)
    for group in rules["groups"]:
        group["rules"] = [r for r in group["rules"] if "histogram_quantile(" in r["expr"]]
    return rules


_LATENCY_LEVELS = (
    "ttfb_p95_ms",
    "ttfa_p95_ms",
    "turn_latency_p95_ms",
    "greeting_p95_ms",
    "event_loop_lag_p99_ms",
)
HAIR_TRIGGER = {name: 1e-3 for name in _LATENCY_LEVELS}
NEVER = {name: 1e9 for name in _LATENCY_LEVELS}


@pytest.fixture(scope="module")
def forms(call: Call, tmp_path_factory) -> dict[str, dict[str, native.Evaluation]]:
    """Each form's (and mixture's) evaluation, with the default, hair-trigger and never levels."""
    promtool = _promtool()
    inputs = {
        "native": _native_series(call),
        "classic": _classic_series(call),
        "both in one process": _native_series(call) + _classic_series(call),
        "one process of each": _native_series(call, instance="process-b") + _classic_series(call),
        "an idle classic process beside a native one": (
            _native_series(call, instance="process-b") + _idle_classic_series(call)
        ),
    }
    queries = [*_latency_queries(), *_totals()]
    out: dict[str, dict[str, native.Evaluation]] = {}
    for form, series in inputs.items():
        out[form] = {}
        for levels_name, levels in (("default", {}), ("hair", HAIR_TRIGGER), ("never", NEVER)):
            workdir = tmp_path_factory.mktemp(re.sub(r"\W", "-", f"{form}-{levels_name}"))
            out[form][levels_name] = native.evaluate(
                promtool, workdir, series, queries, _latency_rules(**levels)
            )
    return out


# --------------------------------------------------------------------------------------------
# The checks


def _spec_of(query: str) -> m.InstrumentSpec:
    (name,) = set(re.findall(r"\b(voice_\w+?)(?:_bucket)?\{", query))
    (spec,) = [s for s in HISTOGRAMS if s.prometheus_name == name]
    return spec


def _quantile_of(query: str) -> float:
    (q,) = set(re.findall(r"histogram_quantile\(([\d.]+),", query))
    return float(q)


def _whose(labels: Mapping[str, object]) -> object:
    """What the summary files a latency under: its processor, or a tool call's function."""
    return labels.get(m.PROCESSOR, labels.get(m.FUNCTION))


def _exact(call: Call, spec: m.InstrumentSpec, labels: Mapping[str, str], q: float):
    """Where the ``q`` quantile of the group's raw measurements lies: ``(low, high)``.

    The ``ceil(q * n)``-th smallest value; where ``q * n`` is a whole number ``k``, anything
    from the ``k``-th to the ``k + 1``-th is a ``q`` quantile (and Prometheus, adding up
    floating-point rates, may land on either).
    """
    points = [
        p
        for p in call.raw
        if p.name == spec.name and all(p.attributes.get(k) == v for k, v in labels.items())
    ]
    values = sorted(e.value for p in points for e in p.exemplars)
    if len(values) != sum(p.value for p in points):  # some not kept: what is known
        return min(p.min for p in points), max(p.max for p in points)
    rank = q * len(values)
    if abs(rank - round(rank)) < 1e-9 and 0 < round(rank) < len(values):
        return values[round(rank) - 1], values[round(rank)]
    value = values[max(math.ceil(rank - 1e-9), 1) - 1]
    return value, value


def test_the_call_is_exported_as_exponential_histograms(call: Call):
    # What the exporter pushed: scale 3 at most, within Grafana Cloud's 160 buckets, every
    # latency of the call counted as often as its summary says, exemplars naming the call;
    # and the same measurements as the SDK's twins and raw values.
    latency = {spec.name for spec in (*m.LATENCY, m.TURN_LATENCY)}
    assert latency <= {p.name for p in call.exponential}
    for point in call.exponential:
        assert point.scale is not None and point.scale <= 3, point
        assert len(point.positive.counts) + len(point.negative.counts) <= 160, point
    for point in call.raw:
        if point.name in latency:
            assert len(point.exemplars) == point.value, point.name  # every raw measurement
    exemplars = {e.attributes[m.CALL_ID] for p in call.exponential for e in p.exemplars}
    assert exemplars <= {CALL_ID}  # those not sent before: the last point may have none
    counts = {(p.name, frozenset(p.attributes.items())): p.value for p in call.exponential}
    assert counts == {(p.name, frozenset(p.attributes.items())): p.value for p in call.raw}
    assert call.summary.latency
    for stats in call.summary.latency:
        name = f"voice.{stats.metric}.milliseconds"
        (point,) = [
            p
            for p in call.exponential
            if p.name == name and _whose(p.attributes) == stats.processor
        ]
        assert point.value == stats.count, (name, stats.processor)


def test_native_quantiles_lie_within_one_bucket_of_the_exact_figures(call, forms):
    samples = forms["native"]["default"].samples
    checked = 0
    for query in _latency_queries():
        spec, q = _spec_of(query), _quantile_of(query)
        if not any(p.name == spec.name for p in call.exponential):
            continue  # not measured in this call (none of it to read)
        assert samples[query], f"no data on native histograms: {query}"
        for labels, value in samples[query].items():
            low, high = _exact(call, spec, dict(labels), q)
            points = [p for p in call.exponential if p.name == spec.name]
            bucket = 2 ** (2 ** -min(p.scale for p in points))
            assert low / bucket <= value <= high * bucket, (spec.name, q, dict(labels), value)
            checked += 1
    assert checked >= 10


def test_each_latency_alert_fires_on_native_histograms_as_on_classic_ones(forms):
    for levels in ("default", "hair", "never"):
        native_firing = forms["native"][levels].firing
        classic_firing = forms["classic"][levels].firing
        assert native_firing == classic_firing, levels
    # The hair trigger fires every latency alert (the call has each latency); "never", none.
    hair = forms["native"]["hair"].firing
    assert hair and all(hair.values()), hair
    assert not any(forms["native"]["never"].firing.values())


def test_classic_and_native_agree_on_quantiles_by_group(forms):
    native_samples = forms["native"]["default"].samples
    classic_samples = forms["classic"]["default"].samples
    for query in _latency_queries():
        assert set(native_samples[query]) == set(classic_samples[query]), query


def _same(a: dict, b: dict) -> bool:
    """The same samples, but for the order floating-point values were added in."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-12) for k in a
    )


def test_both_forms_in_one_process_read_as_the_classic_form(forms):
    # A native export refused, then sent classic: the process counts once, by its classic
    # series, which hold everything since the process started.
    both = forms["both in one process"]["default"].samples
    classic = forms["classic"]["default"].samples
    for query in [*_latency_queries(), *_totals()]:
        assert _same(both[query], classic[query]), query


def test_totals_are_exact_in_either_form_and_add_up_across_processes(call, forms):
    # Each form against its own points: the two exporters time the call each for itself.
    for query, (spec, field) in _totals().items():
        expected = {}
        for form, points in (("native", call.exponential), ("classic", call.twins)):
            points = [p for p in points if p.name.removesuffix(TWIN) == spec.name]
            expected[form] = RANGE_STEPS * sum(
                p.value if field == "count" else p.sum for p in points
            )
        if not expected["native"]:
            continue
        for form in ("native", "classic"):
            (value,) = forms[form]["default"].samples[query].values()
            assert value == pytest.approx(expected[form], rel=1e-9), (form, spec.name, field)
        (mixed,) = forms["one process of each"]["default"].samples[query].values()
        total = expected["native"] + expected["classic"]
        assert mixed == pytest.approx(total, rel=1e-9), (spec.name, field)


def test_an_idle_classic_process_does_not_hide_the_native_quantiles(forms):
    # A fleet moving to native: the classic processes left saw nothing in the window (their
    # quantile is NaN), the native ones did: the dashboard shows the native figures.
    mixed = forms["an idle classic process beside a native one"]["default"].samples
    native_only = forms["native"]["default"].samples
    for query in _latency_queries():
        assert _same(mixed[query], native_only[query]), query
