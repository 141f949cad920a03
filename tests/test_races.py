"""The export core's four races, each replayed in the interleaving that exposed it.

Each test forces its interleaving with a hook at the exact point where another thread
acted (no sleeps): the export thread with a request in flight, the SDK's collection
before the export, two threads completing one call's wait, two threads sending the log
queue. A competing thread that the fix makes wait on a lock is joined with a bound, and
the test then checks that nothing was lost, resurrected, raised or said too early.
"""

import threading
from collections import deque
from concurrent.futures import Future

from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import Resource

from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import create_meters
from pipecat_grafana.config import PENDING_RETENTION_S, ExportConfig
from pipecat_grafana.export import PUSH, SCRAPE, ExportPipeline, PendingCalls
from pipecat_grafana.logs import SummaryLogs
from pipecat_grafana.summary import CallSummary
from tests.helpers import FakeClock

RESOURCE = Resource({"service.name": "bot", "service.instance.id": "races"})
# A thread that the fix makes wait on a lock is given this long to show it does not.
BLOCKED_S = 0.5


def _meters():
    return create_meters(NoOpMeter("test"), own=True).own({m.CALL_ID: "c"}, call_histograms=False)


def _run_beside(target) -> threading.Thread:
    """Run ``target`` on another thread, now, and wait for it unless a lock holds it."""
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BLOCKED_S)
    return thread


def test_1_a_call_retention_let_go_while_its_export_was_in_flight_stays_gone():
    """The first success after a long outage must not bring back a call retention ended."""
    clock = FakeClock(1000.0)
    calls = PendingCalls([PUSH, SCRAPE], time_source=clock)
    call = calls.open(_meters())
    calls.end(call)
    in_flight = calls.unread(PUSH)  # the export thread puts it in a request...
    assert in_flight == [call]
    clock.now += PENDING_RETENTION_S + 1  # ...which is answered only after the outage
    expired = calls.expire()  # retention (another call's end, or the next export) runs first
    assert expired.late == {PUSH: 1, SCRAPE: 1}
    for sent in in_flight:  # then the request is accepted
        calls.read(sent, PUSH)
    assert calls.pending() == []
    assert calls.unread(SCRAPE) == []  # not brought back, for no reader
    assert call.final.result(timeout=0) is False  # its wait ended once, as not exported


def test_2_label_off_a_call_ending_after_the_collection_is_not_confirmed_by_it(receiver):
    """With the call_id label off, a call's end waits for an export that read its end."""
    pipeline = ExportPipeline(
        ExportConfig(endpoint=receiver.metrics_url, call_id_label=False, export_interval_s=3600),
        RESOURCE,
    )
    ends: list[Future] = []
    confirmed_with: list[float] = []
    assemble, settle = pipeline.assemble, pipeline.settle

    def assemble_then_the_end(carrying=None):
        # The fleet's series are read; the call ends now, on another thread.
        batch = assemble(carrying)
        if not ends:
            pipeline.fleet.record(m.CALLS_ENDED, 1, {m.END_REASON: "ended"})
            ends.extend(pipeline.close_call(None))
        return batch

    def settle_and_look(batch, accepted):
        settle(batch, accepted)
        if ends and ends[0].done() and not confirmed_with:
            confirmed_with.append(receiver.total(m.CALLS_ENDED.name))

    pipeline.assemble, pipeline.settle = assemble_then_the_end, settle_and_look
    pipeline.export()  # read before the end: must not confirm it
    pipeline.export()  # the next one (or the sending thread's, woken by the end) reads it
    (final,) = ends
    assert final.result(timeout=5) is True
    assert confirmed_with == [1]  # the request that confirmed the end carried it
    pipeline.shutdown(2)


def test_3_two_threads_completing_one_calls_wait_never_raise():
    """The export's answer and retention meet on one call: the first answer stands."""
    clock = FakeClock(1000.0)
    calls = PendingCalls([PUSH], time_source=clock)
    call = calls.open(_meters())
    calls.end(call)
    clock.now += PENDING_RETENTION_S + 1
    competitor: list[threading.Thread] = []
    errors: list[Exception] = []

    def expire():
        try:
            calls.expire()
        except Exception as e:
            errors.append(e)

    class CheckThenAct(Future):
        def done(self):
            finished = super().done()
            if not competitor:  # between the check and the act: retention completes it
                competitor.append(threading.Thread(target=expire, daemon=True))
                competitor[0].start()
                competitor[0].join(BLOCKED_S)
            return finished

    call.final = CheckThenAct()
    try:
        calls.complete(call, True)  # the export thread's answer
    except Exception as e:
        errors.append(e)
    competitor[0].join(5)
    assert not competitor[0].is_alive()
    assert errors == []  # before: InvalidStateError on one thread or the other
    assert call.final.result(timeout=0) is True
    assert calls.pending() == []


def _summary(call_id: str) -> CallSummary:
    return CallSummary(
        call_id=call_id,
        service_name="bot",
        llm_model=None,
        stt_model=None,
        tts_model=None,
        started_at=None,
        duration_seconds=1.0,
        end_reason="ended",
    )


class _HookedDeque(deque):
    """A queue that lets another consumer in between a check for a record and its pop.

    The hook runs at the second check: the one right before the first ``popleft``.
    """

    def __init__(self, records, hook):
        super().__init__(records)
        self._hook = hook
        self._checks = 0

    def __bool__(self):
        nonempty = super().__len__() > 0
        self._checks += 1
        if self._checks == 2:
            self._hook()
        return nonempty


def test_4_the_flush_thread_and_the_exit_never_send_the_log_queue_at_once(receiver):
    """The exit path drains the queue while the flush thread sends it: one at a time."""
    config = ExportConfig(
        endpoint=receiver.metrics_url, logs_endpoint=receiver.endpoint + "/v1/logs"
    )
    logs = SummaryLogs(config, RESOURCE)
    for index in range(3):
        logs.emit(_summary(f"call-{index}"))
    queue = logs._queue
    exits: list[threading.Thread] = []
    results: dict[str, bool] = {}

    def exit_now():
        exits.append(_run_beside(lambda: results.setdefault("exit", logs.shutdown(2))))

    queue._records = _HookedDeque(queue._records, exit_now)
    results["flush"] = logs.flush(2)  # the flush thread; would pop an emptied deque
    exits[0].join(5)
    assert not exits[0].is_alive()
    assert results == {"flush": True, "exit": True}
    assert sorted(r.attributes["call_id"] for r in receiver.logs) == [
        "call-0",
        "call-1",
        "call-2",
    ]
