"""The subcommands of ``pipecat-grafana``.

Each module has ``add_parser(subparsers)``, which adds its subcommand with
``set_defaults(run=...)``; ``run(args)`` returns the exit status.
"""

from pipecat_grafana.commands import alerts, check, dashboard, demo

ALL = [check, demo, dashboard, alerts]
