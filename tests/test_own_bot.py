"""examples/own_bot.py, the README's "in your own bot": run as a user runs it, keyless.

A real process, a real pipeline (the package's scripted LLM and TTS on Pipecat's service
classes), exporting to the local OTLP receiver; the README shows that very file.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m

pytestmark = pytest.mark.slow  # runs the README's bot as a process

REPO = Path(__file__).resolve().parents[1]
OWN_BOT = REPO / "examples" / "own_bot.py"


def test_the_readme_shows_the_example_file_whole():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert OWN_BOT.read_text() in blocks


def test_the_example_runs_without_keys_and_its_metrics_arrive(receiver, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env[cfg.OTEL_EXPORTER_OTLP_ENDPOINT] = receiver.endpoint
    result = subprocess.run(
        [sys.executable, str(OWN_BOT)],
        env=env,
        cwd=tmp_path,  # no .env
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Call Summary" in result.stderr and "(ended)" in result.stderr
    assert "| ERROR" not in result.stderr
    # The call's end exports at once: everything is there when the process has exited.
    assert receiver.total(m.CALLS.name) == 1
    assert receiver.total(m.LLM_TOKENS.name, token_type="completion") > 0
    assert receiver.total(m.TTS_CHARACTERS.name, model="cartesia") == len(
        "Your plan renews on the 3rd of each month."
    )
    assert receiver.total(m.COST.name, service_type="llm", model="gpt-4o") > 0
    assert {p.resource["service.name"] for p in receiver.points()} == {"my-bot"}
    processors = {p.attributes[m.PROCESSOR] for p in receiver.points(m.TTFB.name)}
    assert processors == {"ScriptedLLMService", "ScriptedTTSService"}
