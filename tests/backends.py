"""Real metrics databases for end-to-end tests, run from .tools/ on 127.0.0.1.

``scripts/install-backends.sh`` puts the binaries into ``.tools/bin``. This module starts
them as throw-away servers (temp data dirs, free loopback ports) and stops them on exit:

    with VictoriaMetrics() as vm:
        push_otlp(vm.otlp_metrics_url)
        vm.flush()
        vm.query("voice_calls_active")

    with PrometheusWithAgent() as prom:     # vmagent (OTLP in) -> Prometheus (remote write)
        push_otlp(prom.otlp_metrics_url)
        prom.wait_for("voice_calls_active")  # vmagent forwards asynchronously
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = "scripts/install-backends.sh"
HOST = "127.0.0.1"


class BackendError(RuntimeError):
    """A backend failed to start, or answered a query with an error."""


# --------------------------------------------------------------------------------------------
# Finding the binaries


def tools_dir() -> Path:
    """The folder ``scripts/install-backends.sh`` installs the binaries into."""
    return REPO_ROOT / ".tools" / "bin"


def find_tool(name: str) -> Path | None:
    """The installed binary ``name`` (e.g. ``"vmagent"``), or None if it is not installed."""
    path = tools_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def require_tools(*names: str) -> dict[str, Path]:
    """Return the paths of the named tools; skip the test (fail it under CI) if any is missing."""
    found = {name: find_tool(name) for name in names}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        msg = (
            f"metrics backend binaries not installed in {tools_dir()}: {', '.join(missing)}; "
            f"run {INSTALL_SCRIPT} to install them"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return {name: path for name, path in found.items() if path is not None}


# --------------------------------------------------------------------------------------------
# Processes and HTTP


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved here, in the parent: the child runs only the call, between fork and exec.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: have the kernel SIGTERM it when the thread that started
    # it dies without running the cleanup (e.g. pytest SIGKILLed), so no server outlives the
    # test run. So start servers from the test's own thread, not from a short-lived one.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body) for any HTTP status; raise OSError if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_post(url: str, body: bytes, content_type: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST ``body``; return (status, response body) for any HTTP status."""
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class _Process:
    """One server process bound to 127.0.0.1, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env  # None: this process's environment
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:  # one attempt's log: see _address_in_use
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Wait until GET ``url`` answers 200; raise with the log's tail if it never does."""
        assert self.proc is not None
        deadline = _time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BackendError(
                    f"{self.name} exited with code {code} during startup; "
                    f"command: {' '.join(self.argv)}\nlog {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(url, timeout=1.0)
                if status == 200:
                    return
            if _time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} not ready at {url} after {timeout:.0f}s\n"
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            _time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _address_in_use(proc: _Process) -> bool:
    return "address already in use" in proc.log_tail(200).lower()


def _start_on_a_free_port(
    name: str,
    argv_for_port: Callable[[int], Sequence[str | os.PathLike[str]]],
    log_path: Path,
    ready_path: str,
    env: Callable[[int], dict[str, str]] | None = None,
) -> tuple[_Process, int]:
    """Start a server on a free port and wait until it answers ``ready_path``.

    Another process can take the port between ``free_port()`` and the server's bind,
    so a server that says its address is in use is tried again on another port.
    """
    for _attempt in range(3):
        port = free_port()
        proc = _Process(name, argv_for_port(port), log_path, env(port) if env else None)
        proc.start()
        try:
            proc.wait_ready(f"http://{HOST}:{port}{ready_path}")
            return proc, port
        except BackendError:
            proc.stop()
            if not _address_in_use(proc):
                raise
    raise BackendError(f"{name}: no free port after 3 attempts")


class _PromQLServer:
    """Shared query helpers for servers with Prometheus' HTTP API under ``base_url``."""

    base_url: str

    @property
    def query_url(self) -> str:
        return f"{self.base_url}/api/v1/query"

    @property
    def query_range_url(self) -> str:
        return f"{self.base_url}/api/v1/query_range"

    def _api(self, url: str, params: dict[str, Any]) -> Any:
        full = f"{url}?{urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})}"
        status, body = http_get(full, timeout=30.0)
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise BackendError(f"HTTP {status} from {full}: {body[:500]!r}") from err
        if status != 200 or payload.get("status") != "success":
            raise BackendError(
                f"query failed (HTTP {status}) {params.get('query')!r}: "
                f"{payload.get('errorType', '')}: {payload.get('error', body[:500])}"
            )
        return payload["data"]

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query at ``time`` (default: now); returns ``data.result``.

        The time is always sent: VictoriaMetrics rounds a missing one down to the whole
        second, which hides samples ingested in the last second.
        """
        if time is None:
            time = _time.time()
        return self._api(self.query_url, {"query": promql, "time": f"{time:.3f}"})["result"]

    def query_range(
        self, promql: str, start: float, end: float, step: float = 15.0
    ) -> list[dict[str, Any]]:
        """Range query; returns ``data.result`` (matrices: ``metric`` + ``values``)."""
        params = {"query": promql, "start": start, "end": end, "step": step}
        return self._api(self.query_range_url, params)["result"]

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """The values of ``label`` on the series ``match`` selects in a time range.

        What Grafana's ``label_values(series, label)`` variables ask a Prometheus data source.
        """
        url = f"{self.base_url}/api/v1/label/{label}/values"
        return self._api(url, {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        """The label sets of the series ``match`` selects in a time range (``/api/v1/series``)."""
        url = f"{self.base_url}/api/v1/series"
        return self._api(url, {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})

    def flush(self) -> None:
        """Make just-ingested data searchable (a no-op unless a subclass needs it)."""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server logs (for failure messages)."""
        return ""

    def wait_for(
        self,
        promql: str,
        timeout: float = 30.0,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        time: float | None = None,
    ) -> list[dict[str, Any]]:
        """Poll ``query(promql)`` until ``predicate(result)`` (default: non-empty); return it.

        Raises AssertionError with the last result after ``timeout`` seconds.
        """
        deadline = _time.monotonic() + timeout
        while True:
            self.flush()
            result = self.query(promql, time=time)
            if predicate(result):
                return result
            if _time.monotonic() > deadline:
                raise AssertionError(
                    f"{promql!r} did not return the expected result within {timeout:.0f}s; "
                    f"last result: {result!r}"
                )
            _time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# VictoriaMetrics (single node), OTLP in, PromQL (MetricsQL) out


class VictoriaMetrics(_PromQLServer):
    """A single-node VictoriaMetrics on 127.0.0.1 with OTLP ingestion and Prometheus naming.

    Attributes (valid inside ``with``): ``port``, ``base_url``, ``otlp_metrics_url``,
    ``query_url``, ``data_dir``, ``log_path``.
    """

    def __init__(self, extra_args: Sequence[str] = (), *, prometheus_naming: bool = True):
        self.binary = require_tools("victoria-metrics")["victoria-metrics"]
        self.extra_args = list(extra_args)
        # Off: VictoriaMetrics as it starts by default, keeping OpenTelemetry's dotted names.
        self.prometheus_naming = prometheus_naming
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: _Process | None = None
        self.port = 0
        self.base_url = ""

    @property
    def otlp_metrics_url(self) -> str:
        return f"{self.base_url}/opentelemetry/v1/metrics"

    @property
    def remote_write_url(self) -> str:
        return f"{self.base_url}/api/v1/write"

    def __enter__(self) -> VictoriaMetrics:
        self._tmp = tempfile.TemporaryDirectory(prefix="vm-e2e-")
        root = Path(self._tmp.name)
        self.data_dir = root / "data"
        self.log_path = root / "victoria-metrics.log"
        try:
            self._proc, self.port = _start_on_a_free_port(
                "victoria-metrics",
                lambda port: [
                    self.binary,
                    f"-httpListenAddr={HOST}:{port}",
                    f"-storageDataPath={self.data_dir}",
                    "-retentionPeriod=1d",  # the minimum VM accepts
                    *(["-opentelemetry.usePrometheusNaming"] if self.prometheus_naming else []),
                    "-search.latencyOffset=0s",
                    "-search.disableCache",
                    *self.extra_args,
                ],
                self.log_path,
                "/health",
            )
            self.base_url = f"http://{HOST}:{self.port}"
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc is not None:
                self._proc.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def flush(self) -> None:
        """Force VM to make recently ingested samples searchable (``/internal/force_flush``)."""
        status, body = http_get(f"{self.base_url}/internal/force_flush", timeout=30.0)
        if status != 200:
            raise BackendError(f"force_flush: HTTP {status}: {body[:300]!r}")

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines) if self._proc else ""


# --------------------------------------------------------------------------------------------
# vmagent (OTLP in) -> Prometheus (remote write receiver)


class PrometheusWithAgent(_PromQLServer):
    """A real Prometheus, fed by a vmagent that accepts OTLP and remote-writes into it.

    Debian's Prometheus builds have no OTLP receiver, so vmagent translates. Attributes
    (valid inside ``with``): ``otlp_metrics_url`` (vmagent's), ``base_url``/``query_url``
    (Prometheus'), ``prometheus_port``, ``vmagent_port``, ``prometheus_log``, ``vmagent_log``.
    """

    def __init__(
        self,
        prometheus_args: Sequence[str] = (),
        vmagent_args: Sequence[str] = (),
        prometheus_config: str = "",
    ):
        tools = require_tools("prometheus", "vmagent")
        self.prometheus_bin = tools["prometheus"]
        self.vmagent_bin = tools["vmagent"]
        self.prometheus_args = list(prometheus_args)
        self.vmagent_args = list(vmagent_args)
        self.prometheus_config = prometheus_config or textwrap.dedent(
            """\
            global:
              evaluation_interval: 1m
            scrape_configs: []
            """
        )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._prometheus: _Process | None = None
        self._vmagent: _Process | None = None
        self.prometheus_port = 0
        self.vmagent_port = 0
        self.base_url = ""

    @property
    def otlp_metrics_url(self) -> str:
        return f"http://{HOST}:{self.vmagent_port}/opentelemetry/v1/metrics"

    @property
    def remote_write_url(self) -> str:
        return f"{self.base_url}/api/v1/write"

    def __enter__(self) -> PrometheusWithAgent:
        self._tmp = tempfile.TemporaryDirectory(prefix="prom-e2e-")
        root = Path(self._tmp.name)
        config = root / "prometheus.yml"
        config.write_text(self.prometheus_config)
        self.prometheus_log = root / "prometheus.log"
        self.vmagent_log = root / "vmagent.log"
        try:
            self._prometheus = self._start(
                "prometheus",
                lambda port: [
                    self.prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    "--storage.tsdb.retention.time=1d",
                    f"--web.listen-address={HOST}:{port}",
                    "--web.enable-remote-write-receiver",
                    f"--web.console.templates={root / 'consoles'}",
                    f"--web.console.libraries={root / 'console_libraries'}",
                    *self.prometheus_args,
                ],
                self.prometheus_log,
                "/-/ready",
            )
            self.base_url = f"http://{HOST}:{self.prometheus_port}"
            self._vmagent = self._start(
                "vmagent",
                lambda port: [
                    self.vmagent_bin,
                    f"-httpListenAddr={HOST}:{port}",
                    f"-remoteWrite.url={self.remote_write_url}",
                    f"-remoteWrite.tmpDataPath={root / 'vmagent-queue'}",
                    "-remoteWrite.flushInterval=100ms",
                    # Prometheus only speaks the Prometheus protocol; skip the probe for VM's.
                    "-remoteWrite.forcePromProto",
                    "-opentelemetry.usePrometheusNaming",
                    *self.vmagent_args,
                ],
                self.vmagent_log,
                "/health",
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(
        self,
        name: str,
        argv_for_port: Callable[[int], Sequence[str | os.PathLike[str]]],
        log_path: Path,
        ready_path: str,
    ) -> _Process:
        proc, port = _start_on_a_free_port(name, argv_for_port, log_path, ready_path)
        if name == "prometheus":
            self.prometheus_port = port
        else:
            self.vmagent_port = port
        return proc

    def __exit__(self, *exc: object) -> None:
        try:
            # vmagent first: it is Prometheus' client.
            for proc in (self._vmagent, self._prometheus):
                if proc is not None:
                    proc.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for proc in (self._vmagent, self._prometheus):
            if proc is not None:
                parts.append(f"--- {proc.name} ---\n{proc.log_tail(lines)}")
        return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Prometheus scraping targets (no OTLP anywhere)


class ScrapingPrometheus(_PromQLServer):
    """A real Prometheus that scrapes what ``prometheus_config`` says, nothing pushed into it.

    Attributes (valid inside ``with``): ``port``, ``base_url``, ``query_url``, ``log_path``.
    """

    def __init__(self, prometheus_config: str, extra_args: Sequence[str] = ()):
        self.binary = require_tools("prometheus")["prometheus"]
        self.prometheus_config = prometheus_config
        self.extra_args = list(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: _Process | None = None
        self.port = 0
        self.base_url = ""

    def __enter__(self) -> ScrapingPrometheus:
        self._tmp = tempfile.TemporaryDirectory(prefix="prom-scrape-e2e-")
        root = Path(self._tmp.name)
        config = root / "prometheus.yml"
        config.write_text(self.prometheus_config)
        self.log_path = root / "prometheus.log"
        try:
            self._proc, self.port = _start_on_a_free_port(
                "prometheus",
                lambda port: [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    "--storage.tsdb.retention.time=1d",
                    f"--web.listen-address={HOST}:{port}",
                    f"--web.console.templates={root / 'consoles'}",
                    f"--web.console.libraries={root / 'console_libraries'}",
                    *self.extra_args,
                ],
                self.log_path,
                "/-/ready",
            )
            self.base_url = f"http://{HOST}:{self.port}"
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc is not None:
                self._proc.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, with ``lastScrape`` and ``health``."""
        status, body = http_get(f"{self.base_url}/api/v1/targets?state=active", timeout=10.0)
        if status != 200:
            raise BackendError(f"targets: HTTP {status}: {body[:300]!r}")
        return json.loads(body)["data"]["activeTargets"]

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines) if self._proc else ""


# --------------------------------------------------------------------------------------------
# The fleet gateway (deploy/fleet/run-vmagent.sh): vmagent with stream aggregation


class FleetGateway:
    """The shipped gateway script, run with the installed vmagent, writing to ``remote_write_url``.

    Attributes (valid inside ``with``): ``port``, ``otlp_endpoint`` (what a bot's
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set to), ``log_path``.
    """

    SCRIPT = REPO_ROOT / "deploy" / "fleet" / "run-vmagent.sh"

    def __init__(
        self,
        remote_write_url: str,
        *,
        aggregation_config: Path | None = None,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.vmagent = require_tools("vmagent")["vmagent"]
        self.remote_write_url = remote_write_url
        self.aggregation_config = aggregation_config
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: _Process | None = None
        self.port = 0

    @property
    def otlp_endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/opentelemetry"

    @property
    def metrics_url(self) -> str:
        """vmagent's own metrics (``vmagent_*``)."""
        return f"http://{HOST}:{self.port}/metrics"

    def __enter__(self) -> FleetGateway:
        self._tmp = tempfile.TemporaryDirectory(prefix="fleet-gateway-")
        root = Path(self._tmp.name)
        self.log_path = root / "gateway.log"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "VMAGENT": str(self.vmagent),
            "REMOTE_WRITE_URL": self.remote_write_url,
            "DATA_DIR": str(root / "queue"),
            **(
                {"AGGREGATION_CONFIG": str(self.aggregation_config)}
                if self.aggregation_config
                else {}
            ),
            **self.env,
        }

        try:
            # The script's whole environment: nothing of the test's leaks in.
            self._proc, self.port = _start_on_a_free_port(
                "fleet gateway",
                lambda port: ["bash", self.SCRIPT, *self.extra_args],
                self.log_path,
                "/health",
                env=lambda port: {**env, "LISTEN": f"{HOST}:{port}"},
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._proc is not None:
                self._proc.stop()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines) if self._proc else ""
