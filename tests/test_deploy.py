"""The local stack (deploy/): what can be checked without docker.

The compose file parses, every file it mounts exists, the provisioning points at the folder
the shipped dashboard is mounted into, and the shipped dashboard is one file provisioning
can load (a data source variable, no import-time inputs).
"""

from pathlib import Path, PurePosixPath

import yaml

from pipecat_grafana.grafana import dashboard

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
