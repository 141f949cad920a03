"""The README and .env.example say what the code does."""

import re
from pathlib import Path

from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.pricing import PRICE_FILE_ENV

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = ROOT / ".env.example"
PACKAGE_VARIABLES = [
    getattr(cfg, name)
    for name in dir(cfg)
    if name.isupper()
    and isinstance(getattr(cfg, name), str)
    and getattr(cfg, name).startswith(("GRAFANA_", "OTEL_", "PIPECAT_"))
    and " " not in getattr(cfg, name)  # GRAFANA_CLOUD_AUTH names two variables
] + [PRICE_FILE_ENV]


def test_readme_metric_table_lists_every_instrument():
    for spec in m.ALL:
        row = next((line for line in README.splitlines() if f"| `{spec.name}` |" in line), None)
        assert row is not None, f"{spec.name} is missing from the README's metric table"
        assert f"`{spec.prometheus_name}" in row, (spec.name, spec.prometheus_name)
        assert f"| {spec.kind.value} |" in row


def test_readme_names_no_metric_the_code_does_not_emit():
    known = {spec.prometheus_name for spec in m.ALL}
    for name in set(re.findall(r"\bvoice_[a-z_]+", README)):
        base = re.sub(r"_(bucket|sum|count)$", "", name).rstrip("_")
        assert base in known, f"the README names {name}, which is not exported"


def test_every_variable_is_documented_in_readme_and_env_example():
    assert PACKAGE_VARIABLES
    example = ENV_EXAMPLE.read_text()
    for variable in PACKAGE_VARIABLES:
        assert f"`{variable}`" in README, f"{variable} is not in the README's configuration table"
        assert re.search(rf"^#?\s*{variable}=", example, re.M), f"{variable} not in .env.example"
