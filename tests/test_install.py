"""The package works installed at its dependencies' floors and at their newest releases.

A dependency the package imports but does not declare works only while something else
happens to pull it in; a floor set lower than what the code needs breaks whoever has that
version; a release newer than the one developed on may rename what the code uses. So a new
virtual environment gets the package from the registry with ``uv pip install
--resolution lowest-direct`` (every direct dependency at its floor: OpenTelemetry at the
lowest release the package admits) or ``--resolution highest`` (the newest releases it
admits), and runs the offline call as a user would, with everything on: push to a local
OTLP receiver with native or with classic histograms, logs, traces, the Prometheus
endpoint, and SIGTERM mid-call. ``-k floor`` or ``-k newest`` runs one of the two.

It needs ``uv`` (the test extra installs it) and the package registry: without either it
skips locally, saying which, and fails under CI.
"""

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from tests.backends import free_port
from tests.otlp_receiver import OtlpReceiver
from tests.test_sigterm import STARTED, summary_records

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 150
RUN_TIMEOUT_S = 90
# uv's words when the registry cannot be reached (as opposed to a resolution that fails).
NETWORK_ERRORS = ("Failed to fetch", "error sending request", "dns error", "timed out")
# What uv resolves each direct dependency to: its floor, or the newest release admitted.
RESOLUTIONS = {"floor": "lowest-direct", "newest": "highest"}
# The OpenTelemetry packages the package declares; one release of each goes together.
OPENTELEMETRY = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
HISTOGRAMS = {spec.name: spec for spec in m.ALL if spec.kind is m.Kind.HISTOGRAM}
# The OTLP data kind each histogram form arrives as.
KIND = {cfg.NATIVE: "exponential_histogram", cfg.CLASSIC: "histogram"}


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def find_uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            unavailable("uv is not installed: pip install -e '.[test]' installs it")
        return found
    return find_uv_bin()


def normalised(name: str) -> str:
    return name.lower().replace("_", "-")


def floors() -> dict[str, str]:
    """Each direct dependency's declared lower bound, by normalised name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        low = [s.version for s in requirement.specifier if s.operator == ">="]
        bounds[normalised(requirement.name)] = low[0] if low else ""
    return bounds


@dataclass(frozen=True)
class Installed:
    """A virtual environment with the package installed: its bin folder and what it holds."""

    bin: Path
    versions: dict[str, Version]


@pytest.fixture(scope="module", params=list(RESOLUTIONS))
def installed(request, tmp_path_factory) -> Installed:
    """The package in a new virtual environment, its dependencies at their floors or newest."""
    uv = find_uv()
    venv = tmp_path_factory.mktemp(request.param) / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # uv's own cache (reused from one run to the next) keeps a repeated install offline-fast.
    resolution = RESOLUTIONS[request.param]
    install = subprocess.run(
        [uv, "pip", "install", "--python", str(python), "--resolution", resolution, str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if install.returncode != 0:
        if any(words in install.stderr for words in NETWORK_ERRORS):
            unavailable(f"the package registry cannot be reached: {install.stderr[-500:]}")
        pytest.fail(f"uv could not install ({resolution}):\n{install.stderr}", pytrace=False)
    listed = subprocess.run(
        [uv, "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    )
    pairs = (line.split("==", 1) for line in listed.stdout.splitlines() if "==" in line)
    versions = {normalised(name): Version(version) for name, version in pairs}
    print(request.param, {name: str(versions.get(name)) for name in floors()})
    # One OpenTelemetry release throughout (the exporter pins the SDK's minor version).
    assert len({versions[name] for name in OPENTELEMETRY}) == 1, versions
    if request.param == "floor":
        # Installed at the floors indeed (where nothing else asks for more).
        for name in (*OPENTELEMETRY, "prometheus-client"):
            assert versions[name] == Version(floors()[name]), name
    else:
        # At least as new as what the rest of the suite runs on.
        for name in OPENTELEMETRY:
            assert versions[name] >= Version(importlib.metadata.version(name)), name
    return Installed(venv / "bin", versions)


@pytest.mark.parametrize("histograms", [cfg.NATIVE, cfg.CLASSIC])
def test_an_offline_call_arrives_whole(installed, histograms, tmp_path):
    port = free_port()
    with OtlpReceiver() as receiver:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "PIPECAT_", "GRAFANA_"))
        }
        env.update(
            {
                cfg.OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
                cfg.OTEL_METRIC_EXPORT_INTERVAL: "200",
                cfg.HISTOGRAMS: histograms,
                cfg.TRACES: "true",
                cfg.PROMETHEUS_PORT: str(port),
            }
        )
        demo = ["demo", "--turns", "2", "--speed", "0.1", "--rounds", "0"]
        process = subprocess.Popen(
            [installed.bin / "pipecat-grafana", *demo],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # One whole call ended and the next one started (or the process died).
            receiver.wait_for(
                lambda r: process.poll() is not None or r.total(m.CALLS.name) >= 2,
                RUN_TIMEOUT_S,
            )
            assert process.poll() is None, process.communicate()[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                scraped = answer.read().decode()
            process.send_signal(signal.SIGTERM)
            _, log = process.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

        assert process.returncode == 143, log
        assert "Traceback" not in log
        assert f"{m.CALLS.prometheus_name}{{" in scraped
        # Every call that started has its summary in the logs, and its duration.
        records = summary_records(receiver)
        started = STARTED.findall(log)
        assert len(started) >= 2 and set(started) <= set(records), (started, records)
        assert "ended" in records.values()
        assert receiver.total(m.SESSION_DURATION.name) == len(started)
        # Every histogram in the form asked for, holding each of its measurements.
        points = [p for p in receiver.points() if p.name in HISTOGRAMS]
        assert {m.TTFB.name, m.SESSION_DURATION.name} <= {p.name for p in points}
        assert {p.kind for p in points} == {KIND[histograms]}
        for point in points:
            if histograms == cfg.NATIVE:
                held = sum(point.positive.counts) + sum(point.negative.counts)
                assert held + point.zero_count == point.value, point
            else:
                assert point.explicit_bounds == HISTOGRAMS[point.name].buckets, point.name
                assert sum(point.bucket_counts) == point.value, point
        # Pipecat's spans, and the summary linked to its call's trace.
        spans = receiver.spans
        assert {span.name for span in spans} >= {"conversation", "turn"}
        traces = {span.trace_id for span in spans if span.name == "conversation"}
        linked = {r.trace_id for r in receiver.logs if r.attributes.get("call_id") in started}
        assert linked and linked <= traces, (linked, traces)
