"""How a process ends: within the flush timeout, whatever the endpoint does.

A bot's process exits on a deploy, a scale-down or a crash loop; the README promises it
waits at most ``PIPECAT_GRAFANA_FLUSH_TIMEOUT`` for what is left to send. These run the
offline call in a real child process, against a real receiver, and time the exit.
"""

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana.summary import EVENT_NAME
from tests.backends import REPO_ROOT, free_port

pytestmark = pytest.mark.slow  # a real child process per test, timed at exit

FLUSH_TIMEOUT_S = 2.0
# The exit may take the flush timeout and the moment it takes to let go of what is left.
SLACK_S = 1.5


@pytest.fixture
def port(monkeypatch) -> int:
    """Serve /metrics on a free loopback port."""
    port = free_port()
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(port))
    return port


CALL = textwrap.dedent(
    """
    import asyncio, sys
    from pipecat_grafana.commands.demo import OfflineDemo

    asyncio.run(OfflineDemo(turns=1, calls=1, speed=0.05, seed=3).run())
    print("CALL ENDED", flush=True)
    """
)


def _exit_after_the_call(receiver, **env: str) -> tuple[float, str]:
    """Run one offline call in a child process; the seconds from its end to the exit."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PIPECAT_"))},
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        cfg.FLUSH_TIMEOUT: str(FLUSH_TIMEOUT_S),
        **env,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CALL],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    ended = None
    for line in child.stdout:
        lines.append(line)
        if line.startswith("CALL ENDED"):
            ended = time.monotonic()
    child.wait(60)
    exited = time.monotonic()
    output = "".join(lines)
    assert ended is not None, output
    assert child.returncode == 0, output
    return exited - ended, output


def test_a_hanging_endpoint_holds_the_exit_no_longer_than_the_flush_timeout(receiver):
    receiver.hang()  # accepts every request, answers none: metrics, logs, traces
    waited, output = _exit_after_the_call(receiver, **{cfg.TRACES: "true"})
    assert waited <= FLUSH_TIMEOUT_S + SLACK_S, (waited, output)
    dropped = [line for line in output.splitlines() if "at exit, dropped" in line]
    assert len(dropped) == 1, output
    assert "did not answer within the flush timeout" in dropped[0]


def test_a_working_endpoint_gets_everything_and_nothing_is_dropped_at_exit(receiver):
    waited, output = _exit_after_the_call(receiver)
    assert waited <= FLUSH_TIMEOUT_S + SLACK_S, (waited, output)
    assert "dropped" not in output
    assert len(receiver.records(EVENT_NAME)) == 1  # the call's summary record


async def test_an_occasional_scrape_at_exit_is_said_as_such(port, log_lines):
    from pipecat.metrics.metrics import TTSUsageMetricsData

    import pipecat_grafana
    from tests.helpers import Reporter, Trigger, metric, run_pipeline
    from tests.test_scrape import grafana, scrape_once

    exporter = grafana(call_id="curl", flush_timeout_s=0.5)
    await asyncio.to_thread(scrape_once, port)  # a person runs curl once, during the call
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=9)]]), exporter], [Trigger("go")]
    )
    await asyncio.to_thread(pipecat_grafana.shutdown, 0.5)
    (dropped,) = [line for line in log_lines if "at exit, dropped" in line]
    assert "no scrape of the Prometheus endpoint read them in time" in dropped
    assert "shut down before" not in dropped


async def test_a_refused_export_at_exit_is_said_in_the_endpoints_words(export_to, log_lines):
    from pipecat.metrics.metrics import TTSUsageMetricsData

    import pipecat_grafana
    from pipecat_grafana import GrafanaMetricsExporter
    from tests.helpers import Reporter, Trigger, metric, run_pipeline

    receiver = export_to
    receiver.respond_with(401)
    exporter = GrafanaMetricsExporter(call_id="refused", flush_timeout_s=0.5)
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=9)]]), exporter], [Trigger("go")]
    )
    await asyncio.to_thread(pipecat_grafana.shutdown, 1)
    (dropped,) = [line for line in log_lines if "at exit, dropped" in line]
    assert "refused the last export (401" in dropped
    assert "shut down before" not in dropped
    # Why, and what to do, said once: when the export failed.
    explained = [line for line in log_lines if "asks for credentials (401) and none" in line]
    assert len(explained) == 1, explained


CALL_THEN_WAIT = CALL + "sys.stdin.readline()  # the test makes the endpoint hang meanwhile\n"


def test_ctrl_c_during_the_exit_wait_ends_it_quietly_saying_what_was_dropped(receiver):
    """A real SIGINT, then a second one, to a real process waiting at exit for its endpoint."""
    import signal

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PIPECAT_"))},
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        cfg.FLUSH_TIMEOUT: "60",  # Ctrl-C ends the wait, not the timeout
        cfg.OTEL_METRIC_EXPORT_INTERVAL: "3600000",  # no periodic export: the exit's is the one
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CALL_THEN_WAIT],
        cwd=REPO_ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("CALL ENDED"):
            break
    receiver.hang()
    child.stdin.write("\n")
    child.stdin.flush()
    # The exit's export has reached the endpoint, which holds it: the process waits at exit.
    receiver.wait_for(lambda r: any(q.status is None for q in r.rejected), timeout=30)
    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    for line in child.stdout:
        lines.append(line)
        if "at exit, dropped" in line:
            child.send_signal(signal.SIGINT)  # a second Ctrl-C, while the exit goes on
            break
    lines.extend(child.stdout)
    child.wait(30)
    waited = time.monotonic() - interrupted
    output = "".join(lines)
    assert waited < 10, (waited, output)  # well within the 60 s flush timeout
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert "KeyboardInterrupt" not in output, output
    (dropped,) = [line for line in output.splitlines() if "at exit, dropped" in line]
    assert "interrupted (Ctrl-C)" in dropped
