"""One bot process of a fleet: ``pipecat-grafana demo --calls 1``, its summary kept as JSON.

Run as ``python -m tests.fleet_call SUMMARY_JSON [demo flags]`` from the repository's root.
It runs what ``pipecat-grafana demo`` runs (``run_demo`` of an ``OfflineDemo``, with the
command's own flags) and then writes the call summaries, so that a test can add up what the
processes measured and compare it with what the store holds.
"""

import json
import sys
from pathlib import Path

from pipecat_grafana.cli import build_parser
from pipecat_grafana.commands.demo import OfflineDemo, run_demo


def main(out: Path, argv: list[str]) -> int:
    args = build_parser().parse_args(["demo", "--calls", "1", *argv])
    demo = OfflineDemo(
        turns=args.turns,
        calls=args.calls,
        rounds=args.rounds,
        speed=args.speed,
        seed=args.seed,
        incidents=args.incidents,
    )
    status = run_demo(demo, verbose=args.verbose)
    out.write_text(json.dumps([s.model_dump(mode="json") for s in demo.summaries]))
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
