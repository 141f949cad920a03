"""An exporter's settings: its arguments and the environment, resolved once, by one policy.

A bot must start whatever its environment holds, and a programmer's mistake must fail
where it is made. So:

- a malformed **argument** raises ``ValueError`` (the code is wrong; fix it there);
- a malformed **environment variable** is logged once, naming it, its value and the
  default used instead, and the exporter goes on: the setting's default for a number, a
  switch or a bound, the default prices for a price file, no scrape endpoint for its port
  or address; export is off only for what has no safe default (a malformed endpoint URL,
  malformed credentials).
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.metrics import MeterProvider

from pipecat_grafana import config as cfg
from pipecat_grafana import instruments
from pipecat_grafana.conversation import check_call_attributes
from pipecat_grafana.notices import error_once, warn_once
from pipecat_grafana.pricing import Price, PriceFileError, PriceTable
from pipecat_grafana.scrape_config import ScrapeConfig, resolve_scrape
from pipecat_grafana.variables import flag


@dataclass(frozen=True)
class ExporterSettings:
    """Everything an exporter was configured with, resolved and checked.

    Parameters:
        export: Where and how metrics are exported.
        scrape: The Prometheus endpoint to serve, ``None`` for none.
        misconfigured: An environment variable turned export off (already said).
        prices: The price table.
        declared: The call attributes the application may set, with allowed values.
        max_function_names: The bound on the ``function`` label.
        max_label_values: The bound on the ``model`` and ``processor`` labels.
        transcripts: Put what was said into the turn records.
    """

    export: cfg.ExportConfig
    scrape: ScrapeConfig | None
    misconfigured: bool
    prices: PriceTable
    declared: Mapping[str, tuple[str, ...]]
    max_function_names: int
    max_label_values: int
    transcripts: bool = False


def resolve(
    *,
    call_id_label: bool | None,
    export_interval_s: float | None,
    flush_timeout_s: float | None,
    logs: bool | None,
    traces: bool | None,
    histograms: str | None,
    prices: Mapping[str, Price | Mapping] | None,
    call_attributes: Mapping[str, Sequence[str]] | None,
    max_function_names: int,
    max_label_values: int | None,
    prometheus_port: int | None,
    prometheus_addr: str | None,
    meter_provider: MeterProvider | None,
    transcripts: bool | None = None,
) -> ExporterSettings:
    """Resolve an exporter's arguments against the environment.

    Raises:
        ValueError: An argument is malformed.
    """
    if transcripts is None:
        try:
            transcripts = flag(os.environ, cfg.TRANSCRIPTS, default=False)
        except cfg.ConfigError as e:
            # Off, the safe side: a typo must not send a conversation's words.
            warn_once(f"settings:{e}", f"{e} Using the default, false.")
            transcripts = False
    if max_function_names < 0:
        raise ValueError(f"max_function_names must be >= 0, got {max_function_names}")
    declared = check_call_attributes(call_attributes or {})
    try:
        label_values = cfg.max_label_values(max_label_values)
    except cfg.ConfigError as e:
        warn_once(f"settings:{e}", f"{e} Using the default, {cfg.DEFAULT_MAX_LABEL_VALUES}.")
        label_values = cfg.DEFAULT_MAX_LABEL_VALUES
    try:
        table = PriceTable(overrides=prices)
    except PriceFileError as e:
        error_once(f"settings:{e}", f"{e} Using the default prices and the prices= argument.")
        table = PriceTable(overrides=prices, load_env=False)
    if (
        meter_provider is not None
        and call_id_label is None
        and not os.environ.get(cfg.CALL_ID_LABEL, "").strip()
    ):
        call_id_label = False  # the default with the application's provider: see below
    try:
        export = cfg.resolve(
            call_id_label=call_id_label,
            export_interval_s=export_interval_s,
            flush_timeout_s=flush_timeout_s,
            logs=logs,
            traces=traces,
            histograms=histograms,
        )
    except cfg.ConfigError as e:
        error_once(f"settings:{e}", f"metrics export is off: {e}")
        export = cfg.ExportConfig(endpoint=None, call_id_label=call_id_label is not False)
        misconfigured = True
    else:
        misconfigured = False
        for notice in export.notices:
            warn_once(notice, notice)
        if meter_provider is not None and export.call_id_label:
            _warn_provider_call_id()
    return ExporterSettings(
        export=export,
        scrape=_scrape(prometheus_port, prometheus_addr, meter_provider),
        misconfigured=misconfigured,
        prices=table,
        declared=declared,
        max_function_names=max_function_names,
        max_label_values=label_values,
        transcripts=transcripts,
    )


def _warn_provider_call_id() -> None:
    """Say once what ``call_id`` costs with the application's provider.

    The SDK keeps every attribute set a provider has seen for the life of the provider, and
    no OpenTelemetry API ends a series: each call's series are exported at every
    collection for ever. Per-call detail is in the summary, its log record and exemplars.
    """
    carrying = sum(1 for spec in instruments.ALL if instruments.carries_call_id(spec))
    warn_once(
        "provider:call_id",
        "call_id is on with meter_provider=: every call adds its own series (one per "
        f"model, service and label set of the {carrying} instruments that carry call_id) "
        "to the application's provider, which exports them at every collection for the "
        "life of the process (after 1,000 calls of 20 series each, 20,000 points a "
        "collection): OpenTelemetry has no way to end a series. Leave call_id off with a "
        "provider of your own (the default there); each call's detail is in its summary.",
    )


def _scrape(
    port: int | None, addr: str | None, meter_provider: MeterProvider | None
) -> ScrapeConfig | None:
    if meter_provider is not None:
        if port is not None or addr is not None:
            raise ValueError(
                "prometheus_port/prometheus_addr cannot be used with meter_provider=: the "
                "application's provider owns its export (give it a Prometheus reader)"
            )
        if os.environ.get(cfg.PROMETHEUS_PORT, "").strip():
            warn_once(
                "scrape:provider",
                f"{cfg.PROMETHEUS_PORT} is ignored with meter_provider=: the application's "
                "provider owns its export (logged once)",
            )
        return None
    try:
        return resolve_scrape(port=port, addr=addr)
    except cfg.ConfigError as e:
        error_once(f"settings:{e}", f"the Prometheus endpoint is off: {e}")
        return None
