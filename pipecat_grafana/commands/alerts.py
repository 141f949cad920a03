"""``pipecat-grafana alerts``: print or write the Prometheus/Mimir alert rules.

The rules are built from the metric contract each time, with the levels given here, so they
always match the metrics this version of the package exports.
"""

import argparse
import sys
from pathlib import Path

from pipecat_grafana.commands._arguments import positive
from pipecat_grafana.grafana import alerts

EPILOG = (
    """\
examples:
  pipecat-grafana alerts > voice-bot-rules.yml
  pipecat-grafana alerts --out voice-bot-rules.yml --budget-usd-per-hour 5
  pipecat-grafana alerts --ttfb-p95-ms 1500 --ttfa-p95-ms 800 --out voice-bot-rules.yml
  pipecat-grafana alerts --turn-latency-p95-ms 1500 --errors-per-minute 5 > voice-bot-rules.yml
  pipecat-grafana alerts --greeting-p95-ms 2000 --event-loop-lag-p99-ms 20 > voice-bot-rules.yml
  promtool check rules voice-bot-rules.yml

alerts:
"""
    + "".join(
        f"  {rule.name:<30} {rule.severity:<9} {rule.op} {rule.threshold:g} for {rule.for_}\n"
        for rule in alerts.alert_rules()
    )
    + f"""
Import into Grafana: {alerts.IMPORT_PATH}.
Or load them into the Mimir ruler with `mimirtool rules load` (write them with --namespace).
"""
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``alerts`` subcommand."""
    parser = subparsers.add_parser(
        "alerts",
        help="print or write the Prometheus/Mimir alert rules",
        description="Print the alert rules for the exported metrics, or write them to a file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, help="write the rules to FILE instead of printing them"
    )
    parser.add_argument(
        "--budget-usd-per-hour",
        type=positive(),
        default=alerts.DEFAULT_BUDGET_USD_PER_HOUR,
        metavar="USD",
        help="alert when a service's estimated cost in the last hour exceeds this "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--ttfb-p95-ms",
        type=positive(),
        default=alerts.DEFAULT_TTFB_P95_MS,
        metavar="MS",
        help="alert when a processor's TTFB p95 stays above this for 5m (default: %(default)g)",
    )
    parser.add_argument(
        "--ttfa-p95-ms",
        type=positive(),
        default=alerts.DEFAULT_TTFA_P95_MS,
        metavar="MS",
        help="alert when a TTS's time to first audio p95 stays above this for 5m "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--turn-latency-p95-ms",
        type=positive(),
        default=alerts.DEFAULT_TURN_LATENCY_P95_MS,
        metavar="MS",
        help="alert when a service's turn latency p95 (the caller's wait for the bot's first "
        "audio) stays above this for 5m (default: %(default)g)",
    )
    parser.add_argument(
        "--errors-per-minute",
        type=positive(),
        default=alerts.DEFAULT_ERRORS_PER_MINUTE,
        metavar="N",
        help="alert when a processor's errors per minute stay above this for 3m "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--rate-limits-per-minute",
        type=positive(),
        default=alerts.DEFAULT_RATE_LIMITS_PER_MINUTE,
        metavar="N",
        help="warn when a processor's rate-limit errors per minute stay above this for 2m "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--rate-limit-burst-per-minute",
        type=positive(),
        default=alerts.DEFAULT_RATE_LIMIT_BURST_PER_MINUTE,
        metavar="N",
        help="page (critical) when a processor's rate-limit errors per minute stay above this "
        "for 1m (default: %(default)g)",
    )
    parser.add_argument(
        "--greeting-p95-ms",
        type=positive(),
        default=alerts.DEFAULT_GREETING_P95_MS,
        metavar="MS",
        help="alert when a service's greeting latency p95 (the caller's wait from connecting "
        "to the bot's first words) stays above this for 5m (default: %(default)g)",
    )
    parser.add_argument(
        "--event-loop-lag-p99-ms",
        type=positive(),
        default=alerts.DEFAULT_EVENT_LOOP_LAG_P99_MS,
        metavar="MS",
        help="alert when a process's event-loop lag p99 stays above this for 5m "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--export-failures-per-minute",
        type=positive(),
        default=alerts.DEFAULT_EXPORT_FAILURES_PER_MINUTE,
        metavar="N",
        help="alert when a process's failed metric exports per minute, for one reason, stay "
        "above this for 5m (default: %(default)g)",
    )
    parser.add_argument(
        "--silence-minutes",
        type=positive(),
        default=alerts.DEFAULT_SILENCE_MINUTES,
        metavar="MIN",
        help="alert when a process with active calls sends nothing for this long "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help="add a top-level namespace, as `mimirtool rules load` wants "
        "(promtool and Prometheus then refuse the file)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print or write the rules; returns the exit status."""
    levels = {
        name: value
        for name, value, default in (
            ("ttfb_p95_ms", args.ttfb_p95_ms, alerts.DEFAULT_TTFB_P95_MS),
            ("ttfa_p95_ms", args.ttfa_p95_ms, alerts.DEFAULT_TTFA_P95_MS),
            ("budget_usd_per_hour", args.budget_usd_per_hour, alerts.DEFAULT_BUDGET_USD_PER_HOUR),
            ("silence_minutes", args.silence_minutes, alerts.DEFAULT_SILENCE_MINUTES),
            (
                "turn_latency_p95_ms",
                args.turn_latency_p95_ms,
                alerts.DEFAULT_TURN_LATENCY_P95_MS,
            ),
            ("errors_per_minute", args.errors_per_minute, alerts.DEFAULT_ERRORS_PER_MINUTE),
            (
                "rate_limits_per_minute",
                args.rate_limits_per_minute,
                alerts.DEFAULT_RATE_LIMITS_PER_MINUTE,
            ),
            (
                "rate_limit_burst_per_minute",
                args.rate_limit_burst_per_minute,
                alerts.DEFAULT_RATE_LIMIT_BURST_PER_MINUTE,
            ),
            ("greeting_p95_ms", args.greeting_p95_ms, alerts.DEFAULT_GREETING_P95_MS),
            (
                "event_loop_lag_p99_ms",
                args.event_loop_lag_p99_ms,
                alerts.DEFAULT_EVENT_LOOP_LAG_P99_MS,
            ),
            (
                "export_failures_per_minute",
                args.export_failures_per_minute,
                alerts.DEFAULT_EXPORT_FAILURES_PER_MINUTE,
            ),
        )
        if value != default
    }
    text = alerts.rules_yaml(namespace=args.namespace, **levels)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.write_text(text)
    print(f"Wrote the alert rules to {args.out}.", file=sys.stderr)
    return 0
