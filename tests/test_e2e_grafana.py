"""End-to-end: every query of the shipped dashboard and alert rules, against real databases.

The exporter pushes a multi-call workload (offline calls through real Pipecat pipelines) over
OTLP/HTTP into two real backends run from ``.tools/`` on 127.0.0.1:

* VictoriaMetrics, which keeps resource attributes as labels (``service_name``); the
  dashboard's service label is set to ``service_name``.
* Prometheus fed by vmagent, relabelled the way Grafana Cloud (Mimir) stores OTLP
  (``service.name`` in ``job``, ``service.instance.id`` in ``instance``, the other resource
  attributes gone); the service label stays ``job``, the dashboard's default.

Each backend receives two services at once: one exporting with the ``call_id`` label, one
without, through an endpoint that rejects each service's first export (401), as a real one
does now and then, so that the exporter's own health has something to show. Each service runs three complete calls and holds a fourth open (so that the calls
gauge ends at one, as when a bot process dies mid-call). The calls are the demo's, incidents
included: each has a tool call, a barge-in, a rate-limited TTS request and an outcome, so that
the conversation panels have data. Then every panel query and every alert expression runs
against the database, Grafana's variables substituted, and must return data of the expected
shape; the totals must agree with the exporters' call summaries.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipecat.frames.frames import Frame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import pipecat_grafana
from pipecat_grafana import CallSummary, GrafanaMetricsExporter
from pipecat_grafana import instruments as m
from pipecat_grafana import offline as demo
from pipecat_grafana.commands.demo import CALL_ATTRIBUTES, scripted_outcome
from pipecat_grafana.config import OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
from pipecat_grafana.grafana import alerts, dashboard
from tests.backends import PrometheusWithAgent, VictoriaMetrics
from tests.flaky_endpoint import RejectFirst

pytestmark = pytest.mark.e2e

Backend = VictoriaMetrics | PrometheusWithAgent

SERVICE_PER_CALL = "e2e-voice-per-call"
SERVICE_FLEET = "e2e-voice-fleet"
SERVICES = {SERVICE_PER_CALL: True, SERVICE_FLEET: False}  # service -> call_id label on
CALLS = 3  # complete calls per service, plus one held open
TURNS = 3
SPEED = 0.05
EXPORT_INTERVAL_S = 0.5
WORKLOAD_TIMEOUT_S = 60  # the calls take about 8 s
MODELS = {
    "llm_model": demo.DEFAULT_LLM_MODEL,
    "stt_model": demo.DEFAULT_STT_MODEL,
    "tts_model": demo.DEFAULT_TTS_MODEL,
}
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval for a 15 s scrape interval

REL = 1e-9  # float summation order

# How Grafana Cloud (Mimir) stores OTLP resource attributes, done by vmagent.
GRAFANA_CLOUD_RELABEL = """\
- action: replace
  source_labels: [service_namespace, service_name]
  separator: /
  regex: /?(.+)
  target_label: job
- action: replace
  source_labels: [service_instance_id]
  target_label: instance
- action: labeldrop
  regex: service_name|service_namespace|service_instance_id|telemetry_sdk_.*
"""


@dataclass(frozen=True)
class Layout:
    """How a backend stores the resource attributes."""

    name: str
    service_label: str
    present: frozenset[str]  # which of the alerts' grouping labels exist
    pushes: bool = True  # whether the bot pushed OTLP (else it has no export health)
    native_histograms: str = dashboard.NATIVE_READ  # the variable's value for this backend


VICTORIA_METRICS = Layout(
    "victoriametrics",
    "service_name",
    frozenset({"service_name", "service_instance_id"}),
    native_histograms=dashboard.NATIVE_SKIP,  # it has none, and refuses histogram_count
)
GRAFANA_CLOUD_LIKE = Layout(
    "prometheus+vmagent (Grafana Cloud labels)", "job", frozenset({"job", "instance"})
)


@dataclass
class Loaded:
    """A backend after the workload, and what the workload really did."""

    backend: Backend
    layout: Layout
    summaries: dict[str, list[CallSummary]]  # service -> complete calls
    t_start: float
    t_end: float  # after the final export
    t_eval: float

    @property
    def range_s(self) -> int:
        return math.ceil(self.t_eval - self.t_start) + 2

    def values(self, service: str, **overrides: str) -> dict[str, str]:
        """Grafana's variables, for ``dashboard.substitute``."""
        return {
            "service_label": self.layout.service_label,
            "native_histograms": self.layout.native_histograms,
            "service": service,
            "model": dashboard.ALL,
            "call_id": dashboard.ALL,
            "__rate_interval": RATE_INTERVAL,
            "__range": f"{self.range_s}s",
            "__range_s": str(self.range_s),
            **overrides,
        }

    def run(self, query: dashboard.Query, values: dict[str, str]) -> list[dict[str, Any]]:
        """Run a panel query as Grafana would: instant, or over the workload's time range."""
        expr = dashboard.substitute(query.expr, values)
        if query.instant:
            return self.backend.query(expr, time=self.t_eval)
        return self.backend.query_range(expr, self.t_start, self.t_eval, step=1)


# --------------------------------------------------------------------------------------------
# The workload


class StartSeen(FrameProcessor):
    """Sets ``started`` once the ``StartFrame`` has passed the processors before it."""

    def __init__(self):
        super().__init__()
        self.started = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self.started.set()
        await self.push_frame(frame, direction)


class HeldCall:
    """A call that starts and stays in progress: a pipeline with only the exporter."""

    def __init__(self, exporter: GrafanaMetricsExporter):
        self.exporter = exporter
        self.start_seen = StartSeen()
        self.worker = PipelineWorker(
            Pipeline([exporter, self.start_seen]),
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        )
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.task = asyncio.create_task(runner.run())
        await asyncio.wait_for(self.start_seen.started.wait(), 10)
        assert self.exporter.summary.started_at is not None

    async def end(self) -> None:
        if self.task is None:
            return
        await self.worker.cancel()
        await asyncio.wait_for(self.task, 10)


def _exporter(service: str, call_id_label: bool) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        **MODELS,
        service_name=service,
        call_id_label=call_id_label,
        export_interval_s=EXPORT_INTERVAL_S,
        flush_timeout_s=1,
        call_attributes=CALL_ATTRIBUTES,
    )


def _seed(index: int) -> int:
    return 100 * index


async def _workload() -> dict[str, list[CallSummary]]:
    exporters: dict[str, list[GrafanaMetricsExporter]] = {service: [] for service in SERVICES}

    def factory(service: str, seed: int):
        seeds = itertools.count(seed)  # call i of run_offline_calls has seed + i

        def make() -> list[GrafanaMetricsExporter]:
            exporter = _exporter(service, SERVICES[service])
            exporter.set_call_attributes(outcome=scripted_outcome(next(seeds)))
            exporters[service].append(exporter)
            return [exporter]

        return make

    # The first call of a process holds the loop for its imports (about 0.3 s, which the lag
    # histogram shows): a bot pays it once, among a window's thousands of lag samples, where
    # this workload has a few dozen. Pay it first, unmeasured, as the benchmark does.
    await demo.run_offline_call(turns=1, speed=SPEED, seed=0)
    held = [HeldCall(_exporter(service, label)) for service, label in SERVICES.items()]
    try:
        async with asyncio.timeout(WORKLOAD_TIMEOUT_S):
            for call in held:
                await call.start()
            await asyncio.gather(
                *(
                    demo.run_offline_calls(
                        calls=CALLS,
                        turns=TURNS,
                        speed=SPEED,
                        seed=_seed(index),
                        processors_factory=factory(service, _seed(index)),
                    )
                    for index, service in enumerate(SERVICES)
                )
            )
    finally:
        # The final export, with the held calls still in progress; then they end unexported.
        await asyncio.to_thread(pipecat_grafana.shutdown)
        for call in held:
            await call.end()
    return {service: [e.summary for e in found] for service, found in exporters.items()}


def _start_backend(layout: Layout, tmp: Path) -> Backend:
    if layout is VICTORIA_METRICS:
        return VictoriaMetrics()
    relabel = tmp / "grafana-cloud-relabel.yml"
    relabel.write_text(GRAFANA_CLOUD_RELABEL)
    # One queue: with several, vmagent may send a later block first, and Prometheus (like
    # Mimir by default) refuses the earlier one's samples as out of order.
    return PrometheusWithAgent(
        vmagent_args=[f"-remoteWrite.relabelConfig={relabel}", "-remoteWrite.queues=1"]
    )


@pytest.fixture(scope="module", params=[VICTORIA_METRICS, GRAFANA_CLOUD_LIKE], ids=lambda x: x.name)
def loaded(request: pytest.FixtureRequest) -> Iterator[Loaded]:
    layout: Layout = request.param
    with tempfile.TemporaryDirectory() as tmp, _start_backend(layout, Path(tmp)) as backend:
        with pytest.MonkeyPatch.context() as env, RejectFirst(backend.otlp_metrics_url) as flaky:
            for name in list(os.environ):
                if name.startswith(("OTEL_", "GRAFANA_CLOUD_", "PIPECAT_GRAFANA_")):
                    env.delenv(name)
            env.setenv(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, flaky.metrics_url)
            t_start = time.time()
            summaries = asyncio.run(_workload())
            t_end = time.time()
        assert flaky.rejected == {service: 1 for service in SERVICES}
        for service in SERVICES:
            # Everything is in once the last export is: the calls counter at its end value.
            # vmagent forwards asynchronously, hence the wait.
            backend.wait_for(
                f'{m.CALLS.prometheus_name}{{{layout.service_label}="{service}"}} == {CALLS + 1}'
            )
            backend.wait_for(
                f"sum({m.SESSION_DURATION.prometheus_name}_count"
                f'{{{layout.service_label}="{service}"}}) == {CALLS}'
            )
        yield Loaded(backend, layout, summaries, t_start, t_end, time.time())
        print(f"--- {layout.name} log ---\n{backend.log_tail(60)}")


# --------------------------------------------------------------------------------------------
# Helpers


def _labels(series: dict[str, Any]) -> set[str]:
    return set(series["metric"]) - {"__name__"}


def _numbers(series: dict[str, Any]) -> list[float]:
    points = series["values"] if "values" in series else [series["value"]]
    return [float(value) for _, value in points]


def _by(result: list[dict[str, Any]], *keys: str) -> dict[tuple[str, ...], float]:
    table = {tuple(s["metric"].get(k, "") for k in keys): _numbers(s)[-1] for s in result}
    assert len(table) == len(result), f"duplicate series for {keys}: {result}"
    return table


def _one(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return _numbers(result[0])[-1]


def _agrees(actual: float, truth: float) -> bool:
    """Equal up to float rounding."""
    return abs(actual - truth) <= REL * abs(truth) + 1e-12


def _pushes_only(expr: str) -> bool:
    """Whether ``expr`` reads the OTLP export's own health, which only a pushing bot has."""
    return any(spec.prometheus_name in expr for spec in m.PUSH_ONLY)


def _prometheus_queries(*, pushes: bool = True) -> list[dashboard.PanelQuery]:
    """The PromQL panel queries: every query but the Loki and Tempo panels'.

    No Loki or Tempo runs here; the calls panels' LogQL and TraceQL are checked for form by
    test_dashboard_calls.py. Skipped by data source type, and only those two.
    """
    queries = list(dashboard.panel_queries())
    skipped = {pq.panel.source for pq in queries} - {dashboard.PROMETHEUS}
    assert skipped <= {dashboard.LOKI, dashboard.TEMPO}, skipped
    return [
        pq
        for pq in queries
        if pq.panel.source == dashboard.PROMETHEUS and (pushes or not _pushes_only(pq.query.expr))
    ]


def _expected_labels(labels: tuple[str, ...], service: str) -> set[str]:
    return set(labels) - (set() if SERVICES[service] else {m.CALL_ID})


# --------------------------------------------------------------------------------------------
# The dashboard


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_panel_query_returns_data_of_its_shape(loaded: Loaded, service: str) -> None:
    values = loaded.values(service)
    problems = []
    checked = 0
    for pq in _prometheus_queries(pushes=loaded.layout.pushes):
        where = f"{pq.row} / {pq.panel.title} / {pq.ref_id}"
        result = loaded.run(pq.query, values)
        checked += 1
        if not result:
            problems.append(f"{where}: no data: {dashboard.substitute(pq.query.expr, values)}")
            continue
        expected = _expected_labels(pq.query.labels, service)
        for series in result:
            numbers = _numbers(series)
            if _labels(series) != expected:
                problems.append(f"{where}: labels {_labels(series)} != {expected}")
            if pq.query.instant and not all(math.isfinite(v) for v in numbers):
                problems.append(f"{where}: not a number: {series}")
            if not any(math.isfinite(v) for v in numbers):
                problems.append(f"{where}: no finite value: {series}")
    assert checked == sum(
        1
        for row in dashboard.ROWS
        for p in row.panels
        if p.source == dashboard.PROMETHEUS
        for q in p.queries
        if loaded.layout.pushes or not _pushes_only(q.expr)
    )
    assert not problems, "\n".join(problems)


def test_every_panel_query_works_for_all_services_and_either_service_label(
    loaded: Loaded,
) -> None:
    # All services; and the other service label with All, which matches the missing label.
    other = next(
        label for label in dashboard.SERVICE_LABELS if label != loaded.layout.service_label
    )
    for values in (
        loaded.values(dashboard.ALL),
        loaded.values(dashboard.ALL, service_label=other),
    ):
        empty = [
            f"{pq.panel.title} / {pq.ref_id}"
            for pq in _prometheus_queries(pushes=loaded.layout.pushes)
            if not loaded.run(pq.query, values)
        ]
        assert not empty, f"no data with {values}: {empty}"


def _panel_query(key: str, ref_id: str = "A") -> dashboard.Query:
    (found,) = [
        pq.query for pq in dashboard.panel_queries() if pq.panel.key == key and pq.ref_id == ref_id
    ]
    return found


@pytest.mark.parametrize("service", list(SERVICES))
def test_totals_agree_with_the_call_summaries(loaded: Loaded, service: str) -> None:
    summaries = loaded.summaries[service]
    assert len(summaries) == CALLS
    values = loaded.values(service)

    def value(key: str) -> float:
        return _one(loaded.run(_panel_query(key), values))

    cost = sum(s.total_cost_usd for s in summaries)
    assert cost > 0
    range_s = loaded.range_s
    checks = {
        # key: (actual, truth)
        "cost-today": (value("cost-today"), cost),
        "cost-per-call": (value("cost-per-call"), cost / CALLS),
        "projected-cost-per-day": (value("projected-cost-per-day"), cost * 86400 / range_s),
        "calls-per-hour": (value("calls-per-hour"), (CALLS + 1) * 3600 / range_s),
        "active-calls": (value("active-calls"), 1),
        "average-call-duration": (
            value("average-call-duration"),
            sum(s.duration_seconds for s in summaries) / CALLS,
        ),
        "call-duration": (value("call-duration"), sum(s.duration_seconds for s in summaries)),
        "stt-audio-minutes": (
            value("stt-audio-minutes"),
            sum(s.stt_audio_seconds for s in summaries) / 60,
        ),
        "tts-characters": (value("tts-characters"), sum(s.tts_characters for s in summaries)),
        "tts-audio-minutes": (
            value("tts-audio-minutes"),
            sum(s.tts_audio_seconds for s in summaries) / 60,
        ),
    }
    tokens = Counter()
    for s in summaries:
        tokens.update(s.tokens)
    llm = demo.DEFAULT_LLM_MODEL
    by_type = _by(loaded.run(_panel_query("tokens"), values), m.MODEL, m.TOKEN_TYPE)
    assert by_type == {(llm, token_type): count for token_type, count in tokens.items()}
    share = _by(loaded.run(_panel_query("cache-read-share"), values), m.MODEL)
    checks["cache-read-share"] = (share[(llm,)], tokens["cache_read"] / tokens["prompt"])

    costs: Counter[tuple[str, str]] = Counter()
    for s in summaries:
        for c in s.costs:
            costs[(c.service_type, c.model)] += c.usd
    by_service = _by(loaded.run(_panel_query("cost-by-service"), values), m.SERVICE_TYPE, m.MODEL)
    assert set(by_service) == set(costs)
    for key, usd in costs.items():
        checks[f"cost-by-service {key}"] = (by_service[key], usd)

    calls = _by(loaded.run(_panel_query("most-expensive-calls"), values), m.CALL_ID)
    if SERVICES[service]:
        assert set(calls) == {(s.call_id,) for s in summaries}
        for s in summaries:
            checks[f"call {s.call_id[:8]}"] = (calls[(s.call_id,)], s.total_cost_usd)
    else:
        checks["calls (no call_id)"] = (calls[("",)], cost)

    report = {key: f"{actual:.10g} vs {truth:.10g}" for key, (actual, truth) in checks.items()}
    print(f"{loaded.layout.name} {service}: {report}")
    wrong = {k: report[k] for k, (actual, truth) in checks.items() if not _agrees(actual, truth)}
    assert not wrong, wrong


def _sum(counts: list[dict[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return total


@pytest.mark.parametrize("service", list(SERVICES))
def test_conversation_totals_agree_with_the_call_summaries(loaded: Loaded, service: str) -> None:
    summaries = loaded.summaries[service]
    assert len(summaries) == CALLS
    values = loaded.values(service)

    def result(key: str) -> list[dict[str, Any]]:
        return loaded.run(_panel_query(key), values)

    def total(spec: m.InstrumentSpec, suffix: str = "") -> float:
        query = dashboard.Query(dashboard.range_total(spec, suffix=suffix), instant=True)
        return _one(loaded.run(query, values))

    turns = sum(s.turns for s in summaries)
    interruptions = sum(s.interruptions for s in summaries)
    latency_count = sum(s.turn_latency.count for s in summaries)
    latency_sum = sum(s.turn_latency.avg_ms * s.turn_latency.count for s in summaries)
    errors = _sum([s.errors for s in summaries])
    function_calls = _sum([s.function_calls for s in summaries])
    outcomes = Counter(s.attributes["outcome"] for s in summaries)
    # The workload has every incident, so no panel passes by showing zero.
    assert interruptions and errors and function_calls and latency_count

    checks = {
        "turns-per-call": (_one(result("turns-per-call")), turns / CALLS),
        "interruptions-per-call": (_one(result("interruptions-per-call")), interruptions / CALLS),
        # Every barge-in of these calls interrupts an answer.
        "interrupted-turns": (_one(result("interrupted-turns")), interruptions / turns),
        "resolution-rate": (_one(result("resolution-rate")), outcomes["resolved"] / CALLS),
        "turn latency count": (total(m.TURN_LATENCY, "_count"), latency_count),
        "tool-call latency count": (
            total(m.FUNCTION_CALL_LATENCY, "_count"),
            sum(function_calls.values()),
        ),
    }
    report = {key: f"{actual:.10g} vs {truth:.10g}" for key, (actual, truth) in checks.items()}
    print(f"{loaded.layout.name} {service} conversation: {report}")
    wrong = {k: report[k] for k, (actual, truth) in checks.items() if not _agrees(actual, truth)}
    assert not wrong, wrong

    by_outcome = _by(result("calls-by-outcome"), "outcome")
    assert by_outcome == {(outcome,): count for outcome, count in outcomes.items()}
    by_type = _by(result("errors"), m.SERVICE_TYPE, m.ERROR_TYPE)
    assert by_type == {("tts", error_type): n for error_type, n in errors.items()}
    by_status = _by(result("tool-calls"), m.FUNCTION, m.STATUS)
    assert by_status == {(function, "ok"): n for function, n in function_calls.items()}
    # Where turn latency goes: the parts add up to the average turn latency (to within the
    # microseconds between the breakdown's clock readings and the latency's).
    parts = _by(result("turn-latency-breakdown"), m.CONTRIBUTION)
    assert set(parts) <= {(key,) for key in (*m.CONTRIBUTIONS, m.OTHER)}
    assert sum(parts.values()) == pytest.approx(latency_sum / latency_count, rel=1e-3)


@pytest.mark.parametrize("service", list(SERVICES))
def test_health_agrees_with_the_workload(loaded: Loaded, service: str) -> None:
    summaries = loaded.summaries[service]
    values = loaded.values(service)

    def total(spec: m.InstrumentSpec, by: tuple[str, ...] = (), suffix: str = "") -> dict:
        query = dashboard.Query(dashboard.range_total(spec, by, suffix), instant=True)
        return _by(loaded.run(query, values), *by)

    # Every call greeted its caller: one greeting latency each (the held call has no caller).
    assert all(s.greeting_latency_ms is not None for s in summaries)
    greetings = total(m.GREETING_LATENCY, suffix="_count")
    assert greetings == {(): len(summaries)}
    greeting_ms = total(m.GREETING_LATENCY, suffix="_sum")[()]
    assert _agrees(greeting_ms, sum(s.greeting_latency_ms for s in summaries))
    # The endpoint rejected one export of the service: counted, and arrived later.
    exports = total(m.EXPORTS, (m.OUTCOME, m.REASON))
    assert exports[("rejected", "401")] == 1
    assert exports[("ok", "none")] > 0
    assert set(exports) == {("rejected", "401"), ("ok", "none")}
    assert _one(loaded.run(_panel_query("calls-dropped"), values)) == 0
    # Start-up: the slowest processor of each phase, a plausible time.
    startup = _by(loaded.run(_panel_query("startup"), values), m.PHASE, m.PROCESSOR)
    assert {phase for phase, _ in startup} == {"processor", "client_connected"}
    assert ("client_connected", "OfflineInputTransport") in startup
    assert all(0 < ms < 60_000 for ms in startup.values()), startup
    lag = total(m.EVENT_LOOP_LAG, suffix="_count")[()]
    assert lag > 10  # sampled every 100 ms all workload long


def test_per_call_view_follows_the_chosen_call(loaded: Loaded) -> None:
    per_call = [
        pq for pq in _prometheus_queries(pushes=loaded.layout.pushes) if pq.row == "Per call"
    ]
    assert per_call
    for summary in loaded.summaries[SERVICE_PER_CALL]:
        values = loaded.values(SERVICE_PER_CALL, call_id=summary.call_id)
        results = {(pq.panel.key, pq.ref_id): loaded.run(pq.query, values) for pq in per_call}
        assert not [key for key, result in results.items() if not result]
        checks = {
            "call-cost": (_one(results[("call-cost", "A")]), summary.total_cost_usd),
            "call-duration": (_one(results[("call-duration", "A")]), summary.duration_seconds),
            "call-tts-characters": (
                _one(results[("call-tts-characters", "A")]),
                summary.tts_characters,
            ),
            "call-stt-audio": (_one(results[("call-stt-audio", "A")]), summary.stt_audio_seconds),
        }
        wrong = {k: v for k, v in checks.items() if not _agrees(*v)}
        assert not wrong, (summary.call_id, wrong)
        tokens = _by(results[("call-tokens", "A")], m.TOKEN_TYPE)
        assert tokens == {(t,): n for t, n in summary.tokens.items()}
        # The conversation panels follow the chosen call too.
        conversation = {
            "turns-per-call": summary.turns,
            "interruptions-per-call": summary.interruptions,
        }
        for key, truth in conversation.items():
            assert _one(loaded.run(_panel_query(key), values)) == truth, (summary.call_id, key)
        errors = _by(loaded.run(_panel_query("errors"), values), m.ERROR_TYPE)
        assert errors == {(t,): n for t, n in summary.errors.items()}
        tool_calls = _by(loaded.run(_panel_query("tool-calls"), values), m.FUNCTION)
        assert tool_calls == {(f,): n for f, n in summary.function_calls.items()}
        # The call's latency p95s: one per processor that reported each metric.
        processors = {stats.processor for stats in summary.latency}
        for result in (v for (key, _), v in results.items() if key == "call-latency"):
            assert {s["metric"][m.PROCESSOR] for s in result} <= processors


def test_variables_list_services_models_and_calls(loaded: Loaded) -> None:
    label = loaded.layout.service_label

    def values_of(variable: dashboard.Variable, service: str = dashboard.ALL) -> set[str]:
        expr = dashboard.substitute(variable.promql, loaded.values(service))
        name = dashboard.substitute(variable.label_name, {"service_label": label})
        result = loaded.backend.query(expr, time=loaded.t_eval)
        # Grafana lists label values; a series without the label lists nothing.
        return {s["metric"][name] for s in result if name in s["metric"]}

    service, model, call_id = dashboard.VARIABLES
    assert values_of(service) == set(SERVICES)
    assert values_of(model) == set(MODELS.values())
    assert values_of(call_id, service=SERVICE_PER_CALL) == {
        s.call_id for s in loaded.summaries[SERVICE_PER_CALL]
    }
    assert values_of(call_id, service=SERVICE_FLEET) == set()  # "All" is all there is


# --------------------------------------------------------------------------------------------
# The alert rules


def _shipped_rules() -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(alerts.SHIPPED_RULES.read_text())["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def _when(loaded: Loaded, rule: alerts.AlertRule) -> float:
    """When the rule's signal has data: now, or once the metrics have been missing."""
    if rule.name == "VoiceBotMetricsMissing":
        return loaded.t_end + alerts.DEFAULT_SILENCE_MINUTES * 60 + 15
    return loaded.t_eval


def test_alert_signals_return_data_of_their_shape(loaded: Loaded) -> None:
    shipped = _shipped_rules()
    rules = alerts.alert_rules()
    assert set(shipped) == {rule.name for rule in rules}
    for rule in rules:
        assert shipped[rule.name]["expr"] == rule.expr
        if not loaded.layout.pushes and _pushes_only(rule.expr):
            continue  # about the OTLP export, which a pull-only bot does not do
        result = loaded.backend.query(rule.signal, time=_when(loaded, rule))
        assert result, f"{rule.name}: no data: {rule.signal}"
        # The grouping labels, less the service and instance labels this backend lacks.
        absent = set(alerts.SERVICE_LABELS + alerts.INSTANCE_LABELS) - loaded.layout.present
        expected = set(rule.group_by) - absent
        for series in result:
            assert _labels(series) == expected, (rule.name, series)
            assert all(math.isfinite(v) for v in _numbers(series)), (rule.name, series)


def test_alerts_fire_on_a_hair_trigger_and_stay_quiet_at_their_defaults(loaded: Loaded) -> None:
    label = loaded.layout.service_label
    shipped = _shipped_rules()
    hair_trigger = {
        rule.name: rule
        for rule in alerts.alert_rules(
            ttfb_p95_ms=1e-6,
            ttfa_p95_ms=1e-6,
            budget_usd_per_hour=1e-6,
            turn_latency_p95_ms=1e-6,
            errors_per_minute=1e-6,
            rate_limits_per_minute=1e-6,
            rate_limit_burst_per_minute=1e-6,
            greeting_p95_ms=1e-6,
            event_loop_lag_p99_ms=1e-6,
            export_failures_per_minute=1e-6,
        )
    }
    for rule in alerts.alert_rules():
        if not loaded.layout.pushes and _pushes_only(rule.expr):
            continue  # about the OTLP export, which a pull-only bot does not do
        when = _when(loaded, rule)
        fired = loaded.backend.query(hair_trigger[rule.name].expr, time=when)
        assert {s["metric"].get(label) for s in fired} == set(SERVICES), (rule.name, fired)
        # The workload: fast, cheap, one rate-limited request per call (far below the error
        # and rate-limit levels), a loop that kept up, one export rejected per service (below
        # the export level), and its metrics arrived.
        at_default = loaded.backend.query(shipped[rule.name]["expr"], time=loaded.t_eval)
        if rule.name == "VoiceBotEventLoopLagHigh":
            # How late the loop ran is this machine's, not the workload's (a loaded test
            # machine can lag 70 ms): the rule must agree with the lag that was measured.
            lag = loaded.backend.query(rule.signal, time=loaded.t_eval)
            lagged = {s["metric"].get(label) for s in lag if float(s["value"][1]) > rule.threshold}
            assert {s["metric"].get(label) for s in at_default} == lagged, rule.name
            continue
        assert at_default == [], rule.name


def test_cost_alert_signal_is_the_last_hours_cost(loaded: Loaded) -> None:
    (rule,) = [r for r in alerts.alert_rules() if r.name == "VoiceBotCostOverBudget"]
    label = loaded.layout.service_label
    result = _by(loaded.backend.query(rule.signal, time=loaded.t_eval), label)
    for service, summaries in loaded.summaries.items():
        truth = sum(s.total_cost_usd for s in summaries)
        assert _agrees(result[(service,)], truth), service
