"""The local stacks (deploy/): what can be checked without docker.

The compose file parses, every file it mounts exists, the provisioning points at the folder
the shipped dashboard is mounted into, and the shipped dashboard is one file provisioning
can load (a data source variable, no import-time inputs).
"""

import shutil
import subprocess
from pathlib import Path, PurePosixPath

import yaml

from pipecat_grafana.grafana import alerts, dashboard
from tests.backends import require_tools

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning" / "dashboards" / "pipecat-grafana.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _lgtm() -> dict:
    return _compose()["services"]["lgtm"]


def _mounts() -> dict[PurePosixPath, Path]:
    """Container path -> host path of every bind mount (named volumes left out)."""
    mounts = {}
    for volume in _lgtm()["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[PurePosixPath(target)] = (COMPOSE.parent / source).resolve()
    return mounts


def test_compose_runs_grafanas_all_in_one_otlp_image_on_loopback():
    lgtm = _lgtm()
    image, _, digest = lgtm["image"].partition("@")
    assert image.startswith("grafana/otel-lgtm:") and digest.startswith("sha256:")
    ports = {port.rsplit(":", 1)[-1]: port for port in lgtm["ports"]}
    assert {"3000", "4318"} <= set(ports)  # Grafana, OTLP/HTTP
    assert all(port.startswith("127.0.0.1:") for port in lgtm["ports"])
    assert set(_compose()["volumes"]) == {
        v.split(":")[0] for v in lgtm["volumes"] if not v.startswith((".", "/"))
    }


def test_every_mounted_file_exists():
    mounts = _mounts()
    assert mounts
    for target, source in mounts.items():
        assert source.is_file(), f"{source} (mounted at {target}) does not exist"


def test_the_shipped_dashboard_is_mounted_where_provisioning_reads():
    mounts = _mounts()
    (dashboard_target,) = [t for t, s in mounts.items() if s == dashboard.SHIPPED_DASHBOARD]
    (provisioning_target,) = [t for t, s in mounts.items() if s == PROVISIONING.resolve()]
    # Grafana reads the provisioning YAML files of this folder (not its subfolders).
    assert provisioning_target.parent == PurePosixPath(
        "/otel-lgtm/grafana/conf/provisioning/dashboards"
    )
    config = yaml.safe_load(PROVISIONING.read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert PurePosixPath(provider["options"]["path"]) == dashboard_target.parent
    home = _lgtm()["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home) == dashboard_target


def test_the_images_own_data_sources_are_used():
    # The image provisions Prometheus (exemplars linked to Tempo), Loki and Tempo; a data
    # source file mounted over them would have to link the exemplars itself.
    targets = [str(t) for t in _mounts()]
    assert not [t for t in targets if "/provisioning/datasources" in t]


def test_the_provisioned_dashboard_needs_no_import_inputs():
    text = dashboard.SHIPPED_DASHBOARD.read_text()
    assert "__inputs" not in text and "${DS_" not in text
    assert '"uid": "${datasource}"' in text


# --------------------------------------------------------------------------------------------
# deploy/prometheus: Prometheus scraping the bot, with the alert rules, and Grafana

SCRAPE_STACK = DEPLOY / "prometheus"
SCRAPE_COMPOSE = SCRAPE_STACK / "docker-compose.yml"


def _scrape_services() -> dict:
    return yaml.safe_load(SCRAPE_COMPOSE.read_text())["services"]


def _bind_mounts(service: str) -> dict[PurePosixPath, Path]:
    mounts = {}
    for volume in _scrape_services()[service]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[PurePosixPath(target)] = (SCRAPE_COMPOSE.parent / source).resolve()
    return mounts


def _prometheus_config() -> tuple[PurePosixPath, dict]:
    flags = _scrape_services()["prometheus"]["command"]
    (path,) = [f.split("=", 1)[1] for f in flags if f.startswith("--config.file=")]
    (source,) = [s for t, s in _bind_mounts("prometheus").items() if t == PurePosixPath(path)]
    return PurePosixPath(path), yaml.safe_load(source.read_text())


def test_the_scrape_stack_listens_on_this_machine_only_and_mounts_what_exists():
    services = _scrape_services()
    assert set(services) == {"prometheus", "grafana"}
    for name, service in services.items():
        assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"])
        for target, source in _bind_mounts(name).items():
            assert source.is_file(), f"{source} (mounted at {target}) does not exist"
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


def test_prometheus_scrapes_the_bot_on_the_host_and_loads_the_shipped_rules():
    config_path, config = _prometheus_config()
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    assert static["targets"] == ["host.docker.internal:9464"]  # the README's port
    assert "host.docker.internal:host-gateway" in _scrape_services()["prometheus"]["extra_hosts"]
    rules = [t for t, s in _bind_mounts("prometheus").items() if s == alerts.SHIPPED_RULES]
    (rules_target,) = rules
    patterns = [config_path.parent / pattern for pattern in config["rule_files"]]
    assert any(rules_target.match(str(pattern)) for pattern in patterns)


def test_grafana_provisions_the_prometheus_data_source_and_the_shipped_dashboard():
    grafana = _scrape_services()["grafana"]
    mounts = _bind_mounts("grafana")
    (dashboard_target,) = [t for t, s in mounts.items() if s == dashboard.SHIPPED_DASHBOARD]
    providers = SCRAPE_STACK / "grafana" / "provisioning" / "dashboards" / "pipecat-grafana.yaml"
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    assert PurePosixPath(provider["options"]["path"]) == dashboard_target.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home) == dashboard_target
    sources = SCRAPE_STACK / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    (source,) = yaml.safe_load(sources.read_text())["datasources"]
    assert source["type"] == dashboard.PROMETHEUS
    port = _scrape_services()["prometheus"]["ports"][0].rsplit(":", 1)[-1]
    assert source["url"] == f"http://prometheus:{port}"
    for target in (PurePosixPath(str(t)) for t in mounts):
        if target.name.endswith(".yaml"):
            assert target.parent.parent == PurePosixPath("/etc/grafana/provisioning")


def test_promtool_accepts_the_scrape_config_with_the_rules_where_the_container_has_them(
    tmp_path,
):
    promtool = require_tools("promtool")["promtool"]
    config_path, _ = _prometheus_config()
    # The container's files, laid out below tmp_path as the mounts lay them out.
    for target, source in _bind_mounts("prometheus").items():
        copy = tmp_path / target.relative_to(config_path.parent)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
    result = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / config_path.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
