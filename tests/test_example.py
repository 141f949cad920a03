"""example_bot.py and `pipecat-grafana demo`: an offline call without keys, Ctrl-C, the real bot's shape.

The offline runs are real processes, as a user starts them: in an empty directory (no .env),
without API keys, exporting to a local OTLP receiver.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.pricing import PRICE_FILE_ENV
from tests.otlp_receiver import OtlpReceiver
from tests.test_offline_export import METRICS_MD_FAMILIES

pytestmark = pytest.mark.slow  # runs the example bot and the demo command as processes

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_bot.py"
API_KEYS = ("OPENAI_API_KEY", "GLADIA_API_KEY", "CARTESIA_API_KEY")
# Bounds, in seconds, generous for a loaded machine: a process start imports Pipecat
# (about 1.5 s); a call of two turns at speed 0.05 takes under a second.
RUN_TIMEOUT_S = 60
EXIT_AFTER_SIGINT_S = 15


def offline_env(receiver: OtlpReceiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in API_KEYS}
    env[cfg.OTEL_EXPORTER_OTLP_ENDPOINT] = receiver.endpoint
    env[cfg.OTEL_METRIC_EXPORT_INTERVAL] = "200"
    return env


def run(args: list[str], receiver: OtlpReceiver, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        env=offline_env(receiver),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def test_without_keys_the_example_runs_an_offline_call_and_says_so(receiver, tmp_path):
    started = time.monotonic()
    result = run([str(EXAMPLE), "--turns", "2", "--speed", "0.05"], receiver, tmp_path)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "running an offline call" in log
    for key in API_KEYS:
        assert key in log
    assert "Call Summary" in log and "(ended)" in log
    # INFO by default: the metrics logger's lines (DEBUG) stay out of the way.
    assert "DEBUG" not in log
    assert elapsed < RUN_TIMEOUT_S
    # The scripted rate limit is announced before Pipecat logs it as an ERROR.
    announced = log.index("scripted rate limit")
    assert "barge-in" in log[:announced] and "tool call" in log[:announced]
    assert announced < log.index("TTS request refused: 429")
    receiver.wait_for(lambda r: r.total(m.SESSION_DURATION.name, end_reason="ended") == 1, 5)
    assert {spec.name for spec in METRICS_MD_FAMILIES} <= receiver.names()


def test_ctrl_c_ends_the_call_cleanly_with_its_summary_and_final_export(receiver, tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--turns", "50"],
        env=offline_env(receiver),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The call has started once its first export arrives.
        receiver.wait_for(lambda r: r.total(m.CALLS.name) == 1, timeout=RUN_TIMEOUT_S)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, log = process.communicate(timeout=EXIT_AFTER_SIGINT_S)
        exit_time = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, log
    assert exit_time < EXIT_AFTER_SIGINT_S
    assert "Interrupted" in log
    assert "Call Summary" in log and "(cancelled)" in log
    # The final export happened before the process exited.
    (duration,) = receiver.latest(m.SESSION_DURATION.name).values()
    assert duration.attributes[m.END_REASON] == "cancelled"
    assert duration.value == 1
    assert receiver.total(m.CALLS_ACTIVE.name) == 0


def test_demo_command_runs_concurrent_calls(receiver, tmp_path):
    result = run(
        ["-m", "pipecat_grafana.cli", "demo", "--turns", "1", "--calls", "2", "--speed", "0.05"],
        receiver,
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Call Summary") == 2
    assert "2 call(s), 2 ended" in result.stderr
    receiver.wait_for(lambda r: r.total(m.CALLS.name) == 2, 5)


def test_demo_help_has_examples(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipecat_grafana.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert "examples:" in result.stdout
    for flag in ("--turns", "--calls", "--rounds", "--speed", "--verbose"):
        assert flag in result.stdout


@pytest.fixture
def example(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    import example_bot

    return example_bot


def test_runner_options_are_refused_in_offline_mode(example, monkeypatch, capsys):
    for key in API_KEYS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--port", "7861"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --port 7861" in capsys.readouterr().err


def flatten(processor) -> list:
    # Compound processors (pipelines) list their sub-processors; the others none.
    children = processor.processors
    if not children:
        return [processor]
    return [p for child in children for p in flatten(child)]


def test_the_real_bot_is_the_seed_pipeline(example, monkeypatch):
    """Built with dummy keys on an offline transport: nothing connects until the pipeline runs."""
    pytest.importorskip("pipecat.services.gladia.stt")
    from pipecat.observers.loggers.metrics_log_observer import MetricsLogObserver
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMAssistantAggregator,
        LLMUserAggregator,
    )
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.gladia.stt import GladiaSTTService
    from pipecat.services.openai.llm import OpenAILLMService

    from pipecat_grafana.offline import OfflineTransport

    for key in API_KEYS:
        monkeypatch.setenv(key, "dummy-key")
    transport = OfflineTransport(utterances=["hello"], rng=random.Random(0))

    worker = example.build_bot(transport)

    kinds = (
        type(transport.input()),
        GladiaSTTService,
        LLMUserAggregator,
        OpenAILLMService,
        CartesiaTTSService,
        type(transport.output()),
        LLMAssistantAggregator,
        GrafanaMetricsExporter,
    )
    ours = [p for p in flatten(worker.pipeline) if isinstance(p, kinds)]
    assert [type(p) for p in ours] == list(kinds)
    llm, exporter = ours[3], ours[-1]
    assert llm._settings.model == "gpt-4o"
    assert exporter._models == {"llm": "gpt-4o", "stt": "gladia", "tts": "cartesia"}
    assert exporter._service_name == "voice-rag-bot"
    assert worker.params.enable_metrics and worker.params.enable_usage_metrics
    # The metrics logger, as an observer of every processor.
    assert any(isinstance(o, MetricsLogObserver) for o in worker._observer._observers)


def test_transport_parameters_for_the_runners_transports(example):
    params = example.transport_params()
    assert {"webrtc", "daily", "twilio", "telnyx", "plivo", "exotel"} <= set(params)
    webrtc = params["webrtc"]()
    assert webrtc.audio_in_enabled and webrtc.audio_out_enabled


def test_a_configuration_mistake_stops_the_example_in_one_line(receiver, tmp_path):
    env = offline_env(receiver)
    env[cfg.GRAFANA_CLOUD_OTLP_ENDPOINT] = "otlp-gateway-prod-eu-west-2.grafana.net/otlp"
    env[cfg.GRAFANA_CLOUD_INSTANCE_ID] = "123456"
    env[cfg.GRAFANA_CLOUD_API_TOKEN] = "glc_secret"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "configuration error" in x]
    assert cfg.GRAFANA_CLOUD_OTLP_ENDPOINT in line
    assert "glc_secret" not in result.stderr


def env_example_names() -> dict[str, str]:
    """Each variable of .env.example, set or commented out, with its value."""
    names = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.removeprefix("# ").strip()
        name, sep, value = line.partition("=")
        if sep and name.isupper() and name.replace("_", "").isalnum():
            names[name] = value
    return names


def test_env_example_lists_every_variable_and_sets_no_secret():
    names = env_example_names()
    expected = {
        *(
            value
            for key, value in vars(cfg).items()
            if key.isupper() and isinstance(value, str) and value.isupper() and "_" in value
        ),
        PRICE_FILE_ENV,
        *API_KEYS,
        "CARTESIA_VOICE_ID",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    }
    assert expected <= set(names)
    # Copied to .env as it is, it turns nothing on: no key, no credentials.
    secrets = (*API_KEYS, cfg.GRAFANA_CLOUD_API_TOKEN, cfg.GRAFANA_CLOUD_INSTANCE_ID)
    for name in secrets:
        assert names[name] == "", name
