"""A bot process for test_scrape_e2e.py: the end-to-end workload, served for Prometheus.

Run as ``python -m tests.scrape_bot SUMMARIES_JSON`` from the repository's root, with
``PIPECAT_GRAFANA_PROMETHEUS_PORT`` set and no OTLP endpoint (pull alone). It runs the
calls of test_e2e_grafana.py (two services, one with the ``call_id`` label and one
without, each with complete offline calls and one call held open), waits until scrapes
have read every ended call, writes the call summaries, prints one line
``ready {"threads": [...]}`` and then serves until killed, its held calls still in
progress, as a bot process that dies mid-call.
"""

import asyncio
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

from pipecat_grafana import scrape
from pipecat_grafana.commands.demo import scripted_outcome
from pipecat_grafana.offline import run_offline_calls
from tests.test_e2e_grafana import CALLS, SERVICES, SPEED, TURNS, HeldCall, _exporter, _seed

READ_TIMEOUT_S = 60


def _scraped(endpoint: scrape.ScrapeEndpoint, timeout_s: float) -> bool:
    """Wait until scrapes have read every ended call; Prometheus may not scrape yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if endpoint.collector.wait_scraped(1):
            return True
        time.sleep(0.1)
    return False


async def main(summaries_path: Path) -> None:
    exporters = {service: [] for service in SERVICES}

    def factory(service: str, seed: int):
        seeds = itertools.count(seed)

        def make():
            exporter = _exporter(service, SERVICES[service])
            exporter.set_call_attributes(outcome=scripted_outcome(next(seeds)))
            exporters[service].append(exporter)
            return [exporter]

        return make

    held = [HeldCall(_exporter(service, label)) for service, label in SERVICES.items()]
    for call in held:
        await call.start()
    await asyncio.gather(
        *(
            run_offline_calls(
                calls=CALLS,
                turns=TURNS,
                speed=SPEED,
                seed=_seed(index),
                processors_factory=factory(service, _seed(index)),
            )
            for index, service in enumerate(SERVICES)
        )
    )
    if not await asyncio.to_thread(_scraped, scrape.running(), READ_TIMEOUT_S):
        print("failed: the ended calls were not scraped (is Prometheus scraping?)", flush=True)
        os._exit(1)  # the held calls would hold up a clean exit
    summaries = {
        service: [e.summary.model_dump(mode="json") for e in found]
        for service, found in exporters.items()
    }
    await asyncio.to_thread(summaries_path.write_text, json.dumps(summaries))
    threads = sorted(t.name for t in threading.enumerate())
    print("ready " + json.dumps({"threads": threads}), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # serve until killed


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
