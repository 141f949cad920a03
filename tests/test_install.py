"""The package works installed at the lowest versions its dependencies declare.

A dependency the package imports but does not declare works only while something else
happens to pull it in; a floor set lower than what the code needs breaks whoever has that
version. So a new virtual environment gets the package with ``uv pip install
--resolution lowest-direct`` (every direct dependency at its floor) from the registry,
and runs the offline call as a user would, with everything on: push to a local OTLP
receiver, traces, the Prometheus endpoint, and SIGTERM mid-call.

It needs ``uv`` (the test extra installs it) and the package registry: without either it
skips locally, saying which, and fails under CI.
"""

import os
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


def floors() -> dict[str, str]:
    """Each direct dependency's declared lower bound, by normalised name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        low = [s.version for s in requirement.specifier if s.operator == ">="]
        bounds[requirement.name.lower().replace("_", "-")] = low[0] if low else ""
    return bounds


@pytest.fixture(scope="module")
def lowest(tmp_path_factory) -> Path:
    """A virtual environment with the package at its dependencies' floors; its bin folder."""
    uv = find_uv()
    venv = tmp_path_factory.mktemp("lowest") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [uv, "pip", "install", "--python", str(python), "--resolution", "lowest-direct", str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    if install.returncode != 0:
        if any(words in install.stderr for words in NETWORK_ERRORS):
            unavailable(f"the package registry cannot be reached: {install.stderr[-500:]}")
        pytest.fail(f"uv could not install at the floors:\n{install.stderr}", pytrace=False)
    listed = subprocess.run(
        [uv, "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    )
    versions = dict(line.split("==", 1) for line in listed.stdout.splitlines() if "==" in line)
    installed = {name.lower().replace("_", "-"): v for name, v in versions.items()}
    # Installed at the floors indeed (where nothing else asks for more).
    assert installed["opentelemetry-sdk"].startswith(floors()["opentelemetry-sdk"])
    assert installed["prometheus-client"].startswith(floors()["prometheus-client"])
    print({name: installed.get(name) for name in floors()})
    return venv / "bin"


def test_the_offline_call_works_at_the_declared_floors(lowest, tmp_path):
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
                cfg.TRACES: "true",
                cfg.PROMETHEUS_PORT: str(port),
            }
        )
        process = subprocess.Popen(
            [lowest / "pipecat-grafana", "demo", "--turns", "2", "--speed", "0.1", "--rounds", "0"],
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
        records = summary_records(receiver)
        started = STARTED.findall(log)
        assert len(started) >= 2 and set(started) <= set(records), (started, records)
        assert "ended" in records.values()
        assert receiver.total(m.SESSION_DURATION.name) == len(started)
        assert {span.name for span in receiver.spans} >= {"conversation", "turn"}
