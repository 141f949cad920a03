"""pipecat-grafana: production observability for Pipecat voice bots in Grafana.

Add ``GrafanaMetricsExporter`` to a pipeline and every Pipecat metric (latency,
usage, estimated cost, calls) is exported over OTLP/HTTP to Grafana Cloud,
tagged per call, with a call summary logged when the call ends.

The public names are imported when first used, so that a command which only
writes the dashboard does not load Pipecat and the export pipeline.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "CallSummary": "pipecat_grafana.summary",
    "ConfigError": "pipecat_grafana.config",
    "ExportConfig": "pipecat_grafana.config",
    "GrafanaMetricsExporter": "pipecat_grafana.processor",
    "LLMPrice": "pipecat_grafana.pricing",
    "LatencyStats": "pipecat_grafana.summary",
    "PriceTable": "pipecat_grafana.pricing",
    "STTPrice": "pipecat_grafana.pricing",
    "ServiceCost": "pipecat_grafana.summary",
    "TTSPrice": "pipecat_grafana.pricing",
    "shutdown": "pipecat_grafana.export",
}
__all__ = [
    "CallSummary",
    "ConfigError",
    "ExportConfig",
    "GrafanaMetricsExporter",
    "LLMPrice",
    "LatencyStats",
    "PriceTable",
    "STTPrice",
    "ServiceCost",
    "TTSPrice",
    "shutdown",
]

if TYPE_CHECKING:
    from pipecat_grafana.config import ConfigError, ExportConfig
    from pipecat_grafana.export import shutdown
    from pipecat_grafana.pricing import LLMPrice, PriceTable, STTPrice, TTSPrice
    from pipecat_grafana.processor import GrafanaMetricsExporter
    from pipecat_grafana.summary import CallSummary, LatencyStats, ServiceCost


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pipecat_grafana' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
