"""Export: the calls some reader still needs, the points to send, the pipelines that send.

- ``pending``: who still needs each call (``PendingCalls``), and retention.
- ``points``: which points an export sends (changed, heartbeat, zero first).
- ``pipeline``: one configuration's sending thread and OTLP client, and its summaries' and
  spans' own senders.
- ``process``: the process's pipelines (a part of the process's ``runtime``), and exit.
"""

from pipecat_grafana.export.pending import PUSH, SCRAPE, PendingCall, PendingCalls
from pipecat_grafana.export.pipeline import ExportPipeline
from pipecat_grafana.export.process import (
    pipelines,
    provider_pipeline,
    shared_pipeline,
    shutdown,
)

__all__ = [
    "PUSH",
    "SCRAPE",
    "ExportPipeline",
    "PendingCall",
    "PendingCalls",
    "pipelines",
    "provider_pipeline",
    "shared_pipeline",
    "shutdown",
]
