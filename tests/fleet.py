"""One-call bot processes, with and without the fleet gateway, and what the store keeps.

Shared by tests/test_fleet.py and benchmarks/bench.py. ``run_processes`` starts fresh
``pipecat-grafana demo --calls 1`` processes (``tests/fleet_call.py``, which also writes each
call's summary) against an OTLP endpoint, a few at a time; ``StoreFigures`` reads what a
VictoriaMetrics then holds: its series and the bytes and samples it received.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipecat_grafana.summary import CallSummary
from tests.backends import REPO_ROOT, VictoriaMetrics, http_get

AGGREGATION_CONFIG = REPO_ROOT / "deploy" / "fleet" / "stream-aggregation.yml"
PER_PROCESS_LABELS = frozenset({"service_instance_id", "instance", "call_id"})
"""The labels that name one process or one call, however the backend spells them."""
PROCESS_TIMEOUT_S = 120
_DURATION = re.compile(r"^(\s*(?:dedup_|staleness_)?interval:\s*)(\d+)([smh])\s*$", re.M)
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def scaled_config(factor: int, source: Path = AGGREGATION_CONFIG) -> str:
    """The shipped aggregation config with every interval ``factor`` times shorter.

    A test cannot wait minutes for an aggregation interval; its bots export ``factor``
    times more often too, so the config keeps its proportions (a window still sees every
    process's heartbeat). Nothing else of the config changes.
    """
    text = source.read_text()

    def shorter(match: re.Match[str]) -> str:
        seconds = int(match[2]) * _SECONDS[match[3]]
        if seconds % factor:
            raise ValueError(f"{match[0].strip()} is not a whole number of seconds / {factor}")
        return f"{match[1]}{seconds // factor}s"

    scaled, count = _DURATION.subn(shorter, text)
    if not count:
        raise ValueError(f"no interval found in {source}")
    return scaled


def bot_environment(endpoint: str, **settings: str) -> dict[str, str]:
    """A bot's environment: none of this one's export settings, OTLP to ``endpoint``.

    Classic histograms (vmagent keeps no native ones), and no summary records (vmagent
    takes metrics only; the summaries are read from the processes' own output).
    """
    ours = ("OTEL_", "PIPECAT_", "GRAFANA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        PIPECAT_GRAFANA_HISTOGRAMS="classic",
        PIPECAT_GRAFANA_LOGS="false",
        **settings,
    )
    return env


def run_processes(
    env: dict[str, str],
    count: int,
    out_dir: Path,
    *,
    seed: int,
    at_once: int,
    demo_args: tuple[str, ...] = (),
) -> list[CallSummary]:
    """Run ``count`` one-call processes, ``at_once`` at a time; return their call summaries.

    Every process runs the same script (``seed``), so each reports the same label values
    and the series a store keeps depend only on how it aggregates, not on chance.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries: list[CallSummary] = []
    running: list[tuple[subprocess.Popen[bytes], Path, float]] = []
    started = 0

    def reap(proc: subprocess.Popen[bytes], out: Path, began: float) -> None:
        timeout = max(1.0, PROCESS_TIMEOUT_S - (time.monotonic() - began))
        status = proc.wait(timeout=timeout)
        log = out.with_suffix(".log")
        if status != 0:
            raise RuntimeError(f"bot process exited {status}:\n{log.read_text()[-3000:]}")
        summaries.extend(CallSummary.model_validate(s) for s in json.loads(out.read_text()))

    while started < count or running:
        while started < count and len(running) < at_once:
            out = out_dir / f"call-{len(list(out_dir.glob('call-*.json')))}-{started}.json"
            out.touch()
            command = [
                sys.executable,
                "-m",
                "tests.fleet_call",
                str(out),
                "--seed",
                str(seed),
                *demo_args,
            ]
            with open(out.with_suffix(".log"), "wb") as log:
                proc = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            running.append((proc, out, time.monotonic()))
            started += 1
        reap(*running.pop(0))
    return summaries


@dataclass(frozen=True)
class StoreFigures:
    """What a VictoriaMetrics received and keeps, read from its own API and ``/metrics``."""

    series: frozenset[frozenset[tuple[str, str]]]
    """Every stored series, as its label set (``__name__`` included)."""
    bytes_received: float
    """Bytes its HTTP listener read (requests of every kind: writes, and a few queries)."""
    samples: float
    """Samples it stored."""

    @classmethod
    def read(cls, vm: VictoriaMetrics, start: float) -> StoreFigures:
        """Read the store's figures now, its series since ``start`` (Unix seconds)."""
        vm.flush()
        series = vm.series('{__name__=~".+"}', start, time.time())
        counters = _counters(vm)
        return cls(
            series=frozenset(frozenset(s.items()) for s in series),
            bytes_received=counters["bytes"],
            samples=counters["samples"],
        )

    def labels(self) -> set[str]:
        """Every label name any stored series has."""
        return {name for series in self.series for name, _ in series}


def _counters(vm: VictoriaMetrics) -> dict[str, float]:
    status, body = http_get(f"{vm.base_url}/metrics", timeout=10.0)
    if status != 200:
        raise RuntimeError(f"{vm.base_url}/metrics: HTTP {status}")
    found = {"bytes": 0.0, "samples": 0.0}
    for line in body.decode().splitlines():
        if line.startswith('vm_tcplistener_read_bytes_total{name="http"'):
            found["bytes"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vm_rows_added_to_storage_total "):
            found["samples"] += float(line.rsplit(" ", 1)[1])
    return found


@dataclass(frozen=True)
class FleetFigures:
    """What the store keeps of ``processes`` one-call processes, with or without the gateway."""

    processes: int
    gateway: bool
    series: int
    """Series stored."""
    bytes_per_minute: float
    """Without the gateway: bytes the processes' OTLP requests brought the store (per minute
    when that many calls start each minute). With it: bytes of the gateway's remote write per
    minute at the shipped 1-minute interval, measured over scaled intervals."""


def measure_fleet(
    processes: int, *, gateway: bool, work_dir: Path, at_once: int = 4, scale: int = 10
) -> FleetFigures:
    """Run ``processes`` one-call processes into a fresh VictoriaMetrics, directly or through
    the shipped gateway (its intervals ``scale`` times shorter), and read what it keeps."""
    from tests.backends import FleetGateway

    demo_args = ("--turns", "2", "--speed", "0.2")
    with VictoriaMetrics() as vm:
        start = time.time()
        if not gateway:
            env = bot_environment(vm.base_url + "/opentelemetry")
            before = StoreFigures.read(vm, start)
            run_processes(env, processes, work_dir, seed=7, at_once=at_once, demo_args=demo_args)
            vm.wait_for(f"sum(voice_calls_ended_total) == {processes}", timeout=60)
            after = StoreFigures.read(vm, start)
            return FleetFigures(
                processes, False, len(after.series), after.bytes_received - before.bytes_received
            )
        config = work_dir / "stream-aggregation.yml"
        work_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(scaled_config(scale))
        with FleetGateway(
            vm.remote_write_url,
            aggregation_config=config,
            extra_args=["-remoteWrite.flushInterval=100ms"],
        ) as gw:
            env = bot_environment(gw.otlp_endpoint, OTEL_METRIC_EXPORT_INTERVAL=str(1000))
            run_processes(env, processes, work_dir, seed=7, at_once=at_once, demo_args=demo_args)
            vm.wait_for(f"sum(voice_calls_ended_total) == {processes}", timeout=60)
            # Two of the scaled gauge windows: four counter flushes, two gauge flushes.
            window_s = 2 * 120 / scale
            first = StoreFigures.read(vm, start)
            time.sleep(window_s)
            second = StoreFigures.read(vm, start)
            per_minute = (second.bytes_received - first.bytes_received) / (window_s * scale / 60)
            return FleetFigures(processes, True, len(second.series), per_minute)
