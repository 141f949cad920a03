"""The subcommands of ``pipecat-grafana``.

Each command module has ``add_parser(subparsers)``, which adds its subcommand with
``set_defaults(run=...)``; ``run(args)`` returns the exit status. ``_arguments`` holds
what their arguments share.
"""

from pipecat_grafana.commands import alerts, check, dashboard, demo

ALL = [check, demo, dashboard, alerts]
