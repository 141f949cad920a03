"""One exporter, calls one after another (which the README allows): each call starts afresh.

Pipecat's latency observer measures the greeting once per observer and carries its turn
state from one frame to the next: an exporter reused for a second call must not carry the
first call's into it. The same two offline calls through one exporter and through two fresh
ones must give the same per-call figures.
"""

import asyncio

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana.offline import run_offline_call
from pipecat_grafana.summary import CallSummary

SPEED = 0.05
TURNS = 2
SEEDS = (3, 4)
CALL_TIMEOUT_S = 60


async def call(exporter: GrafanaMetricsExporter, seed: int) -> CallSummary:
    await asyncio.wait_for(
        run_offline_call(
            turns=TURNS, processors=[exporter], speed=SPEED, seed=seed, incidents=False
        ),
        CALL_TIMEOUT_S,
    )
    return exporter.summary


def figures(summary: CallSummary) -> dict:
    """What the latency observer decides per call: what it measured, and how many times."""
    return {
        "turns": summary.turns,
        "greeting measured": summary.greeting_latency_ms is not None,
        "turn latencies": summary.turn_latency.count if summary.turn_latency else 0,
    }


async def test_a_reused_exporter_starts_each_call_with_fresh_latency_state():
    fresh = [await call(GrafanaMetricsExporter(), seed) for seed in SEEDS]
    reused_exporter = GrafanaMetricsExporter()
    reused = [await call(reused_exporter, seed) for seed in SEEDS]

    assert [figures(s) for s in reused] == [figures(s) for s in fresh]
    assert all(figures(s)["greeting measured"] for s in fresh)
    assert reused[0].call_id != reused[1].call_id
