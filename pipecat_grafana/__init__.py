"""pipecat-grafana: production observability for Pipecat voice bots in Grafana.

Add ``GrafanaMetricsExporter`` to a pipeline and every Pipecat metric (latency,
usage, estimated cost, calls) is exported over OTLP/HTTP to Grafana Cloud,
tagged per call, with a call summary logged when the call ends.
"""

__version__ = "0.1.0"

from pipecat_grafana.config import ConfigError, ExportConfig  # noqa: E402
from pipecat_grafana.export import shutdown  # noqa: E402
from pipecat_grafana.pricing import LLMPrice, PriceTable, STTPrice, TTSPrice  # noqa: E402
from pipecat_grafana.processor import GrafanaMetricsExporter  # noqa: E402
from pipecat_grafana.summary import CallSummary, LatencyStats, ServiceCost  # noqa: E402

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
