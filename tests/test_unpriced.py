"""Models without a price: the first few named in the log, then one line counting the rest.

A bot whose model name changes with every call (a fine-tune per customer, a version in the
name) would otherwise log one warning per name for ever. The summaries keep every name.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

from pipecat_grafana.pricing import UNPRICED_NAMED

REPO = Path(__file__).resolve().parents[1]
MODELS = 600

# A bot process: one call whose LLM reports MODELS distinct unpriced models, then exits.
BOT = textwrap.dedent(
    f"""
    import asyncio
    from pipecat.metrics.metrics import LLMUsageMetricsData
    from pipecat_grafana import GrafanaMetricsExporter
    from tests.helpers import Reporter, Trigger, metric, run_pipeline

    batch = [
        metric(LLMUsageMetricsData, processor="LLM#1", model=f"finetune-{{i}}")
        for i in range({MODELS})
    ]
    exporter = GrafanaMetricsExporter()
    asyncio.run(run_pipeline([Reporter([batch]), exporter], [Trigger("go")]))
    print("unpriced in the summary:", len(exporter.summary.unpriced_models))
    """
)


def test_unpriced_models_are_named_a_few_times_then_counted_once():
    result = subprocess.run(
        [sys.executable, "-c", BOT], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert f"unpriced in the summary: {MODELS}" in result.stdout
    named = [line for line in result.stderr.splitlines() if "no price for llm model" in line]
    assert len(named) == UNPRICED_NAMED
    (rest,) = [line for line in result.stderr.splitlines() if "more model" in line]
    assert f"{MODELS - UNPRICED_NAMED} more models" in rest
