"""The shipped fleet gateway (deploy/fleet/): its configs cover the contract, its script is safe.

The stream-aggregation config must give every instrument of ``instruments.py`` exactly one
rule with the output that keeps its meaning (the gateway drops what no rule matches); the
Adaptive Metrics rules and the Alloy config cannot run here, so their shape is checked
against the same contract. ``run-vmagent.sh`` must refuse to start without its remote-write
URL, and must keep secrets off vmagent's command line.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import yaml

from pipecat_grafana import instruments as m
from tests.backends import REPO_ROOT, require_tools
from tests.fleet import AGGREGATION_CONFIG, PER_PROCESS_LABELS

FLEET = REPO_ROOT / "deploy" / "fleet"
SCRIPT = FLEET / "run-vmagent.sh"
ADAPTIVE_RULES = FLEET / "adaptive-metrics-rules.json"
ALLOY_CONFIG = FLEET / "config.alloy"

GAUGE_OUTPUTS = {
    m.CALLS_ACTIVE: "sum_samples",  # calls in progress add up across processes
    m.STARTUP: "max",  # the slowest start in the fleet
    m.EXPORT_AGE: "max",  # the process that waited longest
}


ADAPTIVE_GAUGE = {"sum_samples": "sum", "max": "max"}
"""The Adaptive Metrics aggregation that matches each vmagent output of a gauge."""


def _stored_names(spec: m.InstrumentSpec) -> list[str]:
    if spec.kind is m.Kind.HISTOGRAM:
        return [spec.prometheus_name + s for s in ("_bucket", "_sum", "_count")]
    return [spec.prometheus_name]


def _matches(rule: dict, name: str) -> bool:
    match = rule["match"]
    if match.startswith("{"):
        (regex,) = re.fullmatch(r'\{__name__=~"(.+)"\}', match).groups()
        return re.fullmatch(regex, name) is not None
    return match == name


def _rules() -> list[dict]:
    return yaml.safe_load(AGGREGATION_CONFIG.read_text())


def test_every_instrument_has_one_rule_with_the_output_that_keeps_its_meaning() -> None:
    rules = _rules()
    for spec in m.ALL:
        for name in _stored_names(spec):
            found = [rule for rule in rules if _matches(rule, name)]
            assert len(found) == 1, (name, found)
            (rule,) = found
            expected = GAUGE_OUTPUTS.get(spec, "total")
            assert spec.kind is not m.Kind.GAUGE or spec in GAUGE_OUTPUTS, spec.name
            assert rule["outputs"] == [expected], name
            assert rule["keep_metric_names"] is True, name
            assert set(rule["without"]) == PER_PROCESS_LABELS, name


def test_a_process_is_remembered_longer_than_its_heartbeat() -> None:
    # A quiet process sends an unchanged series every heartbeat (six export intervals):
    # forgotten sooner, its running total would be counted again as new.
    from pipecat_grafana.config import DEFAULT_EXPORT_INTERVAL_S, DEFAULT_SPARSE_EXPORTS

    heartbeat_s = DEFAULT_EXPORT_INTERVAL_S * DEFAULT_SPARSE_EXPORTS
    for rule in _rules():
        assert _seconds(rule["staleness_interval"]) >= 2 * heartbeat_s, rule["match"]
        if rule["outputs"] != ["total"]:
            # A gauge's window sees every live process's latest value at least once.
            assert _seconds(rule["interval"]) >= 2 * heartbeat_s, rule["match"]


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_the_installed_vmagent_accepts_the_config() -> None:
    vmagent = require_tools("vmagent")["vmagent"]
    done = subprocess.run(
        [vmagent, f"-streamAggr.config={AGGREGATION_CONFIG}", "-dryRun"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _run_script(env: dict[str, str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", SCRIPT],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_script_names_the_missing_remote_write_url() -> None:
    done = _run_script({})
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert "REMOTE_WRITE_URL is not set" in line


def test_the_script_refuses_a_password_without_a_user() -> None:
    done = _run_script(
        {"REMOTE_WRITE_URL": "http://127.0.0.1:1/api/v1/write", "REMOTE_WRITE_PASSWORD": "pw"}
    )
    assert done.returncode != 0
    assert "REMOTE_WRITE_USER" in done.stderr and "pw" not in done.stderr


def test_secrets_stay_off_the_command_line_and_are_removed(tmp_path: Path) -> None:
    vmagent = require_tools("vmagent")["vmagent"]
    secret = "not-a-real-token-8d1f"
    proc = subprocess.Popen(
        ["bash", SCRIPT],
        env={
            "PATH": os.environ["PATH"],
            "VMAGENT": str(vmagent),
            "LISTEN": "127.0.0.1:0",
            "DATA_DIR": str(tmp_path / "queue"),
            "REMOTE_WRITE_URL": "http://127.0.0.1:1/api/v1/write",
            "REMOTE_WRITE_USER": "12345",
            "REMOTE_WRITE_PASSWORD": secret,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cmdline = _vmagent_command_line(proc.pid, str(vmagent))
        assert secret not in " ".join(cmdline)
        (flag,) = [a for a in cmdline if a.startswith("-remoteWrite.basicAuth.passwordFile=")]
        password_file = Path(flag.split("=", 1)[1])
        assert password_file.read_text() == secret
        assert password_file.stat().st_mode & 0o077 == 0
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output[-2000:]
    assert not password_file.exists()
    assert secret not in output


def _vmagent_command_line(pid: int, vmagent: str, timeout: float = 10) -> list[str]:
    """The command line of the script's vmagent child, as ``ps`` shows it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            except FileNotFoundError:
                continue  # a short-lived helper (hostname, mktemp) that has exited
            if cmdline[0] == vmagent:
                return cmdline
        time.sleep(0.05)
    raise AssertionError("the script started no vmagent")


# --------------------------------------------------------------------------------------------
# Adaptive Metrics and Alloy: not runnable here, checked for shape against the contract


def test_adaptive_metrics_rules_cover_every_stored_name() -> None:
    rules = json.loads(ADAPTIVE_RULES.read_text())
    assert isinstance(rules, list)
    by_metric = {}
    for rule in rules:
        assert set(rule) <= {"metric", "match_type", "drop_labels", "aggregations"}, rule
        assert isinstance(rule["metric"], str) and isinstance(rule["drop_labels"], list)
        assert rule["metric"] not in by_metric, rule["metric"]
        by_metric[rule["metric"]] = rule
    for spec in m.ALL:
        for name in _stored_names(spec):
            rule = by_metric.get(name)
            assert rule is not None, name
            assert {"instance", "call_id"} <= set(rule["drop_labels"]), name
            counter = spec.kind in (m.Kind.COUNTER, m.Kind.HISTOGRAM)
            assert rule["aggregations"] == (
                ["sum:counter"] if counter else [ADAPTIVE_GAUGE[GAUGE_OUTPUTS[spec]]]
            ), name


def test_alloy_config_drops_the_per_process_attributes() -> None:
    text = ALLOY_CONFIG.read_text()
    # Balanced braces and quotes: the syntax as far as anything here reads it.
    code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', re.sub(r"//[^\n]*", "", text))
    assert code.count("{") == code.count("}") and code.count("[") == code.count("]")
    for component in (
        "otelcol.receiver.otlp",
        "otelcol.processor.transform",
        "otelcol.processor.deltatocumulative",
        "otelcol.processor.interval",
        "otelcol.exporter.otlphttp",
    ):
        assert f"{component} " in code, component
    for attribute in ("service.instance.id", "call_id"):
        assert attribute in text, attribute
