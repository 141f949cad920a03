"""The command line loads what the command it runs needs, and no more.

`pipecat-grafana dashboard` and `alerts` only write a file. They must not start by importing the
offline call of `pipecat-grafana demo`, with its scripted services, Pipecat's transports and
numpy's audio synthesis. Each command runs in a fresh interpreter, which then says what it
loaded.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("pipecat_grafana.offline", "pipecat.transports", "numpy", "pipecat_grafana.processor")

PROBE = f"""
import json
import sys

from pipecat_grafana import cli

status = cli.main(sys.argv[1:])
print(json.dumps({{"status": status, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""

FILE_COMMANDS = ("dashboard", "alerts")


def loaded_by(command: str, tmp_path) -> list[str]:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, command, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["status"] == 0
    assert out.read_text()
    return report["loaded"]


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_command_loads_neither_the_offline_call_nor_pipecat_transports(command, tmp_path):
    loaded = loaded_by(command, tmp_path)
    assert "pipecat_grafana.offline" not in loaded
    assert "pipecat.transports" not in loaded


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_command_loads_neither_numpy_nor_the_exporter(command, tmp_path):
    loaded = loaded_by(command, tmp_path)
    assert "numpy" not in loaded
    assert "pipecat_grafana.processor" not in loaded
