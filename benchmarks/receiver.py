"""The test suite's OTLP receiver, run in a process of its own for ``bench.py``.

Grafana Cloud decodes our requests on another machine. Run in the benchmark's
process, the receiver's HTTP parsing and protobuf decoding would hold the GIL
the measured event loop needs, and every request it keeps would count in the
benchmark's RSS. So ``bench.py`` starts this script as a child process and
talks to it over stdin/stdout, one line each way:

- the child first prints its endpoint (``http://127.0.0.1:PORT``);
- then it answers each command with one JSON line of running totals:
  ``stats`` (just the totals), ``hang`` (stop answering requests) or ``quit``.
  The totals count metric requests and their bytes, and call summary log
  records and the bytes of their requests.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.otlp_receiver import OtlpReceiver  # noqa: E402 (needs the repository on the path)


def main() -> None:
    """Serve until stdin closes or ``quit`` arrives."""
    totals = {
        "accepted": 0,
        "bytes": 0,
        "last_bytes": 0,
        "unanswered": 0,
        "log_records": 0,
        "log_bytes": 0,
    }
    with OtlpReceiver() as receiver:
        print(receiver.endpoint, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "hang":
                receiver.hang()
            # Fold what arrived into the totals and forget it, so a long run stays small.
            accepted, unanswered, logs = receiver.requests, receiver.rejected, receiver.logs
            totals["log_bytes"] = receiver.bytes_of("logs")  # a running total already
            receiver.clear()
            totals["log_records"] += len(logs)
            totals["accepted"] += len(accepted)
            totals["bytes"] += sum(r.size for r in accepted)
            totals["unanswered"] += len(unanswered)
            if accepted:
                totals["last_bytes"] = accepted[-1].size
            print(json.dumps(totals), flush=True)
            if command == "quit":
                return


if __name__ == "__main__":
    main()
