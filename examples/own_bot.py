"""A bot of your own with the exporter, runnable without API keys.

Swap the two scripted services for your providers (OpenAILLMService, CartesiaTTSService, ...)
and the queued message for your transport; the exporter and the worker stay as they are.
Export goes where GRAFANA_CLOUD_* or OTEL_EXPORTER_OTLP_ENDPOINT say (test it with
`pipecat-grafana check`); without them the call summary is still logged.
"""

import asyncio

from pipecat.frames.frames import EndFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.workers.runner import WorkerRunner

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana.offline import ScriptedLLMService, ScriptedTTSService


async def main():
    llm = ScriptedLLMService(replies=["Your plan renews on the 3rd of each month."])
    tts = ScriptedTTSService()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(LLMContext())
    grafana = GrafanaMetricsExporter(
        llm_model="gpt-4o", tts_model="cartesia", service_name="my-bot"
    )
    pipeline = Pipeline([user_aggregator, llm, tts, assistant_aggregator, grafana])
    worker = PipelineWorker(
        pipeline,
        # Both flags, or Pipecat reports no latency (enable_metrics) or no usage and cost.
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
    )
    question = {"role": "user", "content": "When does my plan renew?"}
    await worker.queue_frames([LLMMessagesAppendFrame([question], run_llm=True), EndFrame()])
    # SIGTERM (docker stop, Kubernetes) then ends the call as Ctrl-C does, summary and all.
    runner = WorkerRunner(handle_sigterm=True)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    asyncio.run(main())
