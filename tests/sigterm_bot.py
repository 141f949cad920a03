"""A bot process for test_sigterm.py: one call, run as the README says to run a deployed bot.

Run as ``python -m tests.sigterm_bot`` from the repository's root, exporting wherever the
environment says. The call runs until the process is told to stop: the worker runner is the
example bot's (``example_bot.worker_runner``), given the process's signals as Pipecat's
runner gives them to a bot it runs directly. ``on_call_summary`` prints one line
``on_call_summary: <call ID> <end reason>``.
"""

import asyncio
import sys

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.runner.types import RunnerArguments

import example_bot
from pipecat_grafana import GrafanaMetricsExporter


async def main() -> None:
    exporter = GrafanaMetricsExporter(service_name="sigterm-bot")

    @exporter.event_handler("on_call_summary")
    async def on_call_summary(exporter, summary):
        print(f"on_call_summary: {summary.call_id} {summary.end_reason}", file=sys.stderr)

    worker = PipelineWorker(
        Pipeline([exporter]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        cancel_on_idle_timeout=False,
    )
    runner_args = RunnerArguments()
    runner_args.handle_sigint = True  # as Pipecat's runner sets it for a bot it runs directly
    runner = example_bot.worker_runner(runner_args)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    asyncio.run(main())
