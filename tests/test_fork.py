"""A server that forks its workers after import: each child exports its own calls.

gunicorn's pre-fork model and ``multiprocessing``'s ``fork`` start method copy a
process whose export threads do not survive the fork. These tests fork for real,
run a real Pipecat call in the child, end the child with ``os._exit`` (as
multiprocessing does, skipping atexit) and read what a real receiver in the
parent got.
"""

import asyncio
import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable

import pytest
from pipecat.metrics.metrics import TTSUsageMetricsData

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.helpers import Reporter, Trigger, metric, run_pipeline

pytestmark = [
    pytest.mark.slow,  # forks real processes
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that has threads is the very situation under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

INSTANCE_ID = "resource.service.instance.id"
FLUSH_TIMEOUT_S = 3


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


def call(exporter: GrafanaMetricsExporter, call_id: str, characters: int) -> float:
    """Run one real call that reports ``characters`` TTS characters; return how long it took."""
    reporter = Reporter(
        [[metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=characters)]]
    )
    started = time.monotonic()
    asyncio.run(run_pipeline([reporter, exporter], [Trigger("go")], conversation_id=call_id))
    return time.monotonic() - started


def in_child(work: Callable[[], dict], *, timeout_s: float = 60) -> dict:
    """Run ``work`` in a forked child that ends with ``os._exit``; return what it sent back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            try:
                payload = {"result": work()}
                status = 0
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with os.fdopen(write_end, "w") as pipe:
                json.dump(payload, pipe)
        finally:
            os._exit(status)

    os.close(write_end)
    received = b""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([read_end], [], [], max(remaining, 0))
            if not readable:
                raise AssertionError(f"the child did not finish within {timeout_s}s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            received += chunk
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    payload = json.loads(received or b"{}")
    if "result" not in payload:
        raise AssertionError(f"the child failed:\n{payload.get('error', 'no answer')}")
    return payload["result"]


def instance_ids(receiver) -> set[str]:
    return {p.resource["service.instance.id"] for p in receiver.points()}


def resource_of(receiver, instance_id: str) -> dict:
    (resource,) = {
        tuple(sorted(p.resource.items()))
        for p in receiver.points()
        if p.resource["service.instance.id"] == instance_id
    }
    return dict(resource)


def requests_from(receiver, instance_id: str) -> int:
    return sum(
        any(
            a.key == "service.instance.id" and a.value.string_value == instance_id
            for rm in r.message.resource_metrics
            for a in rm.resource.attributes
        )
        for r in receiver.requests
    )


def total(receiver, name: str, instance_id: str, **attributes) -> float:
    """The latest value of every series of ``name`` one process sent, summed."""
    series = receiver.latest(name, with_resource=True)
    assert series, f"{name} never arrived"
    return sum(
        p.value
        for key, p in series.items()
        if (INSTANCE_ID, instance_id) in key
        and all(p.attributes.get(k) == v for k, v in attributes.items())
    )


@pytest.fixture
def fork_export_to(export_to, monkeypatch):
    """Export only when a call ends (the interval is a minute), waiting 3 s at most."""
    monkeypatch.setenv(cfg.OTEL_METRIC_EXPORT_INTERVAL, "60000")
    monkeypatch.setenv(cfg.FLUSH_TIMEOUT, str(FLUSH_TIMEOUT_S))
    return export_to


def test_a_forked_child_exports_its_own_calls_under_its_own_instance(fork_export_to, log_lines):
    receiver = fork_export_to
    call(grafana(), "parent-1", 11)
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="parent-1") == 11, 5)
    (parent,) = instance_ids(receiver)
    parent_requests = requests_from(receiver, parent)
    made_before_fork = grafana()  # a processor the parent built, first used in the child

    def child() -> dict:
        durations = [call(made_before_fork, "child-1", 23), call(grafana(), "child-2", 31)]
        # No shutdown, no atexit: os._exit follows at once, as multiprocessing does.
        return {"durations": durations, "log": log_lines}

    result = in_child(child)

    log = "\n".join(result["log"])
    assert "keeps trying in the background" not in log, result["durations"]
    assert log.count("export restarted after fork") == 1
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="child-2") == 31, 5)
    (child_id,) = instance_ids(receiver) - {parent}
    assert total(receiver, m.TTS_CHARACTERS.name, child_id, call_id="child-1") == 23
    assert total(receiver, m.TTS_CHARACTERS.name, child_id, call_id="child-2") == 31
    # Nothing of the parent's: not its call, not its fleet totals, not under its ID.
    assert not [
        p
        for p in receiver.points()
        if p.attributes.get(m.CALL_ID) == "parent-1"
        and p.resource["service.instance.id"] == child_id
    ]
    assert total(receiver, m.CALLS.name, child_id) == 2
    assert total(receiver, m.CALLS_ACTIVE.name, child_id) == 0
    assert requests_from(receiver, parent) == parent_requests
    # A new service.instance.id, every other attribute the parent's.
    assert {**resource_of(receiver, child_id), "service.instance.id": parent} == resource_of(
        receiver, parent
    )


def test_the_parent_goes_on_unaffected_after_its_child_exits(fork_export_to):
    receiver = fork_export_to
    made_before_fork = grafana()
    call(grafana(), "parent-1", 11)
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name) == 11, 5)
    (parent,) = instance_ids(receiver)

    in_child(lambda: {"duration": call(grafana(), "child-1", 23)})
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="child-1") == 23, 5)

    elapsed = call(made_before_fork, "parent-2", 7)
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="parent-2") == 7, 5)
    assert elapsed < FLUSH_TIMEOUT_S
    assert total(receiver, m.TTS_CHARACTERS.name, parent, call_id="parent-1") == 11
    assert total(receiver, m.TTS_CHARACTERS.name, parent, call_id="parent-2") == 7
    assert total(receiver, m.CALLS.name, parent) == 2


def test_a_child_never_keeps_an_instance_id_set_for_its_parent(fork_export_to, monkeypatch):
    receiver = fork_export_to
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=bot-1")
    call(grafana(), "parent-1", 11)

    in_child(lambda: {"duration": call(grafana(), "child-1", 23)})
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="child-1") == 23, 5)

    (child_id,) = instance_ids(receiver) - {"bot-1"}
    assert total(receiver, m.TTS_CHARACTERS.name, "bot-1", call_id="parent-1") == 11
    assert total(receiver, m.TTS_CHARACTERS.name, child_id, call_id="child-1") == 23
