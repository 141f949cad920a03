"""One export runtime per process, flat and prompt in every way a bot runs the exporter.

Each test runs real Pipecat calls whose first processor reports LLM and TTS usage, through
the public API, in one of the ways a bot wires the exporter: summaries only, the
application's own ``MeterProvider``, a logs endpoint that hangs beside a healthy metrics
endpoint, an endpoint that refuses exponential histograms, an endpoint that accepts and
never answers. The runtime's fork reset is tested by forking for real while another
thread holds each lock the runtime owns.
"""

import asyncio
import os
import threading

import pytest
from pipecat.metrics.metrics import LLMUsageMetricsData, TTSUsageMetricsData

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, export, runtime
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.backends import free_port
from tests.helpers import MemoryMetrics, Reporter, Trigger, metric, run_pipeline

FLUSH_TIMEOUT_S = 1.0
USAGE = [
    metric(LLMUsageMetricsData, processor="OpenAILLMService#0", model="gpt-4o"),
    metric(TTSUsageMetricsData, processor="CartesiaTTSService#0", value=42),
]


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


async def call(exporter: GrafanaMetricsExporter, call_id: str) -> None:
    await run_pipeline([Reporter([USAGE]), exporter], [Trigger("go")], conversation_id=call_id)


def fleet_series(pipeline) -> list[tuple]:
    """Every attribute set the pipeline's process-wide counters hold."""
    return [key for _, series in pipeline.fleet.totals.snapshot() for key, _ in series]


async def test_summaries_only_a_call_leaves_nothing_behind_but_its_summary():
    summaries = []
    for index in range(30):
        exporter = grafana()
        await call(exporter, f"room-{index}")
        summaries.append(exporter.summary)
        if index == 4:
            (pipeline,) = export.pipelines()
            after_five = fleet_series(pipeline)
    (pipeline,) = export.pipelines()
    assert not pipeline.pushed and not pipeline.pulled
    assert all(sum(s.tokens.values()) == 120 and s.tts_characters == 42 for s in summaries)
    held = fleet_series(pipeline)
    assert sorted(held) == sorted(after_five)  # the same series after 5 calls and after 30
    assert not [key for key in held if m.CALL_ID in dict(key)]
    assert pipeline.calls.pending() == []


async def test_the_applications_provider_sees_a_bounded_number_of_points_exact_totals():
    metrics = MemoryMetrics()
    try:
        points_after = {}
        for index in range(40):
            await call(grafana(meter_provider=metrics.provider), f"room-{index}")
            if index + 1 in (10, 40):
                points_after[index + 1] = len(metrics.points(m.LLM_TOKENS.name))
        assert points_after[10] == points_after[40]  # not one more series per call
        assert metrics.value(m.LLM_TOKENS.name) == 40 * 120
        assert metrics.value(m.TTS_CHARACTERS.name) == 40 * 42
        assert all(m.CALL_ID not in p.attributes for p in metrics.points(m.LLM_TOKENS.name))
    finally:
        metrics.provider.shutdown()


async def test_call_id_with_the_applications_provider_says_once_that_its_series_never_end(
    log_lines,
):
    metrics = MemoryMetrics()
    try:
        for index in range(2):
            await call(grafana(meter_provider=metrics.provider, call_id_label=True), f"r-{index}")
        said = [line for line in log_lines if "OpenTelemetry has no way to end a series" in line]
        assert len(said) == 1, said
        assert "20,000 points a collection" in said[0]
        assert {p.attributes[m.CALL_ID] for p in metrics.points(m.LLM_TOKENS.name)} == {
            "r-0",
            "r-1",
        }
    finally:
        metrics.provider.shutdown()


async def test_a_hanging_logs_endpoint_leaves_the_metrics_on_time(
    export_to, monkeypatch, log_lines
):
    receiver = export_to
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "3600000")  # only a call's end exports
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, str(FLUSH_TIMEOUT_S))
    receiver.hang("logs")
    exporter = grafana()
    await call(exporter, "room-1")
    # The call's end waited for its final metrics: they arrived within its flush timeout.
    assert receiver.total(m.TTS_CHARACTERS.name, call_id="room-1") == 42
    late = [line for line in log_lines if "were not exported within" in line]
    assert len(late) == 1 and "summary log record of call room-1" in late[0], late
    assert "final metrics" not in late[0]
    # A second call does not wait again for the logs endpoint that just hung.
    await call(grafana(), "room-2")
    assert receiver.total(m.TTS_CHARACTERS.name, call_id="room-2") == 42
    assert len([line for line in log_lines if "were not exported within" in line]) == 1
    receiver.unhang()


async def test_a_refused_native_export_loses_no_waiter(export_to, monkeypatch, log_lines):
    receiver = export_to
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "3600000")
    monkeypatch.setenv(cfg.HISTOGRAMS, "native")
    monkeypatch.setenv(cfg.CALL_ID_LABEL, "false")  # the call waits on the fleet's series
    monkeypatch.setenv(cfg.LOGS, "false")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, "30")  # a lost waiter would show as this wait
    receiver.refuse_exponential("native histograms are not supported")
    exporter = grafana()
    await asyncio.wait_for(call(exporter, "room-1"), timeout=20)
    assert receiver.total(m.TTS_CHARACTERS.name) == 42
    assert not [line for line in log_lines if "were not exported within" in line]
    assert [line for line in log_lines if "refused native (exponential) histograms" in line]


async def test_a_dead_endpoint_costs_one_wait_per_outage_not_one_per_call(
    export_to, monkeypatch, log_lines
):
    receiver = export_to
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "3600000")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, str(FLUSH_TIMEOUT_S))
    receiver.hang()  # accepts every request, answers none
    summaries = []
    for index in range(3):
        exporter = grafana()
        await call(exporter, f"room-{index}")
        summaries.append(exporter.summary)
    late = [line for line in log_lines if "were not exported within" in line]
    assert len(late) == 1 and "room-0" in late[0], late  # only the first call waited
    assert [s.call_id for s in summaries] == ["room-0", "room-1", "room-2"]
    # When the endpoint answers again, every call's values go out (totals are cumulative).
    receiver.unhang()
    (pipeline,) = export.pipelines()
    pipeline.export()
    assert receiver.total(m.TTS_CHARACTERS.name) == 3 * 42
    assert not pipeline.failing


# --- the runtime's fork reset ---------------------------------------------------------

FORK_TIMEOUT_S = 30


def _use_every_part_in_a_child() -> None:
    """What a forked worker does first: warn, price, sample, export, serve, trace."""
    from pipecat_grafana import notices
    from pipecat_grafana.pricing import unpriced

    notices.warn_once("child:hello", "a child's first warning")
    unpriced.add("llm", "child-model")
    asyncio.run(call(grafana(prometheus_port=free_port(), traces=True), "child-call"))
    pipecat_grafana.shutdown(timeout_s=2)


def test_a_fork_while_other_threads_hold_every_runtime_lock_leaves_the_child_working(
    export_to, monkeypatch
):
    """Every lock the runtime owns is reset in the child, whoever held it at the fork."""
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(free_port()))
    asyncio.run(call(grafana(traces=True), "parent-call"))  # every part is in use
    parts = runtime.RUNTIME.parts
    assert len(parts) >= 7, parts
    held, release = threading.Barrier(len(parts) + 1), threading.Event()

    def hold(part) -> None:
        with part.lock:
            held.wait()
            release.wait()

    holders = [threading.Thread(target=hold, args=(part,), daemon=True) for part in parts]
    for holder in holders:
        holder.start()
    held.wait(timeout=10)  # each part's lock is held by a thread the child will not have
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _use_every_part_in_a_child()
            code = 0
        finally:
            os._exit(code)
    release.set()
    for holder in holders:
        holder.join(5)
    waited = 0.0
    while waited < FORK_TIMEOUT_S:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.1)
        waited += 0.1
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the child deadlocked on a lock held at the fork ({FORK_TIMEOUT_S}s)")
    assert os.waitstatus_to_exitcode(status) == 0
    export_to.wait_for(
        lambda r: r.total(m.TTS_CHARACTERS.name, call_id="child-call") == 42, timeout=10
    )
