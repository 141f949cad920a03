"""End-to-end: a fleet of one-call processes behind the shipped gateway (deploy/fleet/).

VictoriaMetrics is the remote store, and ``deploy/fleet/run-vmagent.sh`` runs the installed
(Debian) vmagent in front of it with the shipped stream-aggregation config, every interval
ten times shorter (``tests.fleet.scaled_config``), as the bots export ten times more often.
Fresh ``pipecat-grafana demo --calls 1`` processes push to it, two, then four more. The store
must then keep the same counter and histogram series for six processes as for two, none
with a per-process or per-call label; its totals must be the sums of the processes' call
summaries; and the dashboard's fleet queries and the alert signals must return data.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipecat_grafana import instruments as m
from pipecat_grafana.commands.demo import SERVICE_NAME
from pipecat_grafana.grafana import alerts, dashboard
from pipecat_grafana.summary import CallSummary
from tests.backends import BackendError, FleetGateway, VictoriaMetrics
from tests.fleet import (
    PER_PROCESS_LABELS,
    StoreFigures,
    bot_environment,
    run_processes,
    scaled_config,
)

pytestmark = pytest.mark.e2e

SCALE = 10
"""Every interval ten times shorter: the bots' export (1 s) and the gateway's windows."""
FIRST, MORE = 2, 4
"""Processes in the first wave, and in the second: 2 against 6 in all."""
SEED = 7
DEMO_ARGS = ("--turns", "2", "--speed", "0.2")
SETTLE_S = 12 + 1
"""One scaled gauge window (12 s): the gauges' sums have been written since the last call.

Shorter than the scaled staleness (30 s): a busy fleet never lets the gateway forget a sum
(after a quiet spell longer than that, its totals start again from zero; docs/fleets.md)."""
REL = 1e-9  # float summation order
COUNTERS = (m.Kind.COUNTER, m.Kind.HISTOGRAM)


@dataclass
class Fleet:
    """The store after each wave, and what the processes measured."""

    vm: VictoriaMetrics
    t_start: float
    first: StoreFigures
    after: StoreFigures
    summaries: list[CallSummary]
    t_eval: float


TIMING_DEPENDENT = (m.TURN_CONTRIBUTION,)
"""Which parts a turn's latency went to depends on timing, not on the script: a process may
report a part (``output_transport``) another did not, a label value rather than a process."""


def _counter_series(figures: StoreFigures) -> set[frozenset[tuple[str, str]]]:
    """The stored series of counters and classic histograms (but ``TIMING_DEPENDENT``)."""
    names = set()
    for spec in m.ALL:
        if spec in TIMING_DEPENDENT:
            continue
        if spec.kind is m.Kind.HISTOGRAM:
            names |= {spec.prometheus_name + s for s in ("_bucket", "_sum", "_count")}
        elif spec.kind is m.Kind.COUNTER:
            names.add(spec.prometheus_name)
    return {s for s in figures.series if dict(s)["__name__"] in names}


def _wait_for_calls(vm: VictoriaMetrics, calls: int) -> None:
    for spec in (m.CALLS, m.CALLS_ENDED):
        vm.wait_for(f"sum({spec.prometheus_name}) == {calls}", timeout=60)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    config = tmp / "stream-aggregation.yml"
    config.write_text(scaled_config(SCALE))
    with (
        VictoriaMetrics() as vm,
        FleetGateway(
            vm.remote_write_url,
            aggregation_config=config,
            extra_args=["-remoteWrite.flushInterval=100ms"],
        ) as gateway,
    ):
        env = bot_environment(gateway.otlp_endpoint, OTEL_METRIC_EXPORT_INTERVAL="1000")
        t_start = time.time()
        try:
            summaries = run_processes(
                env, FIRST, tmp / "first", seed=SEED, at_once=FIRST, demo_args=DEMO_ARGS
            )
            _wait_for_calls(vm, FIRST)  # the counters' window (6 s) has been written
            first = StoreFigures.read(vm, t_start)
            summaries += run_processes(
                env, MORE, tmp / "more", seed=SEED, at_once=MORE, demo_args=DEMO_ARGS
            )
            _wait_for_calls(vm, FIRST + MORE)
            time.sleep(SETTLE_S)
            after = StoreFigures.read(vm, t_start)
        except (AssertionError, BackendError, RuntimeError):
            print(f"--- gateway log ---\n{gateway.log_tail(60)}")
            raise
        yield Fleet(vm, t_start, first, after, summaries, time.time())
        print(f"--- gateway log ---\n{gateway.log_tail(60)}")


def _one(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _by(vm: VictoriaMetrics, expr: str, label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in vm.query(expr)}


def _agrees(actual: float, truth: float) -> bool:
    return abs(actual - truth) <= REL * abs(truth) + 1e-12


def test_stored_series_do_not_grow_with_the_processes(fleet: Fleet) -> None:
    first, after = _counter_series(fleet.first), _counter_series(fleet.after)
    assert first, "no counter or histogram series stored"
    print(
        f"stored series: {len(fleet.first.series)} for {FIRST} processes, "
        f"{len(fleet.after.series)} for {FIRST + MORE}"
    )
    assert after == first, {"new": after - first, "gone": first - after}
    # Every instrument a call reports is there, as one series set for the whole fleet.
    names = {dict(s)["__name__"] for s in after}
    assert f"{m.TTFB.prometheus_name}_bucket" in names
    assert m.LLM_TOKENS.prometheus_name in names


def test_no_stored_series_names_a_process_or_a_call(fleet: Fleet) -> None:
    assert fleet.after.series
    assert not fleet.after.labels() & PER_PROCESS_LABELS
    # The one label the gateway adds names the gateway, not a bot.
    assert {dict(s).get("gateway") for s in fleet.after.series} != {None}
    assert len({dict(s).get("gateway") for s in fleet.after.series}) == 1


def test_stored_totals_are_the_sums_of_the_call_summaries(fleet: Fleet) -> None:
    summaries = fleet.summaries
    assert len(summaries) == FIRST + MORE
    vm = fleet.vm
    tokens: Counter[str] = Counter()
    for s in summaries:
        tokens.update(s.tokens)
    stored_tokens = _by(vm, f"sum by (token_type) ({m.LLM_TOKENS.prometheus_name})", m.TOKEN_TYPE)
    assert stored_tokens == {t: float(n) for t, n in tokens.items()}
    checks = {
        "calls": (_one(vm.query(f"sum({m.CALLS.prometheus_name})")), len(summaries)),
        "calls ended": (_one(vm.query(f"sum({m.CALLS_ENDED.prometheus_name})")), len(summaries)),
        "cost": (
            _one(vm.query(f"sum({m.COST.prometheus_name})")),
            sum(s.total_cost_usd for s in summaries),
        ),
        "tts characters": (
            _one(vm.query(f"sum({m.TTS_CHARACTERS.prometheus_name})")),
            sum(s.tts_characters for s in summaries),
        ),
        "stt audio seconds": (
            _one(vm.query(f"sum({m.STT_AUDIO.prometheus_name})")),
            sum(s.stt_audio_seconds for s in summaries),
        ),
        "turns": (
            _one(vm.query(f"sum({m.TURNS.prometheus_name})")),
            sum(s.turns for s in summaries),
        ),
    }
    report = {k: f"{a:.10g} vs {t:.10g}" for k, (a, t) in checks.items()}
    print(report)
    assert all(truth > 0 for _, truth in checks.values()), report
    assert not {k: report[k] for k, (a, t) in checks.items() if not _agrees(a, t)}


def test_stored_ttfb_histogram_counts_every_ttfb_of_the_summaries(fleet: Fleet) -> None:
    truth: Counter[str] = Counter()
    for s in fleet.summaries:
        for stats in s.latency:
            if stats.metric == "ttfb":
                truth[stats.processor] += stats.count
    assert truth
    name = m.TTFB.prometheus_name
    counts = _by(fleet.vm, f"sum by (processor) ({name}_count)", m.PROCESSOR)
    assert counts == {p: float(n) for p, n in truth.items()}
    # The +Inf bucket counts them all too, and no bucket is above it.
    inf = _by(fleet.vm, f'sum by (processor) ({name}_bucket{{le="+Inf"}})', m.PROCESSOR)
    assert inf == counts


def test_calls_active_is_the_fleets_sum(fleet: Fleet) -> None:
    # Every process has ended its call: the fleet has none in progress, on one series.
    assert _one(fleet.vm.query(f"sum({m.CALLS_ACTIVE.prometheus_name})")) == 0


def _values(fleet: Fleet) -> dict[str, str]:
    range_s = math.ceil(fleet.t_eval - fleet.t_start) + 2
    return {
        "service_label": "service_name",
        "native_histograms": dashboard.NATIVE_SKIP,  # VictoriaMetrics has none
        "service": SERVICE_NAME,
        "model": dashboard.ALL,
        "call_id": dashboard.ALL,
        "__rate_interval": "1m",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
    }


PER_CALL_ROW = "Per call"


def test_dashboard_fleet_queries_return_data(fleet: Fleet) -> None:
    values = _values(fleet)
    empty, failed, checked = [], [], 0
    for pq in dashboard.panel_queries():
        if pq.panel.source != dashboard.PROMETHEUS or pq.row == PER_CALL_ROW:
            continue  # Loki and Tempo do not run here; per-call rows read Loki behind a gateway
        expr = dashboard.substitute(pq.query.expr, values)
        where = f"{pq.row} / {pq.panel.title} / {pq.ref_id}"
        try:
            if pq.query.instant:
                result = fleet.vm.query(expr, time=fleet.t_eval)
            else:
                result = fleet.vm.query_range(expr, fleet.t_start, fleet.t_eval, step=1)
        except BackendError as err:
            failed.append(f"{where}: {err}")
            continue
        checked += 1
        if not result:
            empty.append(f"{where}: {expr}")
    assert checked
    assert not failed, "\n".join(failed)
    assert not empty, "\n".join(empty)


NOT_IN_THIS_WORKLOAD = {"VoiceBotExportsFailing"}
"""No export fails here (test_e2e_grafana.py makes one fail): its signal has nothing to show."""


def test_alert_signals_return_data(fleet: Fleet) -> None:
    for rule in alerts.alert_rules():
        if rule.name in NOT_IN_THIS_WORKLOAD:
            continue
        when = fleet.t_eval
        if rule.name == "VoiceBotMetricsMissing":
            when += alerts.DEFAULT_SILENCE_MINUTES * 60 + 15
        result = fleet.vm.query(rule.signal, time=when)
        assert result, f"{rule.name}: no data: {rule.signal}"
        for series in result:
            assert not set(series["metric"]) & PER_PROCESS_LABELS, (rule.name, series)


def test_aggregation_config_is_the_shipped_one_scaled(tmp_path: Path) -> None:
    # The only difference from the shipped file is the durations.
    from tests.fleet import AGGREGATION_CONFIG

    shipped = AGGREGATION_CONFIG.read_text().splitlines()
    scaled = scaled_config(SCALE).splitlines()
    assert len(shipped) == len(scaled)
    differ = [(a, b) for a, b in zip(shipped, scaled, strict=True) if a != b]
    assert differ and all("interval:" in a for a, _ in differ)
