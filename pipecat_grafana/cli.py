"""The ``pipecat-grafana`` command: check the connection, run a demo call, write Grafana files.

Each subcommand lives in its own module; this one only parses arguments and
turns a configuration mistake into one plain sentence and exit status 2,
never a traceback.
"""

import argparse
import sys
from collections.abc import Sequence

from pipecat_grafana import __version__
from pipecat_grafana.config import ConfigError

EPILOG = """\
examples:
  pipecat-grafana check                 test the Grafana Cloud connection from .env / environment
  pipecat-grafana demo --turns 6        run an offline call (no API keys) and export it
  pipecat-grafana dashboard --out voice-bot.json
  pipecat-grafana alerts --out voice-bot-rules.yml --budget-usd-per-hour 5
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pipecat-grafana",
        description="Production observability for Pipecat voice bots in Grafana.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.add_parser(commands)
    return parser


def _command_modules() -> list:
    from pipecat_grafana import commands

    return commands.ALL


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ConfigError as e:
        print(f"pipecat-grafana: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
