"""A bad value of one setting: one warning naming it, its value and the default; export stays on.

Each case runs a real offline call (Pipecat's pipeline, the scripted services) with the
exporter, against the real local receiver: the call's metrics must arrive, and the log must
hold exactly one line about the variable, naming its value and the default used instead.
Nothing a user configures may raise out of ``GrafanaMetricsExporter()``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.offline import run_offline_call
from pipecat_grafana.pricing import PRICE_FILE_ENV
from tests.backends import REPO_ROOT

SPEED = 0.05


async def one_offline_call(exporter: GrafanaMetricsExporter) -> None:
    await run_offline_call(turns=1, processors=[exporter], speed=SPEED, seed=5, incidents=False)


@pytest.mark.parametrize(
    ("variable", "value", "default"),
    [
        (cfg.FLUSH_TIMEOUT, "-1", "5 s"),
        (cfg.OTEL_METRIC_EXPORT_INTERVAL, "ten seconds", "10000 ms"),
        (cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "0", "10 s"),
        (cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "abc", "10 s"),
        (cfg.OTEL_EXPORTER_OTLP_COMPRESSION, "brotli", "none"),
        (cfg.OTEL_EXPORTER_OTLP_PROTOCOL, "grpc", "http/protobuf"),
        (cfg.OTEL_RESOURCE_ATTRIBUTES, "a=1,broken", "no attribute from that item"),
        (cfg.CALL_ID_LABEL, "maybe", "true"),
        (cfg.CALL_HISTOGRAMS, "sometimes", "false"),
        (cfg.LOGS, "perhaps", "true"),
        (cfg.TRACES, "2", "false"),
        (cfg.HISTOGRAMS, "exponential", "classic"),
        # Six export intervals: the fixture exports every 200 ms.
        (cfg.HEARTBEAT, "0", "1.2 s (6 export intervals)"),
        (cfg.HISTOGRAM_INTERVAL, "1e9", "1.2 s (6 export intervals)"),
        (cfg.MAX_LABEL_VALUES, "\u00b2", "100"),
    ],
)
async def test_a_bad_value_warns_once_and_export_stays_on(
    monkeypatch, export_to, log_lines, variable, value, default
):
    receiver = export_to
    monkeypatch.setenv(variable, value)

    exporter = GrafanaMetricsExporter(service_name="fallback-bot")
    await one_offline_call(exporter)

    receiver.wait_for(lambda r: r.total(m.CALLS.name) == 1, timeout=10)
    # One line about it (the banner may name the variable in passing, as a switch).
    said = [line for line in log_lines if variable in line and "default" in line.lower()]
    assert len(said) == 1, said
    assert "WARNING" in said[0]
    assert f"Using the default, {default}" in said[0]
    assert repr(value) in said[0] or variable == cfg.OTEL_RESOURCE_ATTRIBUTES
    assert not [line for line in log_lines if "export is off" in line]
    assert exporter.summary.turns == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read"),
        ("[" * 100_000, "nested too deeply"),
        ('{"gpt-4o": {"input": 1' + "0" * 4300 + ', "output": 1}}', "cannot be read as JSON"),
        ('{"gpt-4o": {"input": 1e308, "output": 10}}', "not a plausible price"),
        ('{"cartesia": {"per_character": 1e300}}', "not a plausible price"),
    ],
)
async def test_a_bad_price_file_is_one_error_and_the_default_prices_apply(
    monkeypatch, export_to, log_lines, tmp_path, content, problem
):
    receiver = export_to
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))

    exporter = GrafanaMetricsExporter(service_name="fallback-bot")
    await one_offline_call(exporter)

    receiver.wait_for(lambda r: r.total(m.CALLS.name) == 1, timeout=10)
    said = [line for line in log_lines if PRICE_FILE_ENV in line]
    assert len(said) == 1 and problem in said[0]
    assert len(said[0]) < 2000  # a 4,300-digit number is not repeated whole
    # The default prices priced the call: finite, not zero.
    cost = exporter.summary.total_cost_usd
    assert cost is not None and 0 < cost < 1
    assert receiver.total(m.COST.name) == pytest.approx(cost)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (cfg.OTEL_EXPORTER_OTLP_ENDPOINT, "http://[::1"),
        (cfg.PROMETHEUS_PORT, "\u00b2"),
    ],
)
async def test_a_malformed_url_or_port_does_not_raise_out_of_the_constructor(
    monkeypatch, log_lines, variable, value
):
    monkeypatch.setenv(variable, value)
    exporter = GrafanaMetricsExporter(service_name="fallback-bot")
    await one_offline_call(exporter)
    errors = [line for line in log_lines if "ERROR" in line and variable in line]
    assert len(errors) == 1, errors
    assert exporter.summary.turns == 1


NOT_UTF8_TOKEN = b"glc_secret\xffTOKENVALUE"

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from loguru import logger
    logger.remove()
    # The application's own logging, with the tracebacks that show every local variable.
    logger.add(sys.stderr, backtrace=True, diagnose=True)
    from pipecat_grafana import GrafanaMetricsExporter
    from pipecat_grafana.offline import run_offline_call

    async def main():
        try:
            exporter = GrafanaMetricsExporter(service_name="utf8-bot")
        except Exception:
            logger.exception("the bot could not build its exporter")
            raise
        await run_offline_call(turns=1, processors=[exporter], speed=0.05, incidents=False)
        print("CALL ENDED", exporter.summary.turns, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_a_token_that_is_not_utf8_is_refused_naming_the_variable_and_the_bot_goes_on():
    """A real process, its environment given as bytes, as a shell with a stray byte gives it."""
    environment = {
        key: value
        for key, value in os.environb.items()
        if not key.startswith((b"OTEL_", b"PIPECAT_", b"GRAFANA_"))
    }
    environment.update(
        {
            cfg.GRAFANA_CLOUD_OTLP_ENDPOINT.encode(): b"https://127.0.0.1:9/otlp",
            cfg.GRAFANA_CLOUD_INSTANCE_ID.encode(): b"123456",
            cfg.GRAFANA_CLOUD_API_TOKEN.encode(): NOT_UTF8_TOKEN,
        }
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        timeout=120,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, output.decode(errors="replace")
    assert b"CALL ENDED 1" in output
    said = [line for line in output.splitlines() if cfg.GRAFANA_CLOUD_API_TOKEN.encode() in line]
    assert len(said) == 1 and b"not UTF-8" in said[0], said
    assert b"Traceback" not in output
    for part in (b"secret", b"TOKENVALUE", b"\\udcff", b"\\xff"):
        assert part not in output
