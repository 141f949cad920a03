"""Hostile callers, clients and endpoints: nothing they send stops export or exhausts the bot.

Each test plays the hostile party for real on loopback: a caller whose ID cannot be encoded
or is 10,000 characters long, an endpoint that trickles its answer a byte at a time or
answers with 50 MB, idle connections to the scrape endpoint of a child process whose
descriptors are limited, clients that rotate their user agent, a client scraping in a loop.
"""

import asyncio
import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request

import pytest
from opentelemetry.sdk.resources import Resource
from pipecat.metrics.metrics import TTSUsageMetricsData

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter, scrape
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.config import ExportConfig
from pipecat_grafana.export import ExportPipeline
from pipecat_grafana.labels import MAX_LABEL_LENGTH
from pipecat_grafana.otlp import MAX_BODY_BYTES
from pipecat_grafana.summary import CallSummary
from tests.backends import REPO_ROOT, free_port
from tests.helpers import Reporter, Trigger, metric, run_pipeline
from tests.test_scrape import PROMETHEUS_UA, Served, characters, scrape_once

RESOURCE = Resource({"service.name": "bot", "service.instance.id": "hostile"})
# How long a test waits for something that must end, at most: never reached when it works.
BOUND_S = 20


def grafana(**kwargs) -> GrafanaMetricsExporter:
    return GrafanaMetricsExporter(tts_model="cartesia", **kwargs)


async def call(call_id: str, characters: int = 42, **kwargs) -> CallSummary:
    exporter = grafana(**kwargs)
    reporter = Reporter([[metric(TTSUsageMetricsData, processor="TTS#0", value=characters)]])
    await run_pipeline([reporter, exporter], [Trigger("go")], conversation_id=call_id)
    assert exporter.summary is not None
    return exporter.summary


# --- callers ----------------------------------------------------------------------------


async def test_a_call_id_that_cannot_be_encoded_poisons_nothing(export_to, monkeypatch):
    receiver = export_to
    port = free_port()
    monkeypatch.setenv(cfg.PROMETHEUS_PORT, str(port))
    bad = "room-\ud800"  # what json.loads('"room-\\ud800"') gives
    summaries = [await call(bad)]
    scraped = await asyncio.to_thread(scrape_once, port)  # an HTTP 500 raises here
    summaries += [await call(f"room-{index}") for index in range(5)]
    pipecat_grafana.shutdown(timeout_s=5)
    safe = summaries[0].call_id
    assert safe.startswith("room-?~") and safe.encode("utf-8")
    assert any((m.CALL_ID, safe) in labels for _, labels in scraped)
    records = {r.attributes["call_id"] for r in receiver.logs}
    assert records == {s.call_id for s in summaries}  # every summary, the bad one's too
    labelled = {p.attributes.get(m.CALL_ID) for p in receiver.points(m.TTS_CHARACTERS.name)}
    assert safe in labelled


async def test_a_ten_thousand_character_call_id_is_cut_and_stops_no_other_call(
    export_to, monkeypatch
):
    receiver = export_to
    receiver.refuse_label_values_over(2048)  # as Mimir does
    long = "x" * 10_000
    summaries = [await call(long)] + [await call(f"room-{index}") for index in range(3)]
    pipecat_grafana.shutdown(timeout_s=5)
    cut = summaries[0].call_id
    assert len(cut) == MAX_LABEL_LENGTH and cut.startswith("x" * 100)
    assert receiver.rejected == []
    for summary in summaries:
        assert receiver.total(m.TTS_CHARACTERS.name, call_id=summary.call_id) == 42


# --- endpoints --------------------------------------------------------------------------


class RawServer:
    """A TCP server on loopback that answers every connection with ``answer(connection)``."""

    def __init__(self, answer):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1/metrics"
        self._answer = answer
        self._stop = threading.Event()
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(connection,), daemon=True).start()

    def _one(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(1 << 20)  # the request (small enough to come in one read)
            try:
                self._answer(self, connection)
            except OSError:
                pass  # the client closed it

    def close(self) -> None:
        self._stop.set()
        self._socket.close()


def trickle(server: RawServer, connection: socket.socket) -> None:
    """A byte of a status line every 0.2 s, for as long as the client listens (bounded)."""
    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
        if server._stop.wait(0.2):
            return
        connection.sendall(bytes([byte]))


def huge(status: bytes):
    def answer(server: RawServer, connection: socket.socket) -> None:
        size = 50 * 1024 * 1024
        connection.sendall(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
            b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
        )
        chunk = b"refused: " + b"x" * (64 * 1024 - 9)
        while server.sent < size:
            connection.sendall(chunk)
            server.sent += len(chunk)

    return answer


@pytest.mark.slow
def test_an_endpoint_that_trickles_its_answer_cannot_stop_export(log_lines):
    server = RawServer(trickle)
    pipeline = ExportPipeline(
        ExportConfig(endpoint=server.url, export_interval_s=3600, export_timeout_s=1.0),
        RESOURCE,
    )
    results: list[bool] = []
    try:
        exporting = threading.Thread(target=lambda: results.append(pipeline.export()))
        exporting.start()
        exporting.join(BOUND_S)
        assert not exporting.is_alive(), "an export waited on a trickling endpoint for ever"
        assert results == [False]
        failing = [line for line in log_lines if "metrics export failing" in line]
        assert len(failing) == 1 and "no answer within" in failing[0], failing
    finally:
        server.close()
        pipeline.shutdown(1)


@pytest.mark.parametrize("status", [b"400 Bad Request", b"200 OK"])
def test_a_50_mb_answer_is_never_read_whole(status):
    server = RawServer(huge(status))
    pipeline = ExportPipeline(
        ExportConfig(endpoint=server.url, export_interval_s=3600, export_timeout_s=10.0),
        RESOURCE,
    )
    try:
        pipeline.export()
        outcome = pipeline._failures.last
        assert outcome is not None and outcome.status == int(status[:3])
        assert len(outcome.detail) <= 500
        # The client stopped reading after its bound: the server could not send it all.
        assert server.sent < 50 * 1024 * 1024, server.sent
        assert MAX_BODY_BYTES <= 64 * 1024
    finally:
        server.close()
        pipeline.shutdown(1)


# --- scrape clients -----------------------------------------------------------------------

BOT = textwrap.dedent(
    """
    import asyncio, sys
    from pipecat.metrics.metrics import TTSUsageMetricsData
    import pipecat_grafana
    from pipecat_grafana import GrafanaMetricsExporter
    from tests.helpers import Reporter, Trigger, metric, run_pipeline

    async def call(call_id):
        exporter = GrafanaMetricsExporter(tts_model="cartesia")
        reporter = Reporter([[metric(TTSUsageMetricsData, processor="TTS#0", value=42)]])
        await run_pipeline([reporter, exporter], [Trigger("go")], conversation_id=call_id)

    asyncio.run(call("before"))
    print("READY", flush=True)
    sys.stdin.readline()  # the test holds idle connections meanwhile
    asyncio.run(call("after"))
    print("DONE", flush=True)
    """
)


@pytest.mark.slow
def test_idle_connections_cannot_exhaust_a_bot_with_few_descriptors(receiver):
    port = free_port()
    limit = 128

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PIPECAT_"))},
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        cfg.PROMETHEUS_PORT: str(port),
        cfg.FLUSH_TIMEOUT: "5",
    }
    bot = subprocess.Popen(
        [sys.executable, "-c", BOT],
        cwd=REPO_ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=few_descriptors,
    )
    idle: list[socket.socket] = []
    try:
        assert bot.stdout.readline().strip() == "READY"
        for _ in range(limit * 2):  # twice as many as the bot may open
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # A scrape still answers, with the idle connections held.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"User-Agent": PROMETHEUS_UA}
        )
        with urllib.request.urlopen(request, timeout=BOUND_S) as response:
            assert response.status == 200
        threads = int(
            next(
                line.split()[1]
                for line in open(f"/proc/{bot.pid}/status")
                if line.startswith("Threads:")
            )
        )
        descriptors = len(os.listdir(f"/proc/{bot.pid}/fd"))
        assert threads < 40, threads
        assert descriptors < limit, descriptors
        # And the push goes on: the next call's final metrics arrive.
        bot.stdin.write("go\n")
        bot.stdin.flush()
        assert bot.stdout.readline().strip() == "DONE"
        bot.wait(BOUND_S)
        assert bot.returncode == 0
        assert receiver.total(m.TTS_CHARACTERS.name, call_id="after") == 42
    finally:
        for connection in idle:
            connection.close()
        if bot.poll() is None:
            bot.kill()
            bot.wait()


def test_rotating_user_agents_cannot_push_prometheus_out(monkeypatch):
    monkeypatch.setattr(scrape, "MIN_RENDER_GAP_S", 0.0)  # every scrape renders: the readers
    served = Served()
    try:
        served.scrape(1000.0)  # Prometheus, every 15 s
        served.scrape(1015.0)
        call = served.call("short", characters=40)
        seen = [characters(served.scrape(1030.0), "short")]
        served.pipeline.close_call(call)
        for agent in range(20):  # between its scrapes, 20 clients each claiming to be new
            served.scrape(1031.0 + agent * 0.1, agent=f"curl/{agent}")
        seen += [characters(served.scrape(at), "short") for at in (1045.0, 1060.0, 1075.0)]
        # Prometheus kept its interval: it saw the call at zero, then its final value.
        assert seen[:2] == [0, 40], seen
        assert seen[-1] is None  # and then it went
    finally:
        served.close()


def test_a_client_scraping_in_a_loop_costs_ten_renders_a_second_at_most():
    served = Served()
    renders: list[float] = []
    collect = served.collector.collect

    def counted():
        renders.append(served.clock.now)
        yield from collect()

    served.collector.collect = counted
    served.call("busy")
    served.scrape(1000.0)  # its new series at zero, once
    served.clock.now = 1001.0
    answered = []
    seconds = 1.0
    try:
        stop = threading.Event()

        def loop(agent: int) -> None:
            while not stop.is_set():
                scrape_once(served.port, agent=f"loop/{agent}")
                answered.append(agent)

        clients = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(8)]
        for client in clients:
            client.start()
        stop.wait(seconds)
        stop.set()
        for client in clients:
            client.join(BOUND_S)
        # One render a tenth of a second, and the first one (which serves the new series at
        # zero, so it is not served again).
        assert len(renders) <= seconds / scrape.MIN_RENDER_GAP_S + 3, len(renders)
        assert len(answered) > 2 * len(renders), (len(answered), len(renders))
    finally:
        served.close()


def test_a_server_errors_reply_is_quoted_bounded(log_lines):
    def overloaded(server: RawServer, connection: socket.socket) -> None:
        body = b"ingester overloaded: " + b"x" * 2000
        connection.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    server = RawServer(overloaded)
    pipeline = ExportPipeline(
        ExportConfig(endpoint=server.url, export_interval_s=3600, export_timeout_s=1.0),
        RESOURCE,
    )
    try:
        assert not pipeline.export()
        (failing,) = [line for line in log_lines if "metrics export failing" in line]
        assert "server error (500" in failing and "ingester overloaded" in failing
        assert "x" * 600 not in failing  # the reply is quoted, not copied whole
    finally:
        server.close()
        pipeline.shutdown(1)
