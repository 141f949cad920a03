"""The dashboard's rows about the service as a whole.

Overview, conversation, errors and tool calls, health, latency, usage and cost. Their panels
add up every call of the selected services (the call variable narrows the per-call
instruments to one call); all read the metrics but one, turn latency by turn number, which
reads the turn records in Loki. ``call_rows`` shows single calls.
"""

from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import alerts, logql
from pipecat_grafana.grafana.panels import (
    CALL_COST,
    CALL_LINK,
    COST_BY,
    EXEMPLARS_NOTE,
    LOKI,
    OUTCOME,
    SLOW_MS,
    TOKEN_TYPES_NOTE,
    LatencyPanel,
    Panel,
    Query,
    Row,
    alert_level,
    instant,
    legend,
    percentiles,
    rate_by,
    total_by,
)
from pipecat_grafana.grafana.promql import (
    RANGE_SECONDS,
    RATE_INTERVAL,
    aggregate,
    histogram_total,
    quantile,
    range_total,
    rate,
    selector,
)
from pipecat_grafana.turns import TURN_EVENT_NAME

__all__ = ["FLEET_ROWS", "LATENCY_PANELS"]

_DAY_COST = (
    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 12, "orange"),
    (alerts.DEFAULT_BUDGET_USD_PER_HOUR * 24, "red"),
)
"""A day's cost: the alert rules' hourly budget, half the day and all day."""


LATENCY_PANELS = (
    LatencyPanel(
        "ttfb",
        m.TTFB,
        "TTFB by processor",
        (0.5, 0.95, 0.99),
        alert_level(alerts.DEFAULT_TTFB_P95_MS),
        12,
        "Time to first byte of each service's response (STT: from the end of speech to the "
        "final transcript; LLM: request to first chunk; TTS: request to first audio).",
    ),
    LatencyPanel(
        "ttfa",
        m.TTFA,
        "Time to first audio (TTS) p95",
        (0.95,),
        alert_level(alerts.DEFAULT_TTFA_P95_MS),
        6,
        "TTS time to first audible audio: TTFB plus the leading silence the TTS pads its "
        "audio with.",
    ),
    LatencyPanel(
        "ttfat",
        m.TTFAT,
        "Time to first answer token (LLM) p95",
        (0.95,),
        SLOW_MS,
        6,
        "LLM time to the first token of the answer: TTFB plus thinking time.",
    ),
    LatencyPanel(
        "processing",
        m.PROCESSING,
        "Processing time by processor",
        (0.5, 0.95),
        SLOW_MS,
        8,
        "How long each pipeline stage takes to process its input (LLM: the whole "
        "streamed answer; TTS: one sentence).",
    ),
    LatencyPanel(
        "text-aggregation",
        m.TEXT_AGGREGATION,
        "Text aggregation p95",
        (0.95,),
        ((300.0, "orange"), (600.0, "red")),
        8,
        "Time from the first LLM token to the first complete sentence sent to TTS.",
    ),
    LatencyPanel(
        "turn-detection",
        m.TURN_DETECTION,
        "Turn detection p95",
        (0.95,),
        ((200.0, "orange"), (500.0, "red")),
        8,
        "Turn detection time from the user's silence to the end-of-turn decision.",
    ),
)


_TOKENS_BY = (m.MODEL, m.TOKEN_TYPE)
_ENDED = histogram_total(m.SESSION_DURATION, "count")
"""Calls that ended: the session duration histogram's count (per call, unlike ``CALLS``)."""
_ACTIVE = f"sum({selector(m.CALLS_ACTIVE)})"
_EXACT = (
    "Totals over the dashboard's range use max_over_time - min_over_time per series, exact "
    "for calls that start and end inside the range."
)
_RESOLVED = "resolved"
_ERRORS_BY_SERVICE = (m.SERVICE_TYPE, m.PROCESSOR)
_FUNCTION_CALLS_BY = (m.FUNCTION, m.STATUS)
_STARTUP_BY = (m.PHASE, m.PROCESSOR)


def _per_call(total: str) -> str:
    """A range total divided by the calls that ended in the range."""
    return f"{total} / {_ENDED}"


def _or_zero(expr: str, like: str) -> str:
    """``expr``, or 0 where it has no series but ``like`` has.

    A counter never incremented is never exported: none counted is zero, not "No data".
    """
    return f"({expr} or 0 * {like})"


def _share(part: str, whole: str) -> str:
    """``part / whole`` of two range totals; 0 when nothing of ``whole`` is ``part``."""
    return f"{_or_zero(part, whole)} / {whole}"


FLEET_ROWS: tuple[Row, ...] = (
    Row(
        "Overview",
        (
            Panel(
                "active-calls",
                "Active calls",
                "stat",
                "short",
                "Calls in progress now, all processes of the selected services "
                f"(`{m.CALLS_ACTIVE.prometheus_name}`).",
                (instant(_ACTIVE),),
                width=4,
            ),
            Panel(
                "calls-per-hour",
                "Calls per hour",
                "stat",
                "short",
                "Calls started during the dashboard's range, per hour "
                f"(`{m.CALLS.prometheus_name}`). {_EXACT}",
                (instant(f"{range_total(m.CALLS)} * 3600 / {RANGE_SECONDS}"),),
                width=4,
                decimals=1,
            ),
            Panel(
                "average-call-duration",
                "Average call duration",
                "stat",
                "s",
                "Mean length of the calls that ended during the dashboard's range "
                f"(`{m.SESSION_DURATION.prometheus_name}_sum / _count`, or the native "
                "histogram's).",
                (instant(_per_call(histogram_total(m.SESSION_DURATION, "sum"))),),
                width=4,
            ),
            Panel(
                "cost-per-call",
                "Cost per call",
                "stat",
                "currencyUSD",
                "Estimated cost during the dashboard's range divided by the calls that ended "
                "in it. An estimate from the exporter's dated price table; unpriced models "
                "add nothing (see the call summaries). Thresholds: adjust to your budget.",
                (instant(_per_call(range_total(m.COST))),),
                thresholds=CALL_COST,
                width=4,
                decimals=4,
            ),
            Panel(
                "cost-today",
                "Cost today",
                "stat",
                "currencyUSD",
                "Estimated cost since midnight (dashboard time zone), whatever the "
                f"dashboard's range. {_EXACT}",
                (instant(range_total(m.COST)),),
                thresholds=_DAY_COST,
                width=4,
                time_from="now/d",
                decimals=2,
            ),
            Panel(
                "calls-started",
                "Calls started per hour",
                "stat",
                "short",
                f"Calls started, per hour, over {RATE_INTERVAL}: the trend behind 'Calls "
                "per hour'.",
                (Query(f"{rate(m.CALLS)} * 3600", "calls/h"),),
                width=4,
                decimals=1,
            ),
            Panel(
                "active-calls-over-time",
                "Active calls over time",
                "timeseries",
                "short",
                "Calls in progress, all processes of the selected services.",
                (Query(_ACTIVE, "active calls"),),
                width=24,
                height=6,
            ),
        ),
    ),
    Row(
        "Conversation",
        (
            Panel(
                "turn-latency",
                "Turn latency",
                "timeseries",
                "ms",
                "The callers' wait from falling silent to the bot's first audio (Pipecat's "
                f"UserBotLatencyObserver), p50/p95/p99 over {RATE_INTERVAL}, from "
                f"`{m.TURN_LATENCY.prometheus_name}_bucket` or the native histogram "
                "(interpolated within histogram buckets). Dashed lines: the thresholds; red is the "
                "turn latency alert's level. "
                f"{EXEMPLARS_NOTE}",
                percentiles(m.TURN_LATENCY, (0.5, 0.95, 0.99), ()),
                thresholds=alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
                width=12,
            ),
            Panel(
                "turn-latency-breakdown",
                "Where turn latency goes",
                "bargauge",
                "ms",
                "Average milliseconds per answered turn spent on each part of the wait "
                "(endpointing wait, transcription, turn detection, LLM inference, tool calls, "
                "speech synthesis, ...), from Pipecat's latency breakdown, over the dashboard's "
                "range. The parts add up to the average turn latency. "
                f"`{m.TURN_CONTRIBUTION.prometheus_name}` / "
                f"`{m.TURN_LATENCY.prometheus_name}_count` (or the native histogram's count). "
                f"{_EXACT}",
                (
                    instant(
                        f"{range_total(m.TURN_CONTRIBUTION, (m.CONTRIBUTION,))} / on() "
                        f"group_left() {histogram_total(m.TURN_LATENCY, 'count')}",
                        legend((m.CONTRIBUTION,)),
                        (m.CONTRIBUTION,),
                    ),
                ),
                thresholds=((500.0, "orange"), (1000.0, "red")),
                width=12,
            ),
            Panel(
                "turns-per-call",
                "Turns per call",
                "stat",
                "short",
                "Turns the bot answered during the dashboard's range, interrupted or not, per "
                f"call that ended in it (`{m.TURNS.prometheus_name}`).",
                (instant(_per_call(range_total(m.TURNS))),),
                base_color="blue",
                width=4,
                height=6,
                decimals=1,
            ),
            Panel(
                "interruptions-per-call",
                "Interruptions per call",
                "stat",
                "short",
                "Times a caller started speaking while the bot was speaking (barge-ins; not "
                "Pipecat's InterruptionFrame, which starts every user turn), per call that "
                f"ended during the dashboard's range (`{m.INTERRUPTIONS.prometheus_name}`). "
                "Frequent barge-ins: answers too long or too slow.",
                (instant(_per_call(_or_zero(range_total(m.INTERRUPTIONS), _ENDED))),),
                thresholds=((2.0, "orange"), (4.0, "red")),
                width=4,
                height=6,
                decimals=2,
            ),
            Panel(
                "interrupted-turns",
                "Interrupted turns",
                "stat",
                "percentunit",
                "Share of the bot's answers the caller talked over, during the dashboard's "
                f'range (`{m.TURNS.prometheus_name}` with interrupted="true").',
                (instant(_share(range_total(m.TURNS, interrupted="true"), range_total(m.TURNS))),),
                thresholds=((0.15, "orange"), (0.3, "red")),
                width=4,
                height=6,
            ),
            Panel(
                "resolution-rate",
                "Resolution rate",
                "stat",
                "percentunit",
                f"Share of the calls that ended during the dashboard's range with "
                f'{OUTCOME}="{_RESOLVED}" (`{m.CALLS_ENDED.prometheus_name}`). Calls whose '
                f"outcome was never set count as not resolved. Needs the {OUTCOME} call "
                'attribute: GrafanaMetricsExporter(call_attributes={"outcome": ["resolved", '
                "...]}) and set_call_attributes(outcome=...). Thresholds: adjust to your goals.",
                (
                    instant(
                        _share(
                            range_total(m.CALLS_ENDED, (), "", **{OUTCOME: _RESOLVED}),
                            range_total(m.CALLS_ENDED),
                        )
                    ),
                ),
                base_color="red",
                thresholds=((0.6, "orange"), (0.8, "green")),
                width=4,
                height=6,
            ),
            Panel(
                "calls-by-outcome",
                "Calls by outcome",
                "bargauge",
                "short",
                "Calls that ended during the dashboard's range, by the outcome the application "
                f"set (`{m.CALLS_ENDED.prometheus_name}`; unset: the call ended before it was "
                "set). Counts every call of the selected services, whichever call is chosen. "
                f"{_EXACT}",
                (total_by(m.CALLS_ENDED, (OUTCOME,)),),
                base_color="blue",
                width=8,
                height=6,
            ),
            Panel(
                "turn-latency-by-turn",
                "Turn latency by turn number",
                "bargauge",
                "ms",
                "Are first answers slower? The turn latency (the caller's wait from falling "
                "silent to the bot's first audio) of the first, second, ... turn of the calls, "
                f"p50 and p95 over the dashboard's range, turns 1 to {logql.FIRST_TURNS}. From "
                f"the turn records in Loki (`event_name={TURN_EVENT_NAME}`, a metric query "
                f"unwrapping {logql.TURN_LATENCY}); turns whose latency was not measured are left "
                "out. Orange from half the turn latency alert's level, red at it.",
                tuple(
                    instant(
                        logql.over_turns(
                            "quantile_over_time",
                            logql.TURN_LATENCY,
                            logql.at_most(logql.TURN, str(logql.FIRST_TURNS)),
                            quantile=q,
                        ),
                        f"turn {{{{{logql.TURN}}}}} p{q * 100:g}",
                        (logql.TURN,),
                    )
                    for q in (0.5, 0.95)
                ),
                thresholds=alert_level(alerts.DEFAULT_TURN_LATENCY_P95_MS),
                width=24,
                height=8,
                decimals=0,
                source=LOKI,
            ),
        ),
    ),
    Row(
        "Errors and tool calls",
        (
            Panel(
                "errors-per-minute-by-service",
                "Errors per minute by service",
                "timeseries",
                "short",
                f"ErrorFrames per minute over {RATE_INTERVAL} by service type and processor "
                f"(`{m.ERRORS.prometheus_name}`). The red line is the error-rate alert's level "
                "(per processor).",
                (rate_by(m.ERRORS, _ERRORS_BY_SERVICE),),
                thresholds=((alerts.DEFAULT_ERRORS_PER_MINUTE, "red"),),
                width=8,
            ),
            Panel(
                "errors-per-minute-by-type",
                "Errors per minute by type",
                "timeseries",
                "short",
                f"ErrorFrames per minute over {RATE_INTERVAL} by error type: rate_limit (HTTP "
                "429 and the like), timeout, other. Dashed lines: the rate-limit alerts' "
                "levels (per processor).",
                (rate_by(m.ERRORS, (m.ERROR_TYPE,)),),
                thresholds=(
                    (alerts.DEFAULT_RATE_LIMITS_PER_MINUTE, "orange"),
                    (alerts.DEFAULT_RATE_LIMIT_BURST_PER_MINUTE, "red"),
                ),
                width=8,
            ),
            Panel(
                "errors",
                "Errors by service and type",
                "bargauge",
                "short",
                "ErrorFrames during the dashboard's range by service type and error type. "
                f"{_EXACT}",
                (total_by(m.ERRORS, (m.SERVICE_TYPE, m.ERROR_TYPE)),),
                base_color="orange",
                width=8,
            ),
            Panel(
                "tool-call-latency",
                "Tool-call latency by function",
                "timeseries",
                "ms",
                "Time from a tool call's start to its result (the handler's work, which the "
                f"caller waits through), p50/p95 per function over {RATE_INTERVAL}, from "
                f"`{m.FUNCTION_CALL_LATENCY.prometheus_name}_bucket` or the native histogram. "
                f"{EXEMPLARS_NOTE}",
                percentiles(m.FUNCTION_CALL_LATENCY, (0.5, 0.95), (m.FUNCTION,)),
                thresholds=SLOW_MS,
                width=8,
            ),
            Panel(
                "tool-calls-per-minute",
                "Tool calls per minute by status",
                "timeseries",
                "short",
                f"Tool calls that finished, per minute over {RATE_INTERVAL}, by function and "
                "status: ok, error (the handler failed), cancelled (an interruption or a "
                f"timeout) (`{m.FUNCTION_CALLS.prometheus_name}`).",
                (rate_by(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY),),
                width=8,
            ),
            Panel(
                "tool-calls",
                "Tool calls by function and status",
                "bargauge",
                "short",
                f"Tool calls that finished during the dashboard's range. {_EXACT}",
                (total_by(m.FUNCTION_CALLS, _FUNCTION_CALLS_BY),),
                base_color="blue",
                width=8,
            ),
        ),
    ),
    Row(
        "Health",
        (
            Panel(
                "greeting-latency",
                "Greeting latency",
                "timeseries",
                "ms",
                "The callers' wait from connecting to the bot's first words, when the bot "
                "speaks first (Pipecat's UserBotLatencyObserver, from the transport's "
                f"ClientConnectedFrame), p50/p95 over {RATE_INTERVAL}, from "
                f"`{m.GREETING_LATENCY.prometheus_name}_bucket` or the native histogram. Red is "
                "the "
                "greeting alert's "
                "level.",
                percentiles(m.GREETING_LATENCY, (0.5, 0.95), ()),
                thresholds=alert_level(alerts.DEFAULT_GREETING_P95_MS),
                width=8,
            ),
            Panel(
                "event-loop-lag",
                "Event-loop lag",
                "timeseries",
                "ms",
                "How late the event loop that runs the calls ran a timer (sampled every 100 ms "
                f"while calls are in progress), p99 and max over {RATE_INTERVAL}, all processes "
                f"of the selected services (`{m.EVENT_LOOP_LAG.prometheus_name}_bucket` or the "
                "native "
                "histogram; max is "
                "its bucket's upper bound). Every call's audio waits this long. Red is the lag "
                "alert's level (per process).",
                (
                    Query(quantile(0.99, m.EVENT_LOOP_LAG, ()), "p99"),
                    Query(quantile(1, m.EVENT_LOOP_LAG, ()), "max"),
                ),
                thresholds=alert_level(alerts.DEFAULT_EVENT_LOOP_LAG_P99_MS),
                width=8,
            ),
            Panel(
                "startup",
                "Start-up time by phase, slowest processor",
                "timeseries",
                "ms",
                "What the slowest processor of a call's start cost to get ready before a "
                "caller can hear the bot (phase processor: setup and start, connecting to its "
                "provider, loading a model), and when the transport connected (bot_connected, "
                "client_connected, from the pipeline starting to set up): the slowest of the "
                "selected services' processes, each reporting its latest start, from Pipecat's "
                f"StartupTimingObserver (`{m.STARTUP.prometheus_name}`).",
                (
                    Query(
                        aggregate("max", _STARTUP_BY, selector(m.STARTUP)),
                        legend(_STARTUP_BY),
                        _STARTUP_BY,
                    ),
                ),
                thresholds=SLOW_MS,
                width=8,
            ),
            Panel(
                "exports-per-minute",
                "Metric exports per minute by outcome",
                "timeseries",
                "short",
                f"The exporter's requests to the OTLP endpoint per minute over {RATE_INTERVAL}, "
                "by outcome (ok, rejected, unreachable, timeout) and reason (the HTTP status: "
                "401/403 credentials, 404 URL, 429 rate limit, 5xx; or refused, dns, tls, "
                "timeout). A failure is counted by the next export that gets through: an "
                "endpoint that refuses everything shows nothing here until it recovers "
                f"(`{m.EXPORTS.prometheus_name}`). Red is the export alert's level.",
                (rate_by(m.EXPORTS, (m.OUTCOME, m.REASON)),),
                thresholds=((alerts.DEFAULT_EXPORT_FAILURES_PER_MINUTE, "red"),),
                width=12,
            ),
            Panel(
                "calls-dropped",
                "Ended calls dropped",
                "stat",
                "short",
                "Ended calls whose final values were never exported during the dashboard's "
                "range: the endpoint did not accept them for 5 minutes (expired), or too many "
                "were waiting (overflow). Their summaries were still logged "
                f"(`{m.CALLS_DROPPED.prometheus_name}`). {_EXACT}",
                (instant(_or_zero(range_total(m.CALLS_DROPPED), range_total(m.EXPORTS))),),
                thresholds=((1.0, "red"),),
                width=4,
            ),
            Panel(
                "summaries-dropped",
                "Call summaries dropped",
                "stat",
                "short",
                "Call summary records never sent to Loki during the dashboard's range: the "
                "queue between two sends was full, the logs endpoint did not accept them for 5 "
                "minutes (expired), or too many were waiting (overflow). Each was still logged "
                "by the bot and passed to on_call_summary "
                f"(`{m.SUMMARIES_DROPPED.prometheus_name}`). {_EXACT}",
                (instant(_or_zero(range_total(m.SUMMARIES_DROPPED), range_total(m.EXPORTS))),),
                thresholds=((1.0, "red"),),
                width=4,
            ),
            Panel(
                "export-age",
                "Age of the last accepted export",
                "stat",
                "s",
                "Seconds since the endpoint last accepted an export, the oldest of the "
                "processes of the selected services, as of their last export "
                f"(`{m.EXPORT_AGE.prometheus_name}`): about the export interval when all is "
                "well. A process whose exports all fail sends nothing, not even this.",
                (instant(aggregate("max", (), selector(m.EXPORT_AGE))),),
                thresholds=((30.0, "orange"), (120.0, "red")),
                width=4,
                decimals=1,
            ),
        ),
    ),
    Row("Latency", tuple(latency.panel() for latency in LATENCY_PANELS)),
    Row(
        "Usage",
        (
            Panel(
                "tokens-per-minute",
                "LLM tokens per minute by type and model",
                "timeseries",
                "short",
                f"LLM tokens per minute over {RATE_INTERVAL}. {TOKEN_TYPES_NOTE}",
                (rate_by(m.LLM_TOKENS, _TOKENS_BY),),
                width=12,
            ),
            Panel(
                "tokens",
                "LLM tokens by type and model",
                "bargauge",
                "short",
                f"LLM tokens during the dashboard's range. {TOKEN_TYPES_NOTE} {_EXACT}",
                (total_by(m.LLM_TOKENS, _TOKENS_BY),),
                width=12,
            ),
            Panel(
                "tts-characters",
                "TTS characters",
                "bargauge",
                "short",
                f"Characters sent to text-to-speech during the dashboard's range, by model "
                f"(`{m.TTS_CHARACTERS.prometheus_name}`).",
                (total_by(m.TTS_CHARACTERS, (m.MODEL,)),),
                width=6,
                height=6,
            ),
            Panel(
                "tts-audio-minutes",
                "TTS audio minutes",
                "bargauge",
                "m",
                f"Minutes of audio text-to-speech produced during the dashboard's range, by "
                f"model (`{m.TTS_AUDIO.prometheus_name}` / 60), interrupted answers included.",
                (
                    instant(
                        f"{range_total(m.TTS_AUDIO, (m.MODEL,))} / 60",
                        legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                width=6,
                height=6,
                decimals=2,
            ),
            Panel(
                "stt-audio-minutes",
                "STT audio minutes",
                "bargauge",
                "m",
                f"Minutes of audio sent to speech-to-text during the dashboard's range, by "
                f"model (`{m.STT_AUDIO.prometheus_name}` / 60).",
                (
                    instant(
                        f"{range_total(m.STT_AUDIO, (m.MODEL,))} / 60",
                        legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                width=6,
                height=6,
                decimals=2,
            ),
            Panel(
                "cache-read-share",
                "Cache-read share of prompt tokens",
                "bargauge",
                "percentunit",
                "Share of the prompt (input) tokens read from the provider's prompt cache, by "
                "model, during the dashboard's range: cache_read / prompt. Cached tokens are "
                "billed at a discount. A model whose service does not report cache reads "
                "shows nothing (not reported is not zero).",
                (
                    instant(
                        f"{range_total(m.LLM_TOKENS, (m.MODEL,), token_type='cache_read')} / "
                        f"{range_total(m.LLM_TOKENS, (m.MODEL,), token_type='prompt')}",
                        legend((m.MODEL,)),
                        (m.MODEL,),
                    ),
                ),
                base_color="blue",
                width=6,
                height=6,
            ),
        ),
    ),
    Row(
        "Cost",
        (
            Panel(
                "cost-per-hour",
                "Cost per hour by service and model",
                "timeseries",
                "currencyUSD",
                f"Estimated spend rate in USD per hour over {RATE_INTERVAL}, by service type "
                "and model, and in total. The red line is the alert rules' default budget.",
                (rate_by(m.COST, COST_BY, 3600), Query(f"{rate(m.COST)} * 3600", "total")),
                thresholds=((alerts.DEFAULT_BUDGET_USD_PER_HOUR, "red"),),
                width=12,
            ),
            Panel(
                "cost-by-service",
                "Cost by service and model",
                "bargauge",
                "currencyUSD",
                f"Estimated cost during the dashboard's range by service type and model. {_EXACT}",
                (total_by(m.COST, COST_BY),),
                width=6,
                decimals=4,
            ),
            Panel(
                "projected-cost-per-day",
                "Projected cost per day",
                "stat",
                "currencyUSD",
                "The dashboard range's average spend rate, times 24 hours. Choose a range "
                "long enough to be typical (a day or a week).",
                (instant(f"{range_total(m.COST)} * 86400 / {RANGE_SECONDS}"),),
                thresholds=_DAY_COST,
                width=6,
                decimals=2,
            ),
            Panel(
                "most-expensive-calls",
                "Most expensive calls",
                "table",
                "currencyUSD",
                "Estimated cost of each call during the dashboard's range, most expensive "
                "first. Click a call to show it in the per-call row. Needs the exporter's "
                "call_id label.",
                (
                    Query(
                        f"topk(50, {range_total(m.COST, (m.CALL_ID,))})",
                        labels=(m.CALL_ID,),
                        instant=True,
                        table=True,
                    ),
                ),
                width=24,
                decimals=4,
                links=(CALL_LINK,),
            ),
        ),
    ),
)
