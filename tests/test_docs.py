"""The README, the documentation site and .env.example say what the code does."""

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana import instruments as m
from pipecat_grafana.pricing import PRICE_FILE_ENV
from pipecat_grafana.resource import default_resource
from pipecat_grafana.scrape_config import resolve_scrape

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = {path.name: path.read_text() for path in sorted(DOCS.glob("*.md"))}
CONFIGURATION = PAGES["configuration.md"]
METRICS = PAGES["metrics.md"]
ENV_EXAMPLE = ROOT / ".env.example"
PACKAGE_VARIABLES = [
    getattr(cfg, name)
    for name in dir(cfg)
    if name.isupper()
    and isinstance(getattr(cfg, name), str)
    and getattr(cfg, name).startswith(("GRAFANA_", "OTEL_", "PIPECAT_"))
    and " " not in getattr(cfg, name)  # GRAFANA_CLOUD_AUTH names two variables
] + [PRICE_FILE_ENV]
# Read by the SDK and by resource.py, not a constant of config.py.
RESOURCE_VARIABLES = ["OTEL_SERVICE_NAME"]
MAX_README_LINES = 300


def docs_tool(name: str) -> Path:
    """A tool of the ``docs`` extra in this environment; skip (fail under CI) without it."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        message = f"{name} is not installed: pip install -e '.[docs]' (scripts/test.sh does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def table_rows(text: str, first_column: str) -> dict[str, list[str]]:
    """The rows of every Markdown table whose first cell is `name`, keyed by name."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) >= 3:
            name = cells[0].strip("`")
            assert name not in rows, f"{name} has two rows in the {first_column} tables"
            rows[name] = cells
    return rows


VARIABLE_ROWS = table_rows(CONFIGURATION.split("## Arguments")[0], "variable")
ARGUMENT_ROWS = table_rows(CONFIGURATION.split("## Arguments")[1], "argument")


# ------------------------------------------------------------------ README


def test_readme_is_the_five_minute_version():
    lines = README.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    for needed in (
        "scripts/example.sh",
        "scripts/test.sh",
        "GrafanaMetricsExporter(",
        "pipecat-grafana check",
        "pipecat-voice-bot.json",
    ):
        assert needed in README, f"the README lost {needed}"
    cloud = README.split("## Grafana Cloud, step by step")[1].split("\n## ")[0]
    steps = re.findall(r"^(\d+)\. ", cloud, re.M)
    assert steps == [str(i) for i in range(1, len(steps) + 1)] and 3 <= len(steps) <= 8


def test_readme_links_and_images_point_at_files_and_anchors():
    targets = re.findall(r"\]\(([^)#\s]+)(#[^)]*)?\)", README)
    targets += [(src, "") for src in re.findall(r'<img src="([^"]+)"', README)]
    local = [(path, anchor) for path, anchor in targets if "://" not in path]
    assert any(path.startswith("docs/") for path, _ in local)
    for path, anchor in local:
        assert (ROOT / path).exists(), f"the README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor[1:] in slugs, f"{path} has no heading for {anchor}"


# ------------------------------------------------------------------ metric reference


def test_metric_reference_lists_every_instrument():
    rows = table_rows(METRICS, "metric")
    for spec in m.ALL:
        assert spec.name in rows, f"{spec.name} is missing from docs/metrics.md"
        otlp, prometheus, kind, unit = rows[spec.name][:4]
        assert prometheus.startswith(f"`{spec.prometheus_name}`"), (spec.name, prometheus)
        assert kind == spec.kind.value and unit == f"`{spec.unit}`"
    assert len(rows) == len(m.ALL)


def test_readme_and_docs_name_no_metric_the_code_does_not_emit():
    known = {spec.prometheus_name for spec in m.ALL}
    for name, text in {"README.md": README, **PAGES}.items():
        for metric in set(re.findall(r"\bvoice_[a-z_]+", text)):
            base = re.sub(r"_(bucket|sum|count)$", "", metric).rstrip("_")
            assert base in known, f"{name} names {metric}, which is not exported"


@pytest.mark.slow
def test_generated_docs_are_current():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------ configuration


def test_every_variable_has_a_row_with_its_default_and_values():
    assert PACKAGE_VARIABLES
    example = ENV_EXAMPLE.read_text()
    for variable in PACKAGE_VARIABLES + RESOURCE_VARIABLES:
        assert variable in VARIABLE_ROWS, f"{variable} has no row in docs/configuration.md"
        _, default, values, meaning = VARIABLE_ROWS[variable]
        assert default and values and meaning, variable
    for variable in PACKAGE_VARIABLES:
        assert re.search(rf"^#?\s*{variable}=", example, re.M), f"{variable} not in .env.example"
    assert set(VARIABLE_ROWS) == set(PACKAGE_VARIABLES + RESOURCE_VARIABLES), (
        "docs/configuration.md documents a variable the code does not read"
    )


def _shown(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def test_documented_defaults_are_the_codes(monkeypatch):
    for name in PACKAGE_VARIABLES + RESOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    default = cfg.resolve({})
    with_endpoint = cfg.resolve({cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318"})
    scrape = resolve_scrape({cfg.PROMETHEUS_PORT: "9464"})
    code = {
        cfg.OTEL_METRIC_EXPORT_INTERVAL: default.export_interval_s * 1000,
        cfg.FLUSH_TIMEOUT: default.flush_timeout_s,
        cfg.HEARTBEAT: default.heartbeat_s,
        cfg.HISTOGRAM_INTERVAL: default.histogram_interval_s,
        cfg.CALL_ID_LABEL: default.call_id_label,
        cfg.CALL_HISTOGRAMS: default.call_histograms,
        cfg.LOGS: with_endpoint.logs_endpoint is not None,
        cfg.TRACES: with_endpoint.traces_endpoint is not None,
        cfg.MAX_LABEL_VALUES: cfg.max_label_values(None, {}),
        cfg.PROMETHEUS_ADDR: scrape.addr,
        "OTEL_SERVICE_NAME": default_resource(None).attributes["service.name"],
    }
    for variable, value in code.items():
        documented = VARIABLE_ROWS[variable][1]
        assert documented == f"`{_shown(value)}`", (variable, documented, value)


_RANGE = re.compile(r"^(from|above) ([\d.]+) (?:to|and at most) ([\d.]+)$")


def _accepts_variable(name: str, value: float) -> bool:
    env = {name: _shown(float(value)) if name != cfg.PROMETHEUS_PORT else str(int(value))}
    try:
        if name == cfg.PROMETHEUS_PORT:
            resolve_scrape(env)
        else:
            # A value out of range is refused (the default is used, with a notice).
            return name not in cfg.resolve(env).refused
    except cfg.ConfigError:
        return False
    return True


def _check_range(values: str, accepts) -> None:
    kind, low, high = _RANGE.match(values).groups()
    low, high = float(low), float(high)
    step = 1 if low.is_integer() and high.is_integer() and kind == "from" and low >= 1 else 0.001
    assert accepts(high) and not accepts(high + step), ("high", values)
    if kind == "from":
        assert accepts(low) and not accepts(low - step), ("low", values)
    else:
        assert accepts(low + 0.001) and not accepts(low), ("low", values)


def test_documented_ranges_of_variables_are_the_codes():
    ranged = {name: row[2] for name, row in VARIABLE_ROWS.items() if _RANGE.match(row[2])}
    assert len(ranged) >= 7, ranged
    for name, values in ranged.items():
        _check_range(values, lambda value, name=name: _accepts_variable(name, value))


def test_every_exporter_argument_is_documented_with_its_default():
    from pipecat_grafana import GrafanaMetricsExporter

    parameters = [
        p
        for p in inspect.signature(GrafanaMetricsExporter.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert parameters
    for parameter in parameters:
        assert parameter.name in ARGUMENT_ROWS, f"argument {parameter.name} is not documented"
        default = parameter.default
        shown = f"{default.__module__}.{default.__name__}" if callable(default) else repr(default)
        assert ARGUMENT_ROWS[parameter.name][1] == f"`{shown}`", parameter.name
    assert set(ARGUMENT_ROWS) == {p.name for p in parameters}


def test_documented_ranges_of_arguments_are_the_codes():
    def accepts(call):
        try:
            call()
        except ValueError:
            return False
        return True

    checks = {
        "export_interval_s": lambda v: cfg.resolve({}, export_interval_s=v),
        "flush_timeout_s": lambda v: cfg.resolve({}, flush_timeout_s=v),
        "prometheus_port": lambda v: resolve_scrape({}, port=int(v)),
    }
    for name, call in checks.items():
        values = ARGUMENT_ROWS[name][2]
        _check_range(values, lambda value, call=call: accepts(lambda: call(value)))


# ------------------------------------------------------------------ the site


def _build_site(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(docs_tool("mkdocs")), "build", "--strict", "--site-dir", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )


def test_every_page_is_in_the_navigation_and_the_site_builds_strictly(tmp_path):
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert f": {page}" in nav, f"docs/{page} is not in mkdocs.yml's nav"
    run = _build_site(ROOT, tmp_path / "site")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text()
    assert f"[{__import__('pipecat_grafana').__version__}]" in changelog


@pytest.mark.slow
def test_a_broken_link_fails_the_site_build(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(DOCS, source / "docs")
    shutil.copy(ROOT / "mkdocs.yml", source)
    shutil.copy(ROOT / "CHANGELOG.md", source)
    page = source / "docs" / "tuning.md"
    page.write_text(page.read_text() + "\nSee [the gone page](gone.md#nowhere).\n")
    run = _build_site(source, tmp_path / "site")
    assert run.returncode != 0 and "gone.md" in run.stderr, run.stderr[-2000:]


# ------------------------------------------------------------------ changelog


def test_changelog_names_the_current_version_first():
    from pipecat_grafana import __version__

    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in changelog
    versions = re.findall(r"^## \[([^\]]+)\] - (\d{4}-\d{2}-\d{2}|Unreleased)$", changelog, re.M)
    assert versions, "CHANGELOG.md has no '## [version] - date' heading"
    assert versions[0][0] == __version__, (versions[0], __version__)


def test_every_public_argument_of_the_offline_services_is_in_the_api_reference():
    from pipecat_grafana import offline

    page = PAGES["offline.md"]
    for name in (
        "ScriptedLLMService",
        "ScriptedTTSService",
        "ScriptedSTTService",
        "OfflineTransport",
        "run_offline_call",
        "run_offline_calls",
    ):
        obj = getattr(offline, name)
        assert f"`{name}`" in page, name
        function = obj.__init__ if inspect.isclass(obj) else obj
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                assert f"`{parameter.name}`" in page, (name, parameter.name)
    assert f'`"{offline.TOOL_NAME}"`' in page
