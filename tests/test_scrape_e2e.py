"""End-to-end: a real Prometheus 2.42 scrapes a bot process; the dashboard and alerts answer.

The bot process (``tests/scrape_bot.py``) runs the workload of test_e2e_grafana.py with the
scrape endpoint on and no OTLP endpoint: two services, one with the ``call_id`` label and
one without, offline calls with their incidents, and a call held open in each. Prometheus
scrapes it every second under the job ``voice-bots``, as a self-hosted stack would (job and
instance from the scrape config). Then every test of test_e2e_grafana.py runs here too,
against the scraped data: every panel query and alert expression the OTLP path answers, and
every total against the call summaries. The dashboard's *Service label* is ``service_name``
(on every served series), and ``job`` works too (one test below).

The last test is the short call: a 3-second call that starts and ends between two scrapes of
a Prometheus scraping every 5 seconds is counted exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipecat.metrics.metrics import LLMUsageMetricsData, TTSUsageMetricsData

from pipecat_grafana import CallSummary, GrafanaMetricsExporter, scrape
from pipecat_grafana import instruments as m
from pipecat_grafana.config import PROMETHEUS_PORT
from pipecat_grafana.export import SCRAPE
from pipecat_grafana.grafana import dashboard
from tests.backends import REPO_ROOT, ScrapingPrometheus, free_port
from tests.helpers import LiveCall, Reporter, metric
from tests.test_e2e_grafana import (
    CALLS,
    MODELS,
    SERVICE_FLEET,
    SERVICE_PER_CALL,
    SERVICES,
    Layout,
    Loaded,
    _agrees,
    _one,
    _panel_query,
    _prometheus_queries,
    test_alert_signals_return_data_of_their_shape,
    test_alerts_fire_on_a_hair_trigger_and_stay_quiet_at_their_defaults,
    test_conversation_totals_agree_with_the_call_summaries,
    test_cost_alert_signal_is_the_last_hours_cost,
    test_every_panel_query_returns_data_of_its_shape,
    test_every_panel_query_works_for_all_services_and_either_service_label,
    test_per_call_view_follows_the_chosen_call,
    test_totals_agree_with_the_call_summaries,
)

pytestmark = pytest.mark.e2e

# The OTLP path's tests, run here against the scraped data (pytest collects them here too).
REUSED = (
    test_every_panel_query_returns_data_of_its_shape,
    test_every_panel_query_works_for_all_services_and_either_service_label,
    test_totals_agree_with_the_call_summaries,
    test_conversation_totals_agree_with_the_call_summaries,
    test_per_call_view_follows_the_chosen_call,
    test_alert_signals_return_data_of_their_shape,
    test_alerts_fire_on_a_hair_trigger_and_stay_quiet_at_their_defaults,
    test_cost_alert_signal_is_the_last_hours_cost,
)

JOB = "voice-bots"
SCRAPE_INTERVAL_S = 1
SCRAPED = Layout(
    "prometheus scraping the bot",
    scrape.SERVICE_NAME_LABEL,
    frozenset({"job", "instance", scrape.SERVICE_NAME_LABEL, scrape.SERVICE_INSTANCE_LABEL}),
    pushes=False,  # pull alone: the export's own health is not there to serve
)
BOT_TIMEOUT_S = 120


def _scrape_config(job: str, port: int, interval_s: float) -> str:
    return textwrap.dedent(
        f"""\
        global:
          evaluation_interval: 1m
        scrape_configs:
          - job_name: {job}
            scrape_interval: {interval_s}s
            scrape_timeout: {interval_s}s
            static_configs:
              - targets: ["127.0.0.1:{port}"]
        """
    )


def _bot_environment(port: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "GRAFANA_CLOUD_", "PIPECAT_GRAFANA_"))
    }
    env[PROMETHEUS_PORT] = str(port)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@pytest.fixture(scope="module")
def bot() -> Iterator[tuple[Loaded, dict]]:
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScrapingPrometheus(
            _scrape_config(JOB, port, SCRAPE_INTERVAL_S), ["--enable-feature=exemplar-storage"]
        ) as prometheus,
    ):
        out = Path(tmp) / "summaries.json"
        log = Path(tmp) / "bot.log"
        t_start = time.time()
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.scrape_bot", str(out)],
                cwd=REPO_ROOT,
                env=_bot_environment(port),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            line = _ready_line(process, log)
            summaries = {
                service: [CallSummary.model_validate(s) for s in found]
                for service, found in json.loads(out.read_text()).items()
            }
            for service in SERVICES:
                prometheus.wait_for(
                    f'{m.CALLS.prometheus_name}{{service_name="{service}"}} == {CALLS + 1}'
                )
                # The ended calls' own series were read, then let go: they are stale now.
                prometheus.wait_for(
                    f"sum(last_over_time({m.SESSION_DURATION.prometheus_name}_count"
                    f'{{service_name="{service}"}}[5m])) == {CALLS}'
                )
            time.sleep(SCRAPE_INTERVAL_S * 2)  # the calls let go have been scraped as gone
            t_eval = time.time()
            time.sleep(SCRAPE_INTERVAL_S)
        finally:
            process.kill()  # dies mid-call: the held calls are in progress
            process.wait(10)
        t_end = time.time()
        yield Loaded(prometheus, SCRAPED, summaries, t_start, t_end, t_eval), line
        print(f"--- prometheus log ---\n{prometheus.log_tail(60)}")


def _ready_line(process: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + BOT_TIMEOUT_S
    line = b""
    while not line.startswith(b"ready ") and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:  # it exited
            break
    if not line.startswith(b"ready "):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"the bot did not get ready: {line!r}\n{tail}")
    return json.loads(line.split(b" ", 1)[1])


@pytest.fixture(scope="module")
def loaded(bot: tuple[Loaded, dict]) -> Loaded:
    return bot[0]


def test_pull_alone_ran_no_export_thread(bot: tuple[Loaded, dict]) -> None:
    threads = bot[1]["threads"]
    assert "pipecat-grafana-scrape" in threads
    assert not [t for t in threads if "flush" in t or "Export" in t], threads


def test_the_scrape_job_works_as_the_service_label(loaded: Loaded) -> None:
    values = loaded.values(JOB, service_label="job")
    empty = [
        f"{pq.panel.title} / {pq.ref_id}"
        for pq in _prometheus_queries(pushes=False)
        if not loaded.run(pq.query, values)
    ]
    assert not empty, empty
    cost = sum(s.total_cost_usd for found in loaded.summaries.values() for s in found)
    assert _agrees(_one(loaded.run(_panel_query("cost-today"), values)), cost)


def test_target_info_holds_the_resource_attributes(loaded: Loaded) -> None:
    result = loaded.backend.query(scrape.TARGET_INFO, time=loaded.t_eval)
    assert {s["metric"][scrape.SERVICE_NAME_LABEL] for s in result} == set(SERVICES)
    for series in result:
        labels = series["metric"]
        assert labels["job"] == JOB and labels["instance"].startswith("127.0.0.1:")
        assert labels[scrape.SERVICE_INSTANCE_LABEL]
        assert labels["telemetry_sdk_language"] == "python"
    # One process: one service.instance.id for both services.
    assert len({s["metric"][scrape.SERVICE_INSTANCE_LABEL] for s in result}) == 1


def test_variables_list_services_models_and_calls(loaded: Loaded) -> None:
    # As Grafana lists them: the label's values on the series of the dashboard's time range.
    # (An instant query would list no ended call: their series end with them, below.)
    def values_of(variable: dashboard.Variable, service: str = dashboard.ALL) -> set[str]:
        match = dashboard.substitute(variable.series, loaded.values(service))
        return set(
            loaded.backend.label_values(
                dashboard.substitute(variable.label_name, loaded.values(service)),
                match,
                loaded.t_start,
                loaded.t_eval,
            )
        )

    service, model, call_id = dashboard.VARIABLES
    assert values_of(service) == set(SERVICES)
    assert values_of(model) == set(MODELS.values())
    assert values_of(call_id, service=SERVICE_PER_CALL) == {
        s.call_id for s in loaded.summaries[SERVICE_PER_CALL]
    }
    assert values_of(call_id, service=SERVICE_FLEET) == set()


def test_per_call_series_end_with_their_call(loaded: Loaded) -> None:
    per_call = f'{m.COST.prometheus_name}{{call_id!=""}}'
    # Every ended call was read, then let go: its series are stale, not repeated for ever.
    assert loaded.backend.query(per_call, time=loaded.t_eval) == []
    window = f"{loaded.range_s}s"
    seen = loaded.backend.query(f"count by (call_id) (last_over_time({per_call}[{window}]))")
    assert {s["metric"]["call_id"] for s in seen} == {
        s.call_id for s in loaded.summaries[SERVICE_PER_CALL]
    }


# --------------------------------------------------------------------------------------------
# The short call

SHORT_INTERVAL_S = 5
SHORT_CALL_S = 3


def _last_scrape(prometheus: ScrapingPrometheus, job: str) -> float | None:
    # timestamp() of the selector itself: of an expression it is the evaluation's time.
    up = prometheus.query(f'up{{job="{job}"}}')
    if not up or up[0]["value"][1] != "1":
        return None
    return float(prometheus.query(f'timestamp(up{{job="{job}"}})')[0]["value"][1])


def _right_after_a_scrape(prometheus: ScrapingPrometheus, job: str, scrapes: int) -> float:
    """Wait until Prometheus has scraped ``scrapes`` more times; return the last one's time."""
    seen: list[float] = []
    deadline = time.monotonic() + SHORT_INTERVAL_S * (scrapes + 3)
    while len(seen) < scrapes + 1:
        assert time.monotonic() < deadline, f"Prometheus does not scrape: {prometheus.log_tail()}"
        last = _last_scrape(prometheus, job)
        if last is not None and (not seen or last > seen[-1]):
            seen.append(last)
        time.sleep(0.05)
    return seen[-1]


async def test_a_three_second_call_between_two_scrapes_is_counted_exactly() -> None:
    port = free_port()
    job = "short-call"
    call_id = "three-seconds"
    config = _scrape_config(job, port, SHORT_INTERVAL_S)
    with ScrapingPrometheus(config) as prometheus:
        exporter = GrafanaMetricsExporter(
            llm_model="gpt-4o", tts_model="cartesia", call_id=call_id, prometheus_port=port
        )
        t_start = time.time()
        # Two scrapes (the reader's interval is known), then right after a third.
        scraped = await asyncio.to_thread(_right_after_a_scrape, prometheus, job, 2)
        reporter = Reporter(
            [[metric(TTSUsageMetricsData, value=40), metric(LLMUsageMetricsData, model="gpt-4o")]]
        )
        async with LiveCall([reporter, exporter]) as call:
            await call.report()
            await asyncio.sleep(SHORT_CALL_S)
            await call.end()
        ended = time.time()
        assert ended < scraped + SHORT_INTERVAL_S, "the call did not fit between two scrapes"
        # Served at zero, then at its values, then gone: three more scrapes.
        await asyncio.to_thread(_right_after_a_scrape, prometheus, job, 3)
        t_eval = time.time()
        summary = exporter.summary
        window = f"{int(t_eval - t_start) + 2}s"

        def query(expr: str) -> list:
            return prometheus.query(expr, time=t_eval)

        def total(spec: m.InstrumentSpec, suffix: str = "", **matchers: str) -> float:
            return _one(
                query(
                    dashboard.substitute(
                        dashboard.range_total(spec, suffix=suffix, **matchers),
                        {
                            "service_label": "job",
                            "service": job,
                            "model": ".*",
                            "call_id": call_id,
                            "__range": window,
                        },
                    )
                )
            )

        samples = query(
            f'count_over_time({m.TTS_CHARACTERS.prometheus_name}{{call_id="{call_id}"}}[{window}])'
        )
        assert _one(samples) == 2  # its zero, then its value
        first = query(
            f'min_over_time({m.TTS_CHARACTERS.prometheus_name}{{call_id="{call_id}"}}[{window}])'
        )
        assert _one(first) == 0
        assert total(m.TTS_CHARACTERS) == summary.tts_characters == 40
        assert total(m.LLM_TOKENS, token_type="prompt") == summary.tokens["prompt"]
        assert _agrees(total(m.COST), summary.total_cost_usd)
        assert total(m.SESSION_DURATION, "_count") == 1
        assert _agrees(total(m.SESSION_DURATION, "_sum"), summary.duration_seconds)
        assert summary.duration_seconds >= SHORT_CALL_S
        # And it ended with its call.
        assert query(f'{m.TTS_CHARACTERS.prometheus_name}{{call_id="{call_id}"}}') == []
        assert exporter._pipeline.calls.unread(SCRAPE) == []
