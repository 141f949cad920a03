"""The Prometheus scrape endpoint, read over real HTTP and parsed by prometheus_client's parser.

What Prometheus itself makes of it (the dashboard, the alert rules, a short call between two
scrapes) is in test_scrape_e2e.py.
"""

import asyncio
import base64
import gc
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import defaultdict

import pytest
from opentelemetry.sdk.resources import Resource
from pipecat.metrics.metrics import TTFBMetricsData, TTSUsageMetricsData
from prometheus_client.parser import text_string_to_metric_families

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, export, scrape
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.aggregation import CallMeters
from pipecat_grafana.commands.demo import OfflineDemo
from pipecat_grafana.config import MAX_PENDING
from pipecat_grafana.export import PUSH, SCRAPE, ExportPipeline
from pipecat_grafana.scrape_config import ScrapeConfig
from tests.backends import free_port
from tests.helpers import FakeClock, Reporter, Trigger, metric, run_pipeline
from tests.test_exporter import ALL_TYPES
from tests.test_otlp_export import _run_calls_without_pipelines

PROMETHEUS_UA = "Prometheus/2.42.0"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"

Sample = tuple[str, frozenset]


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(
        llm_model="gpt-4o", stt_model="gladia", tts_model="cartesia", **kwargs
    )


@pytest.fixture(autouse=True)
def every_scrape_renders(monkeypatch):
    """These read what each scrape shows, however soon: the render cap is tested apart."""
    monkeypatch.setattr(scrape, "MIN_RENDER_GAP_S", 0.0)


@pytest.fixture
def port(monkeypatch) -> int:
    """Serve /metrics on a free loopback port (the variable, as a bot's operator sets it)."""
    port = free_port()
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(port))
    return port


def get(port: int, *, agent: str = PROMETHEUS_UA, accept: str | None = None) -> tuple[str, str]:
    """One scrape: (content type, body)."""
    headers = {"User-Agent": agent, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(body: str) -> dict[Sample, float]:
    """Every sample of a scrape, by name and labels (parsed by prometheus_client)."""
    found: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def scrape_once(port: int, **kwargs) -> dict[Sample, float]:
    return samples(get(port, **kwargs)[1])


def of_call(found: dict[Sample, float], call_id: str) -> dict[Sample, float]:
    return {key: v for key, v in found.items() if (m.CALL_ID, call_id) in key[1]}


def total(found: dict[Sample, float], name: str, **labels: str) -> float:
    matching = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    assert matching, f"no sample {name} {labels}"
    return sum(matching)


# --------------------------------------------------------------------------------------------
# What is served


async def test_a_call_is_served_with_the_contract_names_and_labels(port):
    exporter = grafana(service_name="voice-rag-bot", call_id="call-1")
    await run_pipeline([Reporter([ALL_TYPES]), exporter], [Trigger("go")])
    first, second, third = (scrape_once(port) for _ in range(3))

    names = {name for name, _ in second}
    # Pull alone: the OTLP export's own health is not there; this call has no turns,
    # greeting or audio frames (only metrics), and may not last the lag sampler's 100 ms.
    absent = {*m.CONVERSATION, *m.PUSH_ONLY, m.GREETING_LATENCY, m.TTS_AUDIO, m.EVENT_LOOP_LAG}
    for spec in set(m.ALL) - absent:
        base = spec.prometheus_name
        expected = (
            {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
            if spec.kind is m.Kind.HISTOGRAM
            else {base}
        )
        assert expected <= names, spec.name
    (info,) = [dict(labels) for name, labels in second if name == scrape.TARGET_INFO]
    instance_id = info[scrape.SERVICE_INSTANCE_LABEL]
    assert info[scrape.SERVICE_NAME_LABEL] == "voice-rag-bot"
    assert info["telemetry_sdk_language"] == "python"
    for (name, labels), _ in second.items():
        labels = dict(labels)
        assert labels[scrape.SERVICE_NAME_LABEL] == "voice-rag-bot", name
        assert labels[scrape.SERVICE_INSTANCE_LABEL] == instance_id, name
        assert not {"job", "instance"} & set(labels), name  # the scrape config's to set

    ttfb = {
        dict(labels)["le"]: value
        for (name, labels), value in second.items()
        if name == f"{m.TTFB.prometheus_name}_bucket"
    }
    # Bounds as Mimir writes them from OTLP: 10, not 10.0.
    assert list(ttfb) == [*(f"{b:g}" for b in m.LATENCY_BUCKETS_MS), "+Inf"]
    assert ttfb["500"] == 0 and ttfb["1000"] == 1 and ttfb["+Inf"] == 1
    assert total(second, m.TTS_CHARACTERS.prometheus_name, call_id="call-1") == 57
    assert total(second, m.LLM_TOKENS.prometheus_name, token_type="prompt") == 100
    cost = total(second, m.COST.prometheus_name, call_id="call-1")
    assert cost == pytest.approx(exporter.summary.total_cost_usd)
    assert total(second, m.CALLS.prometheus_name) == 1
    assert total(second, m.CALLS_ACTIVE.prometheus_name) == 0

    # The short call: first at zero, then at its values, then gone.
    call = of_call(first, "call-1")
    assert call.keys() == of_call(second, "call-1").keys()
    assert set(call.values()) == {0}
    assert of_call(third, "call-1") == {}
    assert total(third, m.CALLS.prometheus_name) == 1  # the fleet's series stay


async def test_openmetrics_is_served_when_asked_for_with_exemplars(port):
    await run_pipeline([Reporter([ALL_TYPES]), grafana(call_id="call-2")], [Trigger("go")])
    get(port)  # the zeros
    content_type, body = get(port, accept=OPENMETRICS)

    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "# TYPE target info" in body
    bucket = next(
        line
        for line in body.splitlines()
        if line.startswith(f"{m.TTFB.prometheus_name}_bucket") and 'le="1000"' in line
    )
    assert ' # {call_id="call-2"} 800' in bucket  # the measurement, linked to its call
    assert not [line for line in body.splitlines() if "_created" in line]
    samples(get(port, accept="text/plain")[1])  # and the classic format parses too


def test_series_of_one_resource_in_two_pipelines_add_up():
    resource = Resource({"service.name": "bot", "service.instance.id": "i-1"})
    with_label = ExportPipeline(cfg.ExportConfig(endpoint=None, pull=True), resource)
    without = ExportPipeline(
        cfg.ExportConfig(endpoint=None, pull=True, call_id_label=False), resource
    )
    clock = FakeClock(0)
    collector = scrape.AggregatesCollector(time_source=clock)
    for pipeline in (with_label, without):
        collector.add(pipeline)
        pipeline.fleet.record(m.CALLS, 2, {})
    collector_samples = _collect(collector, clock)
    assert total(collector_samples, m.CALLS.prometheus_name) == 4


def _collect(collector: scrape.AggregatesCollector, clock: FakeClock) -> dict[Sample, float]:
    """Two scrapes 15 s apart by one reader; the second's samples."""
    found = {}
    for _ in range(2):
        clock.now += 15
        with collector.reading(("127.0.0.1", PROMETHEUS_UA)):
            found = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in collector.collect()
                for s in family.samples
            }
    return found


# --------------------------------------------------------------------------------------------
# Short calls and several readers


class Served:
    """A pull-only pipeline served on its own port with a controlled clock."""

    def __init__(self, **config):
        self.clock = FakeClock(1000.0)
        self.collector = scrape.AggregatesCollector(time_source=self.clock)
        self.port = free_port()
        self.endpoint = scrape.ScrapeEndpoint(
            ScrapeConfig("127.0.0.1", self.port), collector=self.collector
        )
        self.pipeline = ExportPipeline(
            cfg.ExportConfig(endpoint=None, pull=True, **config),
            Resource({"service.name": "bot", "service.instance.id": "i-1"}),
        )
        self.endpoint.add(self.pipeline)

    def call(self, call_id: str, characters: float = 40):
        meters, call = self.pipeline.open_call(call_id)
        meters.record(m.TTS_CHARACTERS, characters, {m.PROCESSOR: "TTS"})
        meters.record(m.TTFB, 250.0, {m.PROCESSOR: "TTS"})
        return call

    def scrape(self, at: float, agent: str = PROMETHEUS_UA) -> dict[Sample, float]:
        self.clock.now = at
        return scrape_once(self.port, agent=agent)

    def close(self):
        self.endpoint.close(0)


@pytest.fixture
def served():
    served = Served()
    yield served
    served.close()


def characters(found: dict[Sample, float], call_id: str) -> float | None:
    values = [
        v
        for (name, labels), v in of_call(found, call_id).items()
        if name == m.TTS_CHARACTERS.prometheus_name
    ]
    return values[0] if values else None


def test_a_call_between_two_scrapes_is_served_at_zero_then_at_its_values_then_goes(served):
    served.scrape(1000)
    served.scrape(1015)  # the reader scrapes every 15 s
    served.pipeline.close_call(served.call("short"))  # a 3-second call, at 1020
    seen = [characters(served.scrape(t), "short") for t in (1030, 1045, 1060, 1075)]
    assert seen == [0, 40, None, None]
    assert served.pipeline.calls.unread(SCRAPE) == []


def test_two_readers_each_see_the_zero_and_the_final_values_and_a_curl_takes_neither(served):
    # Two Prometheus servers (an HA pair) scraping every 15 s, 7 s apart.
    a, b = "Prometheus/2.42.0 (a)", "Prometheus/2.42.0 (b)"
    for t in (1000, 1015):
        served.scrape(t, a)
        served.scrape(t + 7, b)
    served.pipeline.close_call(served.call("short"))
    seen = defaultdict(list)
    served.scrape(1025, "curl/8.0")  # a person looks, once, before either
    for t in (1030, 1045, 1060, 1075):
        seen[a].append(characters(served.scrape(t, a), "short"))
        seen[b].append(characters(served.scrape(t + 7, b), "short"))
    for reader, values in seen.items():
        present = [v for v in values if v is not None]
        assert present[0] == 0 and present[-1] == 40, (reader, values)
    assert served.pipeline.calls.unread(SCRAPE) == []


def test_a_long_call_is_served_as_it_goes(served):
    served.scrape(1000)
    call = served.call("long", characters=10)
    meters = call.meters
    assert characters(served.scrape(1015), "long") == 0
    assert characters(served.scrape(1030), "long") == 10
    meters.record(m.TTS_CHARACTERS, 5, {m.PROCESSOR: "TTS"})
    meters.record(m.ERRORS, 1, {m.PROCESSOR: "TTS"})  # a new series of a call in progress
    found = served.scrape(1045)
    assert characters(found, "long") == 15
    assert total(found, m.ERRORS.prometheus_name, call_id="long") == 0
    served.pipeline.close_call(call)
    found = served.scrape(1060)
    assert total(found, m.ERRORS.prometheus_name, call_id="long") == 1
    assert characters(found, "long") == 15
    assert characters(served.scrape(1075), "long") is None


def test_ended_calls_nobody_scrapes_are_bounded(served, log_lines):
    for index in range(MAX_PENDING + 5):
        served.pipeline.close_call(served.call(f"c{index}"))
    kept = served.pipeline.calls.unread(SCRAPE)
    assert len(kept) == MAX_PENDING
    assert kept[0].labels[m.CALL_ID] == "c5"  # the oldest went first
    dropped = [line for line in log_lines if "for a scrape to read them" in line]
    assert len(dropped) == 1


async def test_shutdown_waits_for_a_scrape_to_read_the_calls_that_ended(port):
    exporter = grafana(call_id="last")  # the endpoint listens from here on
    stop, regular = threading.Event(), threading.Event()
    read: list[float | None] = []

    def prometheus():  # scrapes every 0.2 s until the endpoint stops
        while not stop.wait(0.2):
            try:
                read.append(characters(scrape_once(port), "last"))
                if len(read) >= 2:
                    regular.set()
            except OSError:
                return

    reader = threading.Thread(target=prometheus)
    reader.start()
    try:
        # Prometheus scrapes at intervals (else nobody would read what shutdown waits for).
        assert await asyncio.to_thread(regular.wait, 5)
        await run_pipeline(
            [Reporter([[metric(TTSUsageMetricsData, value=9)]]), exporter], [Trigger("go")]
        )
        # At once, as a bot's exit would: the call's zero and values are not yet scraped.
        started = time.monotonic()
        await asyncio.to_thread(pipecat_grafana.shutdown, 5)
        waited = time.monotonic() - started
    finally:
        stop.set()
        reader.join()
    assert 9 in read, read
    assert waited < 5


# --------------------------------------------------------------------------------------------
# Push and pull, together or alone


async def test_push_and_pull_together_each_read_a_call_once(export_to, port):
    receiver = export_to
    exporter = grafana(call_id="both")
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=9)]]), exporter], [Trigger("go")]
    )
    receiver.wait_for(lambda r: r.total(m.TTS_CHARACTERS.name, call_id="both") == 9, timeout=5)
    pipeline = exporter._pipeline
    receiver.wait_for(
        lambda r: not pipeline.calls.unread(PUSH), timeout=5
    )  # exported: not sent again
    assert [c.labels[m.CALL_ID] for c in pipeline.calls.unread(SCRAPE)] == [
        "both"
    ]  # not yet scraped
    seen = [characters(scrape_once(port), "both") for _ in range(3)]
    assert seen == [0, 9, None]
    assert pipeline.calls.unread(SCRAPE) == []


async def test_pull_alone_aggregates_and_runs_no_export_thread(port, log_lines):
    before = {t.name for t in threading.enumerate()}
    exporter = grafana(call_id="alone")
    await run_pipeline(
        [Reporter([[metric(TTFBMetricsData, processor="LLM#1", value=0.3)]]), exporter],
        [Trigger("go")],
    )
    started = {t.name for t in threading.enumerate()} - before
    assert started == {"pipecat-grafana-scrape"}
    assert not [line for line in log_lines if "no OTLP endpoint configured" in line]
    assert [line for line in log_lines if f"127.0.0.1:{port}/metrics" in line]
    scrape_once(port)
    found = scrape_once(port)
    # Latency histograms are per process (the call's is in its summary record).
    assert total(found, f"{m.TTFB.prometheus_name}_count") == 1
    assert total(found, f"{m.TTFB.prometheus_name}_sum") == pytest.approx(300)


async def test_the_offline_call_serves_the_endpoint(port):
    demo = OfflineDemo(turns=1, calls=1, speed=0.05, seed=3)
    await demo.run()
    (summary,) = demo.summaries
    scrape_once(port)
    found = scrape_once(port)
    assert total(found, m.CALLS.prometheus_name) == 1
    cost = total(found, m.COST.prometheus_name, call_id=summary.call_id)
    assert cost == pytest.approx(summary.total_cost_usd)


async def test_the_endpoint_never_shows_credentials(monkeypatch, receiver, port):
    token = "glc_" + "scrapesecret0123456789abcdef"  # fake
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, receiver.endpoint)
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_INSTANCE_ID, "123456")
    monkeypatch.setenv(cfg.GRAFANA_CLOUD_API_TOKEN, token)
    await run_pipeline([Reporter([ALL_TYPES]), grafana()], [Trigger("go")])
    encoded = base64.b64encode(f"123456:{token}".encode()).decode()
    for accept in (None, OPENMETRICS):
        body = get(port, accept=accept)[1]
        assert token not in body and encoded not in body and "123456" not in body


# --------------------------------------------------------------------------------------------
# Bad input: one clear error naming the variable, and the bot goes on without the endpoint


def _errors(log_lines: list[str]) -> list[str]:
    return [line for line in log_lines if "Prometheus endpoint is off" in line]


async def _bot_goes_on(exporter: GrafanaMetricsExporter) -> None:
    await run_pipeline(
        [Reporter([[metric(TTSUsageMetricsData, value=9)]]), exporter], [Trigger("go")]
    )
    assert exporter.summary.tts_characters == 9
    assert not exporter._pipeline.pulled


async def test_a_port_in_use_is_named_and_the_bot_goes_on(port, log_lines):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        exporter = grafana()
        grafana()  # said once
        await _bot_goes_on(exporter)
    (error,) = _errors(log_lines)
    assert f"{cfg.PROMETHEUS_PORT}={port} is in use" in error


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (cfg.PROMETHEUS_PORT, "abc", "is not a TCP port"),
        (cfg.PROMETHEUS_PORT, "70000", "is not a TCP port"),
        (cfg.PROMETHEUS_PORT, "0", "is not a TCP port"),
        (cfg.PROMETHEUS_ADDR, "not an address!", "is not an IP address or host name"),
        (cfg.PROMETHEUS_ADDR, "999.1.1.1", "is not an IP address or host name"),
        (cfg.PROMETHEUS_ADDR, "no-such-host.invalid", "is not a host name that resolves"),
        (cfg.PROMETHEUS_ADDR, "192.0.2.1", "is not an address of this machine"),
    ],
)
async def test_a_bad_variable_is_named_and_the_bot_goes_on(
    monkeypatch, log_lines, variable, value, said
):
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(free_port()))
    monkeypatch.setenv(variable, value)
    await _bot_goes_on(grafana())
    (error,) = _errors(log_lines)
    assert f"{variable}={value!r}" in error or f"{variable}={value}" in error
    assert said in error


def test_an_address_without_a_port_is_named(monkeypatch, log_lines):
    monkeypatch.setenv(cfg.PROMETHEUS_ADDR, "0.0.0.0")
    grafana()
    (error,) = _errors(log_lines)
    assert cfg.PROMETHEUS_ADDR in error and cfg.PROMETHEUS_PORT in error


PRIVILEGED = textwrap.dedent(
    """\
    import sys
    from loguru import logger
    logger.remove()
    logger.add(sys.stdout, format="{message}")
    from pipecat_grafana import GrafanaMetricsExporter
    exporter = GrafanaMetricsExporter()
    print("pulled", exporter._pipeline.pulled)
    """
)


def test_a_privileged_port_is_named_when_not_allowed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPECAT_GRAFANA", "OTEL_"))}
    env.update({cfg.PROMETHEUS_PORT: "80", "PYTHONPATH": os.getcwd()})
    argv = [sys.executable, "-c", PRIVILEGED]
    if os.geteuid() == 0:
        # Root may listen below 1024 through CAP_NET_BIND_SERVICE: run the bot without it,
        # as an ordinary user's bot runs.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip(
                "running as root, and setpriv (util-linux) is not there to drop the "
                "capability to listen below 1024"
            )
        argv = [
            setpriv,
            "--bounding-set",
            "-net_bind_service",
            "--inh-caps",
            "-net_bind_service",
            *argv,
        ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    errors = _errors(result.stdout.splitlines())
    assert len(errors) == 1, result.stdout
    assert f"{cfg.PROMETHEUS_PORT}=80 is a privileged port" in errors[0]
    assert "pulled False" in result.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        {"prometheus_port": 0},
        {"prometheus_port": "9464"},
        {"prometheus_port": True},
        {"prometheus_addr": "127.0.0.1"},
        {"prometheus_port": 9464, "prometheus_addr": "not an address!"},
    ],
)
def test_a_bad_argument_raises(arguments):
    with pytest.raises(ValueError, match="prometheus_"):
        grafana(**arguments)


def test_pull_is_refused_with_an_applications_provider(memory_metrics):
    with pytest.raises(ValueError, match="meter_provider"):
        grafana(meter_provider=memory_metrics.provider, prometheus_port=free_port())


def test_one_endpoint_per_process(port):
    first = grafana(prometheus_port=port)
    assert first._pipeline.pulled
    with pytest.raises(ValueError, match=f"already listens on http://127.0.0.1:{port}/metrics"):
        grafana(prometheus_port=free_port())


# --------------------------------------------------------------------------------------------
# A process serving call after call


@pytest.mark.slow
async def test_ten_thousand_calls_leave_the_endpoint_size_flat(port):
    """What a scrape returns depends on the calls in progress, not on the calls served.

    The calls run through the exporter objects' call lifecycle without pipelines (as in
    test_otlp_export.py's 10,000 calls); a reader scrapes after every 200.
    """
    batch = [metric(TTSUsageMetricsData, processor="CartesiaTTSService#1", value=40)]
    sizes = {}
    grafana()  # the endpoint, before the first call

    def retained() -> int:
        gc.collect()
        return sum(isinstance(o, CallMeters) for o in gc.get_objects())

    for done in range(200, 10_001, 200):
        await _run_calls_without_pipelines(200, batch)
        for _ in range(3):
            body = await asyncio.to_thread(lambda: get(port)[1])
        if done in (1_000, 10_000):
            sizes[done] = (len(body.encode()), retained())
    (pipeline,) = export.pipelines()
    assert pipeline.calls.unread(SCRAPE) == []
    (bytes_1k, objects_1k), (bytes_10k, objects_10k) = sizes[1_000], sizes[10_000]
    print(f"/metrics after 1,000 calls: {bytes_1k} B; after 10,000: {bytes_10k} B")
    assert math.isclose(bytes_10k, bytes_1k, rel_tol=0.01)
    assert objects_10k <= objects_1k + 2
    found = samples(body)
    assert total(found, m.CALLS.prometheus_name) == 10_000
    # Every call's series went; the fleet's carry no usage with the call_id label on.
    assert not [name for name, _ in found if name == m.TTS_CHARACTERS.prometheus_name]
