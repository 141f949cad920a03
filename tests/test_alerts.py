"""The alert rules: built from the contract, valid for promtool, and firing when they should.

``promtool test rules`` runs each alert against synthetic series (built here from the
instrument constants) and checks that it fires, with its labels and rendered annotations,
and that it stays quiet otherwise. The end-to-end test runs the same expressions against real
databases fed by the exporter.
"""

import math
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pipecat_grafana import cli
from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts
from tests.backends import require_tools

# --------------------------------------------------------------------------------------------
# The rule file


def test_shipped_rule_file_is_the_generated_one():
    assert alerts.SHIPPED_RULES.read_text() == alerts.rules_yaml(), (
        "pipecat_grafana/grafana/ is stale: run "
        f"`pipecat-grafana alerts --out {alerts.SHIPPED_RULES.relative_to(Path.cwd())}`"
    )


def test_the_rule_file_the_command_and_the_readme_give_one_import_path(capsys):
    # Grafana 12/13: Alerting > Alert rules > Import to Grafana-managed rules, from a file.
    docs = Path(__file__).parents[1] / "docs" / "dashboard.md"  # the README links there
    readme = " ".join(docs.read_text().split())
    with pytest.raises(SystemExit):
        cli.main(["alerts", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    header = " ".join(
        line.removeprefix("#").strip()
        for line in alerts.SHIPPED_RULES.read_text().splitlines()
        if line.startswith("#")
    )
    for where, text in (
        ("docs/dashboard.md", readme),
        ("alerts --help", help_text),
        ("header", header),
    ):
        assert alerts.IMPORT_PATH in text, where
        # No other way to the same screen is given anywhere.
        for other in ("More > Import", "More → Import", "Alert rules > Import (", "Import to GMA"):
            assert other not in text, (where, other)


def test_every_rule_has_a_for_a_severity_and_annotations():
    (group,) = alerts.build_rules()["groups"]
    assert group["name"] == alerts.GROUP_NAME
    assert [rule["alert"] for rule in group["rules"]] == [r.name for r in alerts.alert_rules()]
    for rule in group["rules"]:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert set(rule["annotations"]) == {"summary", "description"}, rule
        assert all(text.strip() for text in rule["annotations"].values()), rule


def test_expressions_use_only_the_contracts_metrics():
    known = {spec.prometheus_name for spec in m.ALL}
    known |= {
        f"{spec.prometheus_name}{suffix}"
        for spec in m.ALL
        if spec.kind is m.Kind.HISTOGRAM
        for suffix in ("_bucket", "_sum", "_count")
    }
    for rule in alerts.alert_rules():
        names = set(re.findall(r"\b(?:voice|pipecat_grafana)_\w+", rule.expr))
        assert names, rule.expr
        assert names <= known, (rule.name, names - known)


def test_levels_are_parameters_with_the_seed_defaults():
    assert alerts.DEFAULT_TTFB_P95_MS == 2000  # the production alert table's "> 2000 ms for 5m"
    rules = {r.name: r for r in alerts.alert_rules(budget_usd_per_hour=5, ttfb_p95_ms=1500)}
    assert rules["VoiceBotCostOverBudget"].expr.endswith(" > 5")
    assert rules["VoiceBotTTFBHigh"].expr.endswith(" > 1500")
    assert rules["VoiceBotTTFBHigh"].for_ == "5m"
    assert "budget_usd_per_hour=5" in alerts.rules_yaml(budget_usd_per_hour=5)


def test_conversation_alerts_follow_the_seeds_alert_table():
    # Seed 001: TimeToFirstAudioSlow p95 > 2000ms for 5m (warning), a TTS's error rate
    # > 10/min for 3m (warning), rate limits > 5/min for 2m (warning), > 20/min for 1m
    # (critical).
    defaults = {r.name: r for r in alerts.alert_rules()}
    expected = {
        "VoiceBotTurnLatencyHigh": (2000, "5m", "warning"),
        "VoiceBotErrorRateHigh": (10, "3m", "warning"),
        "VoiceBotRateLimited": (5, "2m", "warning"),
        "VoiceBotRateLimitBurst": (20, "1m", "critical"),
    }
    for name, (threshold, for_, severity) in expected.items():
        rule = defaults[name]
        assert (rule.threshold, rule.for_, rule.severity) == (threshold, for_, severity), name
    assert m.TURN_LATENCY.prometheus_name in defaults["VoiceBotTurnLatencyHigh"].expr
    for name in ("VoiceBotRateLimited", "VoiceBotRateLimitBurst"):
        assert 'error_type="rate_limit"' in defaults[name].expr
    assert "error_type" not in defaults["VoiceBotErrorRateHigh"].expr
    levels = {
        "turn_latency_p95_ms": 1500,
        "errors_per_minute": 3,
        "rate_limits_per_minute": 2,
        "rate_limit_burst_per_minute": 8,
    }
    rules = {r.name: r for r in alerts.alert_rules(**levels)}
    for name, level in zip(expected, levels.values(), strict=True):
        assert rules[name].expr.endswith(f" > {level}"), name


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_a_level_that_is_not_a_positive_number_is_refused(bad):
    with pytest.raises(ValueError, match="budget_usd_per_hour"):
        alerts.alert_rules(budget_usd_per_hour=bad)


def test_namespace_is_added_for_mimirtool_only_when_asked():
    plain = yaml.safe_load(alerts.rules_yaml())
    assert "namespace" not in plain
    namespaced = yaml.safe_load(alerts.rules_yaml(namespace="voice-bot"))
    assert namespaced == {"namespace": "voice-bot", **plain}


# --------------------------------------------------------------------------------------------
# The command


def test_alerts_command_prints_the_rules(capsys):
    assert cli.main(["alerts"]) == 0
    assert capsys.readouterr().out == alerts.rules_yaml()


def test_alerts_command_writes_the_file_with_levels(tmp_path, capsys):
    out = tmp_path / "rules.yml"
    assert cli.main(["alerts", "--out", str(out), "--budget-usd-per-hour", "5"]) == 0
    assert out.read_text() == alerts.rules_yaml(budget_usd_per_hour=5)
    assert capsys.readouterr().out == ""


def test_alerts_command_takes_the_conversation_levels(capsys):
    args = ["--turn-latency-p95-ms", "1500", "--errors-per-minute", "3"]
    args += ["--rate-limits-per-minute", "2", "--rate-limit-burst-per-minute", "8"]
    assert cli.main(["alerts", *args]) == 0
    assert capsys.readouterr().out == alerts.rules_yaml(
        turn_latency_p95_ms=1500,
        errors_per_minute=3,
        rate_limits_per_minute=2,
        rate_limit_burst_per_minute=8,
    )


def test_alerts_command_refuses_a_bad_budget(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["alerts", "--budget-usd-per-hour", "-1"])
    assert exit_info.value.code == 2
    assert "positive" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# promtool


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    promtool = require_tools("promtool")["promtool"]
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_promtool_checks_the_shipped_rules(tmp_path):
    result = _promtool("check", "rules", str(alerts.SHIPPED_RULES), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.alert_rules())} rules found" in result.stdout


def test_promtool_checks_rules_with_other_levels(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(alerts.rules_yaml(budget_usd_per_hour=2.5, silence_minutes=0.5))
    result = _promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _series(spec: m.InstrumentSpec, suffix: str = "", **labels: str) -> str:
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{spec.prometheus_name}{suffix}{{{inner}}}"


def _histogram(
    spec: m.InstrumentSpec, per_minute: int, low: float, **labels: str
) -> list[tuple[str, str]]:
    """Input series of a histogram observing ``per_minute`` values a minute, all above ``low``
    and at most the next bucket boundary."""
    series = []
    for le in [*spec.buckets, math.inf]:
        step = per_minute if le > low else 0
        le_text = "+Inf" if le == math.inf else f"{le:g}"
        series.append((_series(spec, "_bucket", **labels, le=le_text), f"0+{step}x30"))
    series.append((_series(spec, "_count", **labels), f"0+{per_minute}x30"))
    return series


def _render(template: str, labels: dict[str, str], value: float) -> str:
    """Render the subset of Prometheus templating the annotations use."""
    number = re.escape('{{ if eq (printf "%T" $value) "float64" }}{{ printf "%.') + r"(\d)"
    number += re.escape('f" $value }}{{ else }}{{ $value }}{{ end }}')
    text = re.sub(number, lambda g: f"{value:.{g[1]}f}", template)
    present = r"\{\{ with \$labels\.(\w+) \}\}\{\{ \. \}\}\{\{ end \}\}"
    text = re.sub(present, lambda g: labels.get(g[1], ""), text)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda g: labels.get(g[1], ""), text)


def _expected(
    rule: alerts.AlertRule, labels: dict[str, str], value: float, summary: str | None = None
) -> dict:
    """What promtool must see fire: ``summary``, when given, is the literal text expected."""
    annotations = {
        "summary": summary if summary is not None else _render(rule.summary, labels, value),
        "description": _render(rule.description, labels, value),
    }
    for text in annotations.values():
        assert not re.search(r"\{\{|\}\}|no value", text), text
    return {"exp_labels": {**labels, "severity": rule.severity}, "exp_annotations": annotations}


RULES = {rule.name: rule for rule in alerts.alert_rules()}
TURN_LATENCY = RULES["VoiceBotTurnLatencyHigh"]
TTFB = RULES["VoiceBotTTFBHigh"]
TTFA = RULES["VoiceBotTimeToFirstAudioHigh"]
ERRORS = RULES["VoiceBotErrorRateHigh"]
RATE_LIMITED = RULES["VoiceBotRateLimited"]
RATE_LIMIT_BURST = RULES["VoiceBotRateLimitBurst"]
MISSING = RULES["VoiceBotMetricsMissing"]
COST = RULES["VoiceBotCostOverBudget"]
GREETING = RULES["VoiceBotGreetingSlow"]
LOOP_LAG = RULES["VoiceBotEventLoopLagHigh"]
EXPORTS_FAILING = RULES["VoiceBotExportsFailing"]


# Error counters are sampled about as often as the exporter exports (every 10 s by default):
# the error alerts' windows are short, and what they see depends on the samples a window holds.
# Every 9 s, so that no sample falls on a window's edge at a whole minute, where Prometheus 2
# (windows closed on the left) and 3 (open) would disagree.
EXPORT_INTERVAL_S = 9


def _errors(
    per_minute: int, processor: str, service_type: str, error_type: str, **labels: str
) -> tuple[str, str]:
    """A counter of one processor's ErrorFrames growing by ``per_minute`` a minute, for 15
    minutes, sampled every ``EXPORT_INTERVAL_S``."""
    labels |= {"processor": processor, "service_type": service_type, "error_type": error_type}
    step = per_minute * EXPORT_INTERVAL_S / 60
    return (
        _series(m.ERRORS, fatal="false", **labels),
        f"0+{step:g}x{15 * 60 // EXPORT_INTERVAL_S}",
    )


def _per_minute_seen(per_minute: float, window_minutes: int, minute: int) -> float:
    """What an error alert sees at ``minute`` of a counter growing by ``per_minute``: the
    increase between the first and last samples of its window, a little short of the window."""
    now, window = minute * 60, window_minutes * 60
    first = max(((now - window) // EXPORT_INTERVAL_S + 1) * EXPORT_INTERVAL_S, 0)
    last = now // EXPORT_INTERVAL_S * EXPORT_INTERVAL_S
    return per_minute * (last - first) / 60 / window_minutes


# A latency histogram whose every observation lies in (2000, 3000] ms has p95
# 2000 + 0.95 * 1000 = 2950 ms; one in (100, 200] has p95 195 ms.
SLOW_P95 = 2950.0


def _quantile_above(spec: m.InstrumentSpec, q: float, low: float) -> float:
    """The ``q`` quantile of a histogram whose every observation lies in the bucket above
    ``low`` (a bucket boundary): interpolated within that bucket."""
    upper = next(le for le in spec.buckets if le > low)
    return low + q * (upper - low)


def _exports(per_minute: float, outcome: str, reason: str, **labels: str) -> tuple[str, str]:
    """A process's export counter of one outcome and reason growing by ``per_minute``, for 15
    minutes, sampled every ``EXPORT_INTERVAL_S``."""
    step = per_minute * EXPORT_INTERVAL_S / 60
    return (
        _series(m.EXPORTS, outcome=outcome, reason=reason, **labels),
        f"0+{step:g}x{15 * 60 // EXPORT_INTERVAL_S}",
    )


# Each case: input series, (minute, alert, expected firing alerts as (labels, value)), and
# optionally the input series' sampling interval (1m otherwise).
CASES = {
    "turn latency: a slow service fires after 5m, a fast one never": (
        [
            *_histogram(m.TURN_LATENCY, 20, 2000, job="slow-bot"),
            *_histogram(m.TURN_LATENCY, 20, 100, job="fast-bot"),
        ],
        [
            (4, TURN_LATENCY, []),
            (10, TURN_LATENCY, [({"job": "slow-bot"}, SLOW_P95)]),
        ],
    ),
    "error rate: summed over a processor's calls and error types, after 3m": (
        [
            # Three calls of a failing TTS, 5 errors a minute each: 15 a minute.
            _errors(5, "BrokenTTS", "tts", "other", job="bot", call_id="c1"),
            _errors(5, "BrokenTTS", "tts", "timeout", job="bot", call_id="c2"),
            _errors(5, "BrokenTTS", "tts", "rate_limit", job="bot", call_id="c3"),
            # A flaky LLM, under the level.
            _errors(4, "FlakyLLM", "llm", "other", job="bot", call_id="c1"),
        ],
        [
            (5, ERRORS, []),  # pending: above the level since minute 4
            (
                10,
                ERRORS,
                [
                    (
                        {"job": "bot", "processor": "BrokenTTS", "service_type": "tts"},
                        _per_minute_seen(15, alerts.ERRORS_WINDOW_MINUTES, 10),
                    )
                ],
            ),
        ],
        f"{EXPORT_INTERVAL_S}s",
    ),
    "rate limits: a burst pages after 1m, a trickle only warns, other errors never": (
        [
            _errors(30, "BusyTTS", "tts", "rate_limit", service_name="bot"),
            _errors(8, "BusyLLM", "llm", "rate_limit", service_name="bot"),
            _errors(40, "NoisySTT", "stt", "other", service_name="bot"),
        ],
        [
            (2, RATE_LIMITED, []),  # pending: the TTS since minute 1, the LLM since 2
            (2, RATE_LIMIT_BURST, []),  # pending: the TTS since minute 2
            (
                3,
                RATE_LIMIT_BURST,
                [
                    (
                        {"service_name": "bot", "processor": "BusyTTS", "service_type": "tts"},
                        _per_minute_seen(30, alerts.RATE_LIMITS_WINDOW_MINUTES, 3),
                    )
                ],
            ),
            (
                10,
                RATE_LIMITED,
                [
                    (
                        {"service_name": "bot", "processor": "BusyLLM", "service_type": "llm"},
                        _per_minute_seen(8, alerts.RATE_LIMITS_WINDOW_MINUTES, 10),
                    ),
                    (
                        {"service_name": "bot", "processor": "BusyTTS", "service_type": "tts"},
                        _per_minute_seen(30, alerts.RATE_LIMITS_WINDOW_MINUTES, 10),
                    ),
                ],
            ),
            (
                10,
                RATE_LIMIT_BURST,
                [
                    (
                        {"service_name": "bot", "processor": "BusyTTS", "service_type": "tts"},
                        _per_minute_seen(30, alerts.RATE_LIMITS_WINDOW_MINUTES, 10),
                    )
                ],
            ),
        ],
        f"{EXPORT_INTERVAL_S}s",
    ),
    "ttfb on Grafana Cloud labels: slow LLM fires after 5m, fast STT never": (
        [
            *_histogram(m.TTFB, 60, 2000, job="voice-rag-bot", processor="SlowLLMService"),
            *_histogram(m.TTFB, 60, 100, job="voice-rag-bot", processor="FastSTTService"),
        ],
        [
            (4, TTFB, []),  # pending: high for less than 5 minutes
            (
                10,
                TTFB,
                [
                    (
                        {"job": "voice-rag-bot", "processor": "SlowLLMService"},
                        SLOW_P95,
                        "voice-rag-bot: SlowLLMService TTFB p95 is 2950 ms",
                    )
                ],
            ),
        ],
    ),
    "ttfb on VictoriaMetrics labels": (
        _histogram(m.TTFB, 60, 2000, service_name="voice-rag-bot", processor="SlowLLMService"),
        [
            (
                10,
                TTFB,
                [
                    (
                        {"service_name": "voice-rag-bot", "processor": "SlowLLMService"},
                        SLOW_P95,
                        "voice-rag-bot: SlowLLMService TTFB p95 is 2950 ms",
                    )
                ],
            )
        ],
    ),
    "ttfa: slow TTS fires, fast TTS never": (
        [
            *_histogram(m.TTFA, 30, 2000, job="bot", processor="SlowTTSService"),
            *_histogram(m.TTFA, 30, 100, job="bot", processor="FastTTSService"),
        ],
        [
            (4, TTFA, []),
            (10, TTFA, [({"job": "bot", "processor": "SlowTTSService"}, SLOW_P95)]),
        ],
    ),
    "metrics missing: only the process that went silent with calls active": (
        [
            # Two calls active, then silence from minute 11 (a crash).
            (_series(m.CALLS_ACTIVE, job="bot", instance="crashed"), "2x10"),
            # Exits cleanly after its calls ended.
            (_series(m.CALLS_ACTIVE, job="bot", instance="stopped"), "1x5 0x5"),
            # Keeps reporting.
            (_series(m.CALLS_ACTIVE, job="bot", instance="alive"), "3x40"),
        ],
        [
            (11, MISSING, []),  # still within the silence window
            (16, MISSING, [({"job": "bot", "instance": "crashed"}, 2)]),
            (27, MISSING, []),  # 15 minutes after its last report: resolved
        ],
    ),
    "metrics missing: the process is named on either backend's labels": (
        [
            (_series(m.CALLS_ACTIVE, job="voice-rag-bot", instance="bot-1"), "2x10"),
            (
                _series(m.CALLS_ACTIVE, service_name="voice-rag-bot", service_instance_id="bot-2"),
                "1x10",
            ),
        ],
        [
            (
                16,
                MISSING,
                [
                    (
                        {"job": "voice-rag-bot", "instance": "bot-1"},
                        2,
                        "voice-rag-bot bot-1: no metrics while calls were active",
                    ),
                    (
                        {"service_name": "voice-rag-bot", "service_instance_id": "bot-2"},
                        1,
                        "voice-rag-bot bot-2: no metrics while calls were active",
                    ),
                ],
            ),
        ],
    ),
    "greeting: a slow greeter fires after 5m, a quick one never": (
        [
            *_histogram(m.GREETING_LATENCY, 10, 3000, job="slow-greeter"),
            *_histogram(m.GREETING_LATENCY, 10, 500, job="quick-greeter"),
        ],
        [
            (4, GREETING, []),
            (
                10,
                GREETING,
                [
                    (
                        {"job": "slow-greeter"},
                        _quantile_above(m.GREETING_LATENCY, 0.95, 3000),
                        "slow-greeter: greeting latency p95 is 4900 ms",
                    )
                ],
            ),
        ],
    ),
    "event-loop lag: only the process whose loop is held, after 5m": (
        [
            *_histogram(m.EVENT_LOOP_LAG, 600, 50, job="bot", instance="held"),
            *_histogram(m.EVENT_LOOP_LAG, 600, 1, job="bot", instance="healthy"),
        ],
        [
            (4, LOOP_LAG, []),
            (
                10,
                LOOP_LAG,
                [
                    (
                        {"job": "bot", "instance": "held"},
                        _quantile_above(m.EVENT_LOOP_LAG, 0.99, 50),
                    )
                ],
            ),
        ],
    ),
    "exports failing: by process and reason, above the level, after 5m": (
        [
            _exports(3, "rejected", "429", job="bot", instance="throttled"),
            _exports(0.5, "timeout", "timeout", job="bot", instance="throttled"),
            _exports(6, "ok", "none", job="bot", instance="throttled"),
            _exports(6, "ok", "none", service_name="bot", service_instance_id="healthy"),
        ],
        [
            (6, EXPORTS_FAILING, []),  # pending: above the level since minute 2
            (
                10,
                EXPORTS_FAILING,
                [
                    (
                        {"job": "bot", "instance": "throttled", "reason": "429"},
                        _per_minute_seen(3, alerts.EXPORTS_WINDOW_MINUTES, 10),
                    )
                ],
            ),
        ],
        f"{EXPORT_INTERVAL_S}s",
    ),
    "cost: short per-call series add up exactly, a cheap service stays quiet": (
        [
            # Three calls of $4 each, one after the other: $12 in the hour.
            (_series(m.COST, job="busy", call_id="c1", service_type="tts"), "0 4"),
            (_series(m.COST, job="busy", call_id="c2", service_type="tts"), "_ _ 0 4"),
            (_series(m.COST, job="busy", call_id="c3", service_type="tts"), "_ _ _ _ 0 4"),
            # Fleet-wide series (call_id off): $0.05 a minute, $3 an hour.
            (_series(m.COST, job="cheap", service_type="llm"), "0+0.05x90"),
        ],
        [
            (4, COST, []),  # $8 so far
            (12, COST, [({"job": "busy"}, 12)]),
        ],
    ),
}


def test_every_alert_has_a_promtool_case():
    tested = {rule.name for _, checks, *_ in CASES.values() for _, rule, _ in checks}
    assert tested == set(RULES)


def test_labels_a_backend_lacks_are_printed_only_when_present():
    # Each backend has one label of each pair; Grafana-managed rules print a missing label as
    # "[no value]" (Prometheus prints nothing, so promtool cannot tell).
    for rule in alerts.alert_rules():
        assert "{{ with $labels.job }}" in rule.summary, rule.name
        for text in (rule.summary, rule.description):
            for label in (*alerts.SERVICE_LABELS, *alerts.INSTANCE_LABELS):
                assert f"{{{{ $labels.{label} }}}}" not in text, (rule.name, label)


def test_promtool_unit_tests_show_each_alert_firing_and_not(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(alerts.rules_yaml())
    tests = [
        {
            "name": name,
            "interval": interval[0] if interval else "1m",
            "input_series": [{"series": series, "values": values} for series, values in inputs],
            "alert_rule_test": [
                {
                    "eval_time": f"{minute}m",
                    "alertname": rule.name,
                    "exp_alerts": [_expected(rule, *alert) for alert in firing],
                }
                for minute, rule, firing in checks
            ],
        }
        for name, (inputs, checks, *interval) in CASES.items()
    ]
    unit_tests = tmp_path / "rules_test.yml"
    unit_tests.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests})
    )
    result = _promtool("test", "rules", unit_tests.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
