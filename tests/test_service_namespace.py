"""The dashboard's service filter with and without ``service.namespace``, on real databases.

Grafana Cloud (Mimir), like Prometheus's OTLP receiver, makes ``job`` of
``service.namespace/service.name`` when a namespace is set (``OTEL_RESOURCE_ATTRIBUTES``),
while Loki's ``service_name`` stays the bare ``service.name``. The service variable must
list names that find the same bots in the Prometheus panels and in the Loki panels. Two bots
push one call each, one in a namespace and one not, to the two backends of
test_e2e_grafana.py; the variable's values, taken as Grafana takes them (its query, then its
regex), must be the bots' ``service.name``s, and each must select its bot's series in PromQL
and its summary records in LogQL.
"""

import asyncio
import re
import tempfile
from pathlib import Path

import pytest

import pipecat_grafana
from pipecat_grafana import GrafanaMetricsExporter
from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.grafana import dashboard, logql
from pipecat_grafana.grafana.dashboard import build_dashboard
from pipecat_grafana.grafana.promql import SERVICE_FILTER
from tests.helpers import run_pipeline
from tests.query_forms import parse_logql
from tests.test_e2e_grafana import GRAFANA_CLOUD_LIKE, VICTORIA_METRICS, Layout, _start_backend

pytestmark = pytest.mark.e2e

NAMESPACED = "ns-bot"
PLAIN = "plain-bot"
NAMESPACE = "team-a"


def grafana_values(raw: list[str], regex: str) -> set[str]:
    """What Grafana makes of a query variable's values with its ``/regex/``: the capture group."""
    if not regex:
        return set(raw)
    pattern = re.compile(regex[1 : regex.rindex("/")])
    found = (pattern.search(value) for value in raw)
    return {match.group(1) if match.groups() else match.group(0) for match in found if match}


async def push_one_call_each(monkeypatch) -> None:
    exporters = []
    for name, attributes in ((NAMESPACED, f"service.namespace={NAMESPACE}"), (PLAIN, "")):
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", attributes)
        exporters.append(GrafanaMetricsExporter(service_name=name))
    for exporter in exporters:
        await run_pipeline([exporter])
    await asyncio.to_thread(pipecat_grafana.shutdown)


@pytest.mark.parametrize("layout", [GRAFANA_CLOUD_LIKE, VICTORIA_METRICS], ids=lambda x: x.name)
def test_the_service_filter_finds_each_bot_in_prometheus_and_loki(monkeypatch, layout: Layout):
    with tempfile.TemporaryDirectory() as tmp, _start_backend(layout, Path(tmp)) as backend:
        monkeypatch.setenv(cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, backend.otlp_metrics_url)
        asyncio.run(push_one_call_each(monkeypatch))
        calls = m.CALLS.prometheus_name
        backend.wait_for(f"count({calls}) == 2")
        if layout is GRAFANA_CLOUD_LIKE:  # Mimir's job, as the relabelling makes it
            backend.wait_for(f'{calls}{{job="{NAMESPACE}/{NAMESPACED}"}} == 1')

        variables = {v["name"]: v for v in build_dashboard()["templating"]["list"]}
        (service,) = [v for v in dashboard.VARIABLES if v.name == "service"]
        values = {"service_label": layout.service_label}
        raw = [
            series["metric"][layout.service_label]
            for series in backend.query(dashboard.substitute(service.promql, values))
        ]
        names = grafana_values(raw, variables["service"]["regex"])

        # Loki's service_name is the bare service.name: the variable lists exactly those.
        assert names == {NAMESPACED, PLAIN}, raw
        for name in names:
            chosen = {**values, "service": name}
            promql = dashboard.substitute(f"sum({calls}{{{SERVICE_FILTER}}})", chosen)
            (result,) = backend.query(promql)
            assert float(result["value"][1]) == 1, promql
            query = parse_logql(dashboard.substitute(logql.SUMMARIES, chosen))
            (stream,) = [c for c in query.selector if c.op == "=~"]
            assert stream.key == logql.SERVICE_STREAM_LABEL
            assert re.fullmatch(str(stream.value), name)
            assert not any(re.fullmatch(str(stream.value), other) for other in names - {name})
        # "All" still selects both.
        everything = {**values, "service": dashboard.ALL}
        promql = dashboard.substitute(f"sum({calls}{{{SERVICE_FILTER}}})", everything)
        (result,) = backend.query(promql)
        assert float(result["value"][1]) == 2
