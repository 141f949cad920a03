"""SIGTERM, as docker stop, Kubernetes and systemd send it, ends calls as Ctrl-C does.

The offline runs are real processes sent a real SIGTERM while calls are under way, exporting
to a local OTLP receiver: every call that started must have its summary record there, and
the process must exit with 143 within the flush timeout.
"""

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.workers.runner import WorkerRunner

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.summary import EVENT_NAME, EVENT_NAME_KEY
from tests.helpers import run_pipeline
from tests.otlp_receiver import OtlpReceiver
from tests.test_example import EXAMPLE, RUN_TIMEOUT_S, offline_env

pytestmark = pytest.mark.slow  # real child processes sent SIGTERM

REPO = Path(__file__).resolve().parents[1]
FLUSH_TIMEOUT_S = 5
# The process's own work after the signal (cancelling pipelines, logging) on a loaded machine.
EXIT_MARGIN_S = 3
STARTED = re.compile(r"call started\nCall ID:  (\S+)")
NOTICE = "SIGTERM"


def summary_records(receiver: OtlpReceiver) -> dict[str, str]:
    """call_id -> end_reason of every summary record the receiver got."""
    return {
        r.attributes["call_id"]: r.attributes["end_reason"]
        for r in receiver.logs
        if r.attributes.get(EVENT_NAME_KEY) == EVENT_NAME
    }


def terminate_mid_call(args: list[str], receiver: OtlpReceiver, cwd: Path, *, calls_before: int):
    """Start ``args``, SIGTERM it once ``calls_before`` calls started; (returncode, log, s)."""
    env = offline_env(receiver)
    env[cfg.FLUSH_TIMEOUT] = str(FLUSH_TIMEOUT_S)
    process = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        receiver.wait_for(lambda r: r.total(m.CALLS.name) >= calls_before, RUN_TIMEOUT_S)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, log = process.communicate(timeout=RUN_TIMEOUT_S)
        exit_time = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, log, exit_time


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "pipecat_grafana.cli", "demo"],
        [str(EXAMPLE), "--offline"],
    ],
    ids=["demo", "example_bot"],
)
def test_sigterm_ends_every_call_with_its_summary_and_exits_143(command, receiver, tmp_path):
    # Two calls at a time, round after round: the signal lands wherever the calls are.
    args = [*command, "--calls", "2", "--rounds", "0", "--turns", "3", "--speed", "0.1"]
    returncode, log, exit_time = terminate_mid_call(args, receiver, tmp_path, calls_before=3)

    assert returncode == 143, log
    assert "Traceback" not in log
    started = STARTED.findall(log)
    assert len(started) >= 3, log
    records = summary_records(receiver)
    # Every call that started has its summary record; those in progress ended cancelled.
    assert set(started) <= set(records), (started, records)
    assert "cancelled" in {records[call_id] for call_id in started}
    assert log.count("Call Summary") >= len(started)
    # Final metrics: every started call counted as ended, none left active.
    assert receiver.total(m.SESSION_DURATION.name) == len(started)
    assert receiver.total(m.CALLS_ACTIVE.name) == 0
    assert exit_time < FLUSH_TIMEOUT_S + EXIT_MARGIN_S, exit_time
    print(f"{len(started)} calls started, {len(records)} summary records, exit {exit_time:.2f}s")


def test_a_bot_run_with_handle_sigterm_ends_its_call_on_sigterm(receiver):
    """What the README tells a user: Pipecat's WorkerRunner(handle_sigterm=True)."""
    returncode, log, exit_time = terminate_mid_call(
        ["-m", "tests.sigterm_bot"], receiver, REPO, calls_before=1
    )

    assert returncode == 0, log
    ((call_id, reason),) = summary_records(receiver).items()
    assert reason == "cancelled"
    assert f"on_call_summary: {call_id} cancelled" in log
    assert receiver.total(m.SESSION_DURATION.name, end_reason="cancelled") == 1
    assert exit_time < FLUSH_TIMEOUT_S + EXIT_MARGIN_S, exit_time
    # A process that handles SIGTERM is not told to.
    assert "handle_sigterm" not in log


def notices(lines: list[str]) -> list[str]:
    return [line for line in lines if NOTICE in line and "handle_sigterm=True" in line]


async def test_a_process_sigterm_would_kill_is_told_once_what_to_pass(log_lines):
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    for _ in range(2):
        await run_pipeline([GrafanaMetricsExporter()])

    assert len(notices(log_lines)) == 1


async def test_a_process_that_handles_sigterm_is_not_told(log_lines):
    worker = PipelineWorker(
        Pipeline([GrafanaMetricsExporter()]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        cancel_on_idle_timeout=False,
    )
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=True)
    await runner.add_workers(worker)

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        await worker.cancel()

    try:
        await asyncio.wait_for(runner.run(), timeout=30)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)  # Pipecat leaves it

    assert notices(log_lines) == []
