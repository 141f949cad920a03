"""Prometheus/Mimir alert rules for voice bots, built from the metric contract.

The rules file loads into Grafana Cloud (``mimirtool rules load``, or ``IMPORT_PATH`` in
Grafana's own screens), Mimir, Prometheus and vmalert. Like the dashboard,
every expression is built from ``instruments`` so that a renamed metric cannot leave an alert
that never fires, and the alerts are rows of a table: adding one is one more ``AlertRule`` in
``alert_rules``. The levels of the error and rate-limit alerts follow the alert table of a
production voice bot's monitoring set-up (``> 10/min for 3m`` for a service's errors,
``> 5/min for 2m`` and ``> 20/min for 1m`` for its rate limits, ``p95 > 2000 ms for 5m`` for
the time to first audio).

Two choices make the rules work on every backend:

- Grouping by both ``job`` and ``service_name`` (and ``instance`` and
  ``service_instance_id``): Mimir fills the first of each pair, VictoriaMetrics the second,
  and a label missing from a series groups as empty. Alerts name the service with whichever
  of the pair the alert has.
- The latency quantiles read a histogram in either form, classic buckets or a native
  histogram (``promql.either_quantile``), so the rules fire on Grafana Cloud with native
  histograms as on VictoriaMetrics with classic ones.
- The hourly cost and the error rates are ``max_over_time - min_over_time`` per series over
  their window, summed, not ``increase()`` or ``rate()``: on Prometheus and Mimir those
  extrapolate past the end of short per-call series, and VictoriaMetrics divides a series'
  increase by the time it covers, so that one error in a call of six seconds reads as ten a
  minute for as long as the window holds it. The difference is exact for a call that starts
  in the window (its series is exported first with a zero); a longer series misses what it
  counted between its last export before the window and its first in it, so the rates are
  lower bounds (by one export interval in a window: 10 s in 5 minutes by default).

Example::

    from pipecat_grafana.grafana.alerts import rules_yaml

    Path("voice-bot-rules.yml").write_text(rules_yaml(budget_usd_per_hour=5))
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana.promql import (
    INSTANCE_LABELS,
    SERVICE_LABELS,
    aggregate,
    either_quantile,
    series,
    window_rate,
    window_total,
)

__all__ = [
    "DEFAULT_BUDGET_USD_PER_HOUR",
    "DEFAULT_ERRORS_PER_MINUTE",
    "DEFAULT_EVENT_LOOP_LAG_P99_MS",
    "DEFAULT_EXPORT_FAILURES_PER_MINUTE",
    "DEFAULT_GREETING_P95_MS",
    "DEFAULT_RATE_LIMIT_BURST_PER_MINUTE",
    "DEFAULT_RATE_LIMITS_PER_MINUTE",
    "DEFAULT_SILENCE_MINUTES",
    "DEFAULT_TTFA_P95_MS",
    "DEFAULT_TTFB_P95_MS",
    "DEFAULT_TURN_LATENCY_P95_MS",
    "GROUP_NAME",
    "SHIPPED_RULES",
    "AlertRule",
    "alert_rules",
    "build_rules",
    "rules_yaml",
]

DEFAULT_TTFB_P95_MS = 2000.0
"""TTFB p95 alert level, from the production alert table's ``TimeToFirstAudioSlow``
(``> 2000 ms for 5m``)."""
DEFAULT_TTFA_P95_MS = 2000.0
"""TTS time-to-first-audio p95 alert level, the same 2 s a caller starts to notice."""
DEFAULT_BUDGET_USD_PER_HOUR = 10.0
"""Estimated spend per hour, per service, above which the cost alert fires."""
DEFAULT_SILENCE_MINUTES = 2.0
"""Minutes without any metric from a process whose calls were active before the alert fires.
The exporter sends every 10 s by default, so two minutes are a dozen missed exports."""
DEFAULT_TURN_LATENCY_P95_MS = 2000.0
"""Turn latency p95 alert level: the production alert table's ``TimeToFirstAudioSlow`` (``p95 > 2000 ms for
5m``), which times what turn latency times, the caller's wait from falling silent to the
bot's first audio."""
DEFAULT_ERRORS_PER_MINUTE = 10.0
"""Errors per minute of one processor above which the error-rate alert fires: the production
alert table's ``CartesiaTTSErrorRateHigh`` (``> 10/min for 3m``)."""
DEFAULT_RATE_LIMITS_PER_MINUTE = 5.0
"""Rate-limit errors per minute of one processor for the warning: the production alert
table's ``CartesiaTTSRateLimitHigh`` (``> 5/min for 2m``)."""
DEFAULT_RATE_LIMIT_BURST_PER_MINUTE = 20.0
"""Rate-limit errors per minute of one processor for the critical alert: the production
alert table's ``CartesiaTTSRateLimitCritical`` (``> 20/min for 1m``)."""

DEFAULT_GREETING_P95_MS = 3000.0
"""Greeting latency p95 alert level: three seconds of silence after picking up, and callers
start to say "hello?" or hang up."""
DEFAULT_EVENT_LOOP_LAG_P99_MS = 50.0
"""Event-loop lag p99 alert level: every call's audio waits this long for the loop, which
callers hear as stutter and late answers."""
DEFAULT_EXPORT_FAILURES_PER_MINUTE = 1.0
"""Failed exports per minute of one process, for one reason, above which the export alert
fires: one export in six at the default 10-second interval."""

GROUP_NAME = "pipecat-grafana"
SHIPPED_RULES = Path(__file__).parent / "pipecat-voice-bot-rules.yml"
"""The rule file as shipped in the package: ``build_rules()`` with its defaults."""

# The window latency quantiles are computed over, and how long they must stay high.
LATENCY_WINDOW = "5m"
LATENCY_FOR = "5m"
# The windows error rates are averaged over, in minutes: errors over five; rate limits come
# in bursts, so over two (still a dozen exports at the default 10 s interval).
ERRORS_WINDOW_MINUTES = 5
ERRORS_FOR = "3m"
RATE_LIMITS_WINDOW_MINUTES = 2
RATE_LIMITS_FOR = "2m"
RATE_LIMIT_BURST_FOR = "1m"
# How far back the silence alert looks for calls that were active.
ACTIVE_LOOKBACK = "15m"
# The window failed exports are counted over, in minutes, and how long they must go on.
EXPORTS_WINDOW_MINUTES = 5
EXPORTS_FOR = "5m"


def _present(labels: tuple[str, ...]) -> str:
    """A template printing those of ``labels`` the alert has.

    A backend fills one label of each pair. Prometheus prints a missing label as nothing,
    but Grafana-managed rules print ``[no value]``, so each is printed only when present.
    """
    return "".join(f"{{{{ with $labels.{label} }}}}{{{{ . }}}}{{{{ end }}}}" for label in labels)


_SERVICE = _present(SERVICE_LABELS)
_INSTANCE = _present(INSTANCE_LABELS)
_PROCESSOR = f"{{{{ $labels.{m.PROCESSOR} }}}}"
_SERVICE_TYPE = f"{{{{ $labels.{m.SERVICE_TYPE} }}}}"
_REASON = f"{{{{ $labels.{m.REASON} }}}}"


def _value(fmt: str) -> str:
    """A template printing the alert's value.

    Prometheus, Mimir and vmalert give ``$value`` as a number; Grafana-managed rules
    (imported into Grafana Alerting) give a string describing each query's value. Format
    the number, print the string as it is, rather than garble it with ``printf``.
    """
    return (
        '{{ if eq (printf "%T" $value) "float64" }}'
        f'{{{{ printf "{fmt}" $value }}}}'
        "{{ else }}{{ $value }}{{ end }}"
    )


_VALUE_MS = _value("%.0f")
_VALUE_USD = _value("%.2f")
_VALUE_COUNT = _value("%.0f")
_VALUE_RATE = _value("%.1f")


@dataclass(frozen=True)
class AlertRule:
    """One alert rule.

    The expression is ``signal op threshold``, kept apart so that tests can run the signal
    on its own and see it return data, whether the alert fires or not.

    Parameters:
        name: The alert's name.
        signal: PromQL whose value is compared with the threshold.
        threshold: The level the signal must exceed.
        for_: How long the condition must hold before the alert fires.
        severity: ``warning`` (look at it today) or ``critical`` (look at it now).
        summary: One line, with Prometheus templates (``{{ $labels.x }}``, ``$value``).
        description: What it means and what to look at.
        group_by: The labels the signal's series carry (those the backend has).
        op: The comparison.
    """

    name: str
    signal: str
    threshold: float
    for_: str
    severity: str
    summary: str
    description: str
    group_by: tuple[str, ...]
    op: str = ">"

    @property
    def expr(self) -> str:
        """The rule's expression."""
        return f"{self.signal} {self.op} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        """The rule as an entry of a Prometheus rule group."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _latency_quantile(q: float, spec: m.InstrumentSpec, by: tuple[str, ...]) -> str:
    """The ``q`` quantile of ``spec`` over ``LATENCY_WINDOW`` per ``by``, classic or native."""
    classic = window_rate(series(spec, "_bucket"), LATENCY_WINDOW, ("le", *by))
    return either_quantile(q, classic, window_rate(series(spec), LATENCY_WINDOW, by))


_BY_PROCESSOR = (*SERVICE_LABELS, m.SERVICE_TYPE, m.PROCESSOR)
"""How error alerts group: one alert per service and processor, naming its service type."""
_PROCESS = (*SERVICE_LABELS, *INSTANCE_LABELS)
"""How alerts about one bot process group: its service and instance, on either backend."""


def _errors_per_minute(minutes: int, **matchers: str) -> str:
    """ErrorFrames per minute over the last ``minutes``, per service and processor."""
    errors = window_total(series(m.ERRORS, **matchers), f"{minutes}m", _BY_PROCESSOR)
    return f"{errors} / {minutes}"


def _check_positive(name: str, value: float) -> None:
    # Written so that NaN is refused too; an infinite level would never fire.
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, not {value!r}")


def alert_rules(
    *,
    ttfb_p95_ms: float = DEFAULT_TTFB_P95_MS,
    ttfa_p95_ms: float = DEFAULT_TTFA_P95_MS,
    budget_usd_per_hour: float = DEFAULT_BUDGET_USD_PER_HOUR,
    silence_minutes: float = DEFAULT_SILENCE_MINUTES,
    turn_latency_p95_ms: float = DEFAULT_TURN_LATENCY_P95_MS,
    errors_per_minute: float = DEFAULT_ERRORS_PER_MINUTE,
    rate_limits_per_minute: float = DEFAULT_RATE_LIMITS_PER_MINUTE,
    rate_limit_burst_per_minute: float = DEFAULT_RATE_LIMIT_BURST_PER_MINUTE,
    greeting_p95_ms: float = DEFAULT_GREETING_P95_MS,
    event_loop_lag_p99_ms: float = DEFAULT_EVENT_LOOP_LAG_P99_MS,
    export_failures_per_minute: float = DEFAULT_EXPORT_FAILURES_PER_MINUTE,
) -> tuple[AlertRule, ...]:
    """The alert rules, with their levels.

    Args:
        ttfb_p95_ms: Alert when a processor's TTFB p95 over 5 minutes stays above this.
        ttfa_p95_ms: Alert when a TTS's time-to-first-audio p95 stays above this.
        budget_usd_per_hour: Alert when a service's estimated spend in the last hour
            exceeds this.
        silence_minutes: Alert when a process whose calls were active has sent nothing for
            this long.
        turn_latency_p95_ms: Alert when a service's turn latency p95 over 5 minutes (the
            caller's wait for an answer) stays above this.
        errors_per_minute: Alert when a processor's errors per minute (over 5 minutes)
            stay above this for 3 minutes.
        rate_limits_per_minute: Warn when a processor's rate-limit errors per minute (over
            2 minutes) stay above this for 2 minutes.
        rate_limit_burst_per_minute: Page when they stay above this for a minute.
        greeting_p95_ms: Alert when a service's greeting latency p95 over 5 minutes (the
            caller's wait for the bot's first words) stays above this.
        event_loop_lag_p99_ms: Alert when a process's event-loop lag p99 over 5 minutes
            stays above this.
        export_failures_per_minute: Alert when a process's failed exports per minute, for
            one reason (over 5 minutes), stay above this for 5 minutes.

    Returns:
        The rules, in the order of the rule file.

    Raises:
        ValueError: A level is not a positive number.
    """
    for name, value in (
        ("ttfb_p95_ms", ttfb_p95_ms),
        ("ttfa_p95_ms", ttfa_p95_ms),
        ("budget_usd_per_hour", budget_usd_per_hour),
        ("silence_minutes", silence_minutes),
        ("turn_latency_p95_ms", turn_latency_p95_ms),
        ("errors_per_minute", errors_per_minute),
        ("rate_limits_per_minute", rate_limits_per_minute),
        ("rate_limit_burst_per_minute", rate_limit_burst_per_minute),
        ("greeting_p95_ms", greeting_p95_ms),
        ("event_loop_lag_p99_ms", event_loop_lag_p99_ms),
        ("export_failures_per_minute", export_failures_per_minute),
    ):
        _check_positive(name, value)
    silence = f"{silence_minutes * 60:g}s"
    process = _PROCESS
    active = series(m.CALLS_ACTIVE)
    return (
        _latency_rule(
            "VoiceBotTurnLatencyHigh",
            m.TURN_LATENCY,
            turn_latency_p95_ms,
            "turn latency",
            "The 95th percentile of the callers' wait from falling silent to the bot's first "
            f"audio has been above {turn_latency_p95_ms:g} ms for {LATENCY_FOR}. The 'Where "
            "turn latency goes' panel of the Pipecat voice bot dashboard shows which part grew "
            "(transcription, LLM, tool calls, speech synthesis, ...).",
            per_processor=False,
        ),
        _latency_rule(
            "VoiceBotTTFBHigh",
            m.TTFB,
            ttfb_p95_ms,
            f"{_PROCESSOR} TTFB",
            f"The 95th percentile of time to first byte of {_PROCESSOR} has been above "
            f"{ttfb_p95_ms:g} ms for {LATENCY_FOR}: callers wait for answers. Check the "
            "provider's status and the model, and the TTFB panel of the Pipecat voice bot "
            "dashboard.",
        ),
        _latency_rule(
            "VoiceBotTimeToFirstAudioHigh",
            m.TTFA,
            ttfa_p95_ms,
            f"{_PROCESSOR} time to first audio",
            "The 95th percentile of the TTS's time to first audible audio (TTFB plus leading "
            f"silence) of {_PROCESSOR} has been above {ttfa_p95_ms:g} ms for {LATENCY_FOR}. "
            "Check the TTS provider and voice.",
        ),
        AlertRule(
            name="VoiceBotErrorRateHigh",
            signal=_errors_per_minute(ERRORS_WINDOW_MINUTES),
            threshold=errors_per_minute,
            for_=ERRORS_FOR,
            severity="warning",
            summary=f"{_SERVICE}: {_PROCESSOR} reports {_VALUE_RATE} errors per minute",
            description=(
                f"{_PROCESSOR} ({_SERVICE_TYPE}) has pushed more than {errors_per_minute:g} "
                f"ErrorFrames per minute for {ERRORS_FOR}. Check the error panels of the "
                "Pipecat voice bot dashboard for the error type, the bot's logs for the "
                "messages, and the provider's status."
            ),
            group_by=_BY_PROCESSOR,
        ),
        _rate_limit_rule(
            "VoiceBotRateLimited",
            rate_limits_per_minute,
            RATE_LIMITS_FOR,
            "warning",
            " (429 Too Many Requests): callers hear the bot late or not at all. Raise the "
            "account's limits or concurrency, or spread the load.",
        ),
        _rate_limit_rule(
            "VoiceBotRateLimitBurst",
            rate_limit_burst_per_minute,
            RATE_LIMIT_BURST_FOR,
            "critical",
            ": calls are failing now. Shed load or fail over to another provider or account.",
        ),
        AlertRule(
            name="VoiceBotMetricsMissing",
            signal=(
                f"({aggregate('max', process, f'last_over_time({active}[{ACTIVE_LOOKBACK}])')} "
                f"unless {aggregate('max', process, f'count_over_time({active}[{silence}])')})"
            ),
            threshold=0,
            for_="1m",
            severity="critical",
            summary=f"{_SERVICE} {_INSTANCE}: no metrics while calls were active",
            description=(
                f"The process last reported {_VALUE_COUNT} active call(s) and has sent no "
                f"metrics for {silence_minutes:g} minute(s): it crashed or hangs, or cannot "
                "reach the OTLP endpoint (run `pipecat-grafana check` where it runs). A "
                "process that exits with no call in progress does not fire this. Resolves "
                f"{ACTIVE_LOOKBACK} after its last report."
            ),
            group_by=process,
        ),
        AlertRule(
            name="VoiceBotCostOverBudget",
            signal=window_total(series(m.COST), "1h", SERVICE_LABELS),
            threshold=budget_usd_per_hour,
            for_="5m",
            severity="warning",
            summary=f"{_SERVICE}: ${_VALUE_USD} spent in the last hour",
            description=(
                "The estimated cost of the last hour (from the exporter's price table) is "
                f"above the budget of ${budget_usd_per_hour:g} per hour. Check the cost "
                "panels for the service and model, and the most expensive calls."
            ),
            group_by=SERVICE_LABELS,
        ),
        _latency_rule(
            "VoiceBotGreetingSlow",
            m.GREETING_LATENCY,
            greeting_p95_ms,
            "greeting latency",
            "The 95th percentile of the callers' wait from connecting to the bot's first words "
            f"has been above {greeting_p95_ms:g} ms for {LATENCY_FOR}: callers hear silence "
            "after picking up. Check how the greeting is made (an LLM turn, a TTS request) and "
            "the start-up time panel of the Pipecat voice bot dashboard.",
            per_processor=False,
        ),
        AlertRule(
            name="VoiceBotEventLoopLagHigh",
            signal=_latency_quantile(0.99, m.EVENT_LOOP_LAG, process),
            threshold=event_loop_lag_p99_ms,
            for_=LATENCY_FOR,
            severity="warning",
            summary=f"{_SERVICE} {_INSTANCE}: event-loop lag p99 is {_VALUE_MS} ms",
            description=(
                "The 99th percentile of how late the process's event loop ran a timer has been "
                f"above {event_loop_lag_p99_ms:g} ms for {LATENCY_FOR}: every call's audio "
                "waits for the loop. Look for blocking calls or CPU-heavy work in processors "
                "and event handlers, and for too many calls per process (CPU)."
            ),
            group_by=process,
        ),
        AlertRule(
            name="VoiceBotExportsFailing",
            signal=_failed_exports_per_minute(),
            threshold=export_failures_per_minute,
            for_=EXPORTS_FOR,
            severity="warning",
            summary=f"{_SERVICE} {_INSTANCE}: {_VALUE_RATE} failed metric exports per minute "
            f"({_REASON})",
            description=(
                f"More than {export_failures_per_minute:g} of the process's metric exports a "
                f"minute have failed for {EXPORTS_FOR}, reason "
                f"{_REASON} (401/403: credentials; 404: the URL; 429: the endpoint's rate "
                "limit; 5xx: the endpoint; refused, dns, tls, timeout: the network): metrics "
                "arrive late. Run `pipecat-grafana check` where the bot runs. A failure is "
                "reported by the next export that gets through, so an endpoint refusing every "
                "export shows as VoiceBotMetricsMissing instead, and here once it recovers."
            ),
            group_by=(*process, m.REASON),
        ),
    )


def _failed_exports_per_minute() -> str:
    """Failed exports per minute over the last ``EXPORTS_WINDOW_MINUTES``, by process, reason."""
    failed = f'{m.EXPORTS.prometheus_name}{{{m.OUTCOME}!="ok"}}'
    minutes = EXPORTS_WINDOW_MINUTES
    total = window_total(failed, f"{minutes}m", (*_PROCESS, m.REASON))
    return f"{total} / {minutes}"


def _latency_rule(
    name: str,
    spec: m.InstrumentSpec,
    level_ms: float,
    what: str,
    description: str,
    *,
    per_processor: bool = True,
) -> AlertRule:
    """A latency alert: the p95 of ``spec`` above ``level_ms``, per service (and processor)."""
    by = (m.PROCESSOR,) if per_processor else ()
    return AlertRule(
        name=name,
        signal=_latency_quantile(0.95, spec, (*SERVICE_LABELS, *by)),
        threshold=level_ms,
        for_=LATENCY_FOR,
        severity="warning",
        summary=f"{_SERVICE}: {what} p95 is {_VALUE_MS} ms",
        description=description,
        group_by=(*SERVICE_LABELS, *by),
    )


def _rate_limit_rule(
    name: str, per_minute: float, for_: str, severity: str, consequence: str
) -> AlertRule:
    """A rate-limit alert: the warning and the page differ only in level, duration and why."""
    return AlertRule(
        name=name,
        signal=_errors_per_minute(RATE_LIMITS_WINDOW_MINUTES, error_type="rate_limit"),
        threshold=per_minute,
        for_=for_,
        severity=severity,
        summary=f"{_SERVICE}: {_PROCESSOR} is rate limited {_VALUE_RATE} times per minute",
        description=(
            f"The provider of {_PROCESSOR} ({_SERVICE_TYPE}) has refused more than "
            f"{per_minute:g} requests per minute for {for_}{consequence}"
        ),
        group_by=_BY_PROCESSOR,
    )


def build_rules(*, namespace: str | None = None, **levels: float) -> dict[str, Any]:
    """The rule file as a dict: one group, ``pipecat-grafana``.

    Args:
        namespace: A top-level ``namespace`` for ``mimirtool rules load``. Prometheus and
            ``promtool`` refuse a file with one, so the default leaves it out.
        **levels: The levels of ``alert_rules`` (``budget_usd_per_hour=5``, ...).

    Returns:
        ``{"groups": [...]}``, ready for YAML.

    Raises:
        ValueError: A level is not a positive number.
    """
    groups = [{"name": GROUP_NAME, "rules": [rule.to_dict() for rule in alert_rules(**levels)]}]
    return {"namespace": namespace, "groups": groups} if namespace else {"groups": groups}


IMPORT_PATH = (
    "Alerting > Alert rules > Import to Grafana-managed rules (in the Data source-managed "
    "section), Import source: Prometheus YAML file"
)
"""Where Grafana 12 and 13 import a Prometheus rule file, as their screens name each step.

Grafana's new rule list (``alertingListViewV2``) also has More > Import alert rules; the
path above is the one every Grafana 12 and 13 shows. The rules file's header, the
``alerts`` command's help and the README all give this one path."""


def rules_yaml(*, namespace: str | None = None, **levels: float) -> str:
    """The rule file as YAML text, with a header saying how it was made.

    Args:
        namespace: A top-level ``namespace`` for ``mimirtool rules load`` (see ``build_rules``).
        **levels: The levels of ``alert_rules`` (``budget_usd_per_hour=5``, ...).

    Returns:
        The text of a Prometheus/Mimir rule file.

    Raises:
        ValueError: A level is not a positive number.
    """
    header = "".join(f"# {line}\n" for line in _header(levels))
    rules = build_rules(namespace=namespace, **levels)
    return header + yaml.safe_dump(rules, sort_keys=False, width=10_000, allow_unicode=True)


def _header(levels: dict[str, float]) -> Iterator[str]:
    yield "Alert rules for Pipecat voice bots, generated by `pipecat-grafana alerts`."
    yield f"Import into Grafana: {IMPORT_PATH}."
    if levels:
        yield "Levels: " + ", ".join(f"{name}={value:g}" for name, value in levels.items())
