"""``pipecat-grafana dashboard``: print or write the Grafana dashboard JSON.

The JSON is built from the metric contract each time, so it always matches the metrics this
version of the package exports.
"""

import argparse
import sys
from pathlib import Path

from pipecat_grafana.grafana import dashboard

EPILOG = """\
examples:
  pipecat-grafana dashboard > voice-bot.json
  pipecat-grafana dashboard --out voice-bot.json
  pipecat-grafana dashboard --service-label service_name --no-native-histograms \
      --out voice-bot.json   # VictoriaMetrics

Import it in Grafana Cloud: Dashboards > New > Import > Upload dashboard JSON file, then pick
your Prometheus data source (grafanacloud-<stack>-prom) in the dashboard's "Data source" list,
and your Loki and Tempo ones (grafanacloud-<stack>-logs, -traces) in "Logs" and "Traces".
It also loads as it is by file provisioning.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``dashboard`` subcommand."""
    parser = subparsers.add_parser(
        "dashboard",
        help="print or write the Grafana dashboard JSON",
        description="Print the Grafana dashboard for the exported metrics, or write it to a file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="write the dashboard to FILE instead of printing it",
    )
    parser.add_argument(
        "--service-label",
        default=dashboard.SERVICE_LABELS[0],
        metavar="LABEL",
        help="the label holding service.name, selected by default: job (Grafana Cloud, Mimir, "
        "Prometheus; the default) or service_name (VictoriaMetrics); switchable in Grafana",
    )
    parser.add_argument(
        "--no-native-histograms",
        dest="native_histograms",
        action="store_false",
        help="select 'skip' in the dashboard's Native histograms variable: for VictoriaMetrics, "
        "which has none and refuses histogram_count; switchable in Grafana",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print or write the dashboard; returns the exit status."""
    try:
        text = dashboard.dashboard_json(
            service_label=args.service_label, native_histograms=args.native_histograms
        )
    except ValueError as e:
        print(f"pipecat-grafana dashboard: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.write_text(text)
    print(
        f"Wrote the dashboard to {args.out}. Import it in Grafana: Dashboards > New > Import.",
        file=sys.stderr,
    )
    return 0
