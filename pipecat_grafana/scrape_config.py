"""Where the process's Prometheus scrape endpoint listens: arguments, then variables.

Apart from ``config`` (where metrics are pushed) because the endpoint is a process's, not
an exporter's, and it is read only when a port is asked for.
"""

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipecat_grafana.variables import (
    DEFAULT_PROMETHEUS_ADDR,
    PROMETHEUS_ADDR,
    PROMETHEUS_PORT,
    ConfigError,
)


@dataclass(frozen=True)
class ScrapeConfig:
    """Where the process's Prometheus scrape endpoint listens.

    Parameters:
        addr: The address to listen on (an IP address or a host name).
        port: The TCP port.
        addr_source: The variable or argument the address came from, for messages.
        port_source: The same, for the port.
    """

    addr: str
    port: int
    addr_source: str = PROMETHEUS_ADDR
    port_source: str = PROMETHEUS_PORT

    @property
    def url(self) -> str:
        """The URL Prometheus scrapes (``/metrics``)."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"


def resolve_scrape(
    env: Mapping[str, str] | None = None, *, port: int | None = None, addr: str | None = None
) -> ScrapeConfig | None:
    """Resolve the Prometheus scrape endpoint's address: arguments, then variables.

    Args:
        env: The environment to read (``os.environ`` by default).
        port: The port (overrides ``PIPECAT_GRAFANA_PROMETHEUS_PORT``).
        addr: The address (overrides ``PIPECAT_GRAFANA_PROMETHEUS_ADDR``).

    Returns:
        The endpoint's address, or ``None`` when no port is set (no endpoint).

    Raises:
        ConfigError: A variable is malformed; the message names it.
        ValueError: An argument is.
    """
    env = os.environ if env is None else env
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"prometheus_port must be a TCP port from 1 to 65535, got {port!r}")
        port_source = "prometheus_port="
    elif raw := env.get(PROMETHEUS_PORT, "").strip():
        # isascii: "²" passes isdigit() and fails int().
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
            raise ConfigError(
                f"{PROMETHEUS_PORT}={raw!r} is not a TCP port from 1 to 65535: set it to the "
                "port Prometheus scrapes, for example 9464."
            )
        port, port_source = int(raw), PROMETHEUS_PORT
    if addr is not None:
        if not isinstance(addr, str) or not _is_address(addr.strip()):
            raise ValueError(
                f"prometheus_addr must be an IP address or host name, for example "
                f"{DEFAULT_PROMETHEUS_ADDR} or 0.0.0.0, got {addr!r}"
            )
        addr, addr_source = addr.strip(), "prometheus_addr="
    elif raw := env.get(PROMETHEUS_ADDR, "").strip():
        if not _is_address(raw):
            raise ConfigError(
                f"{PROMETHEUS_ADDR}={raw!r} is not an IP address or host name: set it to the "
                f"address to listen on, for example {DEFAULT_PROMETHEUS_ADDR} (this machine "
                "only) or 0.0.0.0 (every network)."
            )
        addr, addr_source = raw, PROMETHEUS_ADDR
    else:
        addr, addr_source = DEFAULT_PROMETHEUS_ADDR, PROMETHEUS_ADDR
    if port is None:
        if addr_source == "prometheus_addr=":
            raise ValueError("prometheus_addr= needs a port: give prometheus_port= too")
        if env.get(PROMETHEUS_ADDR, "").strip():
            raise ConfigError(
                f"{PROMETHEUS_ADDR} is set but {PROMETHEUS_PORT} is not: set the port too "
                "(for example 9464) to serve /metrics, or unset both."
            )
        return None
    return ScrapeConfig(addr, port, addr_source, port_source)


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_address(value: str) -> bool:
    """An IP address, or a host name (whose last label is not all digits: 999.1.1.1 is not)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        labels = value.split(".")
        return (
            0 < len(value) <= 253
            and all(_HOST_LABEL.fullmatch(part) for part in labels)
            and not labels[-1].isdigit()
        )
    return True
