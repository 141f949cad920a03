"""Garbage-collection pauses in a bot process during a call, with and without ``gc.freeze()``.

A voice bot imports Pipecat, its services and OpenTelemetry before its first call:
hundreds of thousands of long-lived objects. CPython's full (generation 2)
collection walks all of them, on the event loop's thread, so a full pass during
a call stops every frame of every call for as long as it takes. ``gc.freeze()``
after start-up moves what exists into a permanent generation that collections no
longer walk.

Each run is a fresh process (``--child``) that imports what a bot imports, builds
the exporter (exporting to a live receiver in another process), then runs one
offline call of three turns at normal pace while ``gc.callbacks`` time every
collection pass. Runs alternate between "as is" and ``gc.freeze()`` right before
the call. It decides no test's outcome; run it by hand::

    .venv/bin/python benchmarks/gc_pauses.py            # 5 runs of each, about two minutes
    .venv/bin/python benchmarks/gc_pauses.py --runs 10
"""

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TURNS = 3


def child(freeze: bool, seed: int, endpoint: str) -> None:
    """One bot process: start up, optionally freeze, run a three-turn call, print the passes."""
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PIPECAT_GRAFANA_LOGS": "false"})
    from loguru import logger

    logger.remove()  # the summary and Pipecat's debug lines would be timed with the call
    from pipecat_grafana import GrafanaMetricsExporter, shutdown
    from pipecat_grafana.commands.demo import CALL_ATTRIBUTES
    from pipecat_grafana.offline.call import run_offline_call

    exporter = GrafanaMetricsExporter(call_attributes=CALL_ATTRIBUTES)
    if freeze:
        gc.collect()
        gc.freeze()
    passes: list[dict] = []
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            passes.append(
                {
                    "generation": info["generation"],
                    "ms": (time.perf_counter() - started["t"]) * 1000,
                    "collected": info["collected"],
                    "at_s": started["t"] - begin,
                }
            )

    begin = time.perf_counter()
    gc.callbacks.append(on_gc)
    asyncio.run(run_offline_call(turns=TURNS, processors=[exporter], speed=1.0, seed=seed))
    call_s = time.perf_counter() - begin
    gc.callbacks.remove(on_gc)
    shutdown(timeout_s=2)
    print(
        json.dumps(
            {
                "passes": passes,
                "call_s": call_s,
                "tracked": len(gc.get_objects()),
                "frozen": gc.get_freeze_count(),
            }
        )
    )


def main() -> None:
    """Alternate fresh processes with and without ``gc.freeze()``; print what each saw."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each mode (default 5)")
    parser.add_argument("--child", choices=("as-is", "freeze"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child == "freeze", args.seed, args.endpoint)
        return

    receiver = subprocess.Popen(
        [sys.executable, str(HERE / "receiver.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    endpoint = receiver.stdout.readline().strip()
    results: dict[str, list[dict]] = {"as-is": [], "freeze": []}
    try:
        for run in range(args.runs):
            for mode in results:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--seed", str(run)]
                    + ["--endpoint", endpoint],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(result)
                full = [p for p in result["passes"] if p["generation"] == 2]
                young = [p["ms"] for p in result["passes"] if p["generation"] < 2]
                print(
                    f"{mode:7} run {run}: call {result['call_s']:.1f} s, "
                    f"{len(full)} full pass(es) "
                    + ", ".join(f"{p['ms']:.0f} ms at {p['at_s']:.1f} s" for p in full)
                    + "; "
                    f"{len(young)} young passes, longest {max(young, default=0):.1f} ms; "
                    f"objects tracked {result['tracked']:,}, frozen {result['frozen']:,}",
                    flush=True,
                )
    finally:
        receiver.stdin.write("quit\n")
        receiver.stdin.flush()
        receiver.wait(timeout=10)

    print()
    for mode, runs in results.items():
        full = [p["ms"] for r in runs for p in r["passes"] if p["generation"] == 2]
        young = [p["ms"] for r in runs for p in r["passes"] if p["generation"] < 2]
        print(
            f"{mode:7}: {len(full)} full passes in {len(runs)} calls"
            + (
                f" (median {statistics.median(full):.0f} ms, max {max(full):.0f} ms)"
                if full
                else ""
            )
            + f"; young passes: {len(young)}, longest {max(young, default=0):.1f} ms"
        )


if __name__ == "__main__":
    main()
