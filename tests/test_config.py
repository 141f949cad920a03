"""Configuration: each variable, both header forms, malformed values, and masked secrets."""

import base64

import pytest

from pipecat_grafana import config as cfg
from pipecat_grafana.config import ConfigError, resolve

TOKEN = "glc_" + "eyJvIjoiMTIzNDU2IiwibiI6InRlc3QiLCJrIjoic2VjcmV0c2VjcmV0In0="  # fake
GRAFANA = {
    cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp",
    cfg.GRAFANA_CLOUD_INSTANCE_ID: "123456",
    cfg.GRAFANA_CLOUD_API_TOKEN: TOKEN,
}


def test_no_endpoint_means_export_off():
    config = resolve({})
    assert not config.enabled
    assert config.export_interval_s == 10
    assert config.call_id_label is True


def test_grafana_cloud_shortcut_builds_basic_auth():
    config = resolve(GRAFANA)
    assert config.endpoint == "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/metrics"
    assert config.endpoint_source == cfg.GRAFANA_CLOUD_OTLP_ENDPOINT
    expected = base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    assert config.headers == {"authorization": f"Basic {expected}"}
    assert config.has_auth


def test_grafana_cloud_shortcut_wins_over_otel_endpoint():
    config = resolve({**GRAFANA, cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://other:4318"})
    assert config.endpoint_source == cfg.GRAFANA_CLOUD_OTLP_ENDPOINT


def test_otel_endpoint_gets_the_metrics_path():
    config = resolve({cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector:4318/"})
    assert config.endpoint == "https://collector:4318/v1/metrics"
    assert config.headers is None  # the exporter reads OTEL_EXPORTER_OTLP_HEADERS itself


def test_metrics_endpoint_is_used_as_is_and_wins():
    config = resolve(
        {
            cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://a:4318",
            cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "https://b:4318/custom/metrics",
        }
    )
    assert config.endpoint == "https://b:4318/custom/metrics"


@pytest.mark.parametrize("suffix", ["/v1/metrics", "/v1/metrics/"])
@pytest.mark.parametrize(
    ("variable", "env"),
    [(cfg.OTEL_EXPORTER_OTLP_ENDPOINT, {}), (cfg.GRAFANA_CLOUD_OTLP_ENDPOINT, GRAFANA)],
)
def test_base_url_with_the_metrics_path_is_accepted_with_a_notice(variable, env, suffix):
    base = GRAFANA[cfg.GRAFANA_CLOUD_OTLP_ENDPOINT]
    assert not resolve({**env, variable: base}).notices

    config = resolve({**env, variable: base + suffix})

    assert config.endpoint == base + "/v1/metrics"  # not .../v1/metrics/v1/metrics
    (notice,) = config.notices
    assert variable in notice and "base URL" in notice


@pytest.mark.parametrize(
    "header", [f"Authorization=Basic%20{TOKEN}", f"Authorization=Basic {TOKEN}"]
)
@pytest.mark.parametrize(
    "variable", [cfg.OTEL_EXPORTER_OTLP_HEADERS, cfg.OTEL_EXPORTER_OTLP_METRICS_HEADERS]
)
def test_both_header_forms_are_accepted(header, variable):
    config = resolve({cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://gw:443/otlp", variable: header})
    assert config.has_auth


def test_interval_timeout_and_call_id_switch_from_environment():
    config = resolve(
        {
            cfg.OTEL_METRIC_EXPORT_INTERVAL: "2500",
            cfg.FLUSH_TIMEOUT: "1.5",
            cfg.CALL_ID_LABEL: "false",
        }
    )
    assert config.export_interval_s == 2.5
    assert config.flush_timeout_s == 1.5
    assert config.call_id_label is False


def test_arguments_win_over_environment():
    config = resolve(
        {cfg.OTEL_METRIC_EXPORT_INTERVAL: "2500", cfg.CALL_ID_LABEL: "false"},
        export_interval_s=30,
        call_id_label=True,
    )
    assert config.export_interval_s == 30
    assert config.call_id_label is True


@pytest.mark.parametrize(
    ("env", "names", "fix"),
    [
        (
            {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318"},
            cfg.OTEL_EXPORTER_OTLP_ENDPOINT,
            "include the scheme",
        ),
        (
            {**GRAFANA, cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "otlp-gateway.grafana.net/otlp"},
            cfg.GRAFANA_CLOUD_OTLP_ENDPOINT,
            "https://otlp-gateway-<zone>.grafana.net/otlp",
        ),
        (
            {
                cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://gw",
                cfg.OTEL_EXPORTER_OTLP_HEADERS: f"Basic {TOKEN}",
            },
            cfg.OTEL_EXPORTER_OTLP_HEADERS,
            "name=value",
        ),
        ({cfg.OTEL_METRIC_EXPORT_INTERVAL: "10s"}, cfg.OTEL_METRIC_EXPORT_INTERVAL, "milliseconds"),
        ({cfg.OTEL_METRIC_EXPORT_INTERVAL: "-5"}, cfg.OTEL_METRIC_EXPORT_INTERVAL, "milliseconds"),
        ({cfg.FLUSH_TIMEOUT: "soon"}, cfg.FLUSH_TIMEOUT, "seconds"),
        ({cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "0"}, cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "seconds"),
        # Bounded: a huge interval overflows the SDK's reader thread and stops export for good.
        ({cfg.OTEL_METRIC_EXPORT_INTERVAL: "1e300"}, cfg.OTEL_METRIC_EXPORT_INTERVAL, "1 hour"),
        ({cfg.OTEL_METRIC_EXPORT_INTERVAL: "50"}, cfg.OTEL_METRIC_EXPORT_INTERVAL, "from 100"),
        ({cfg.FLUSH_TIMEOUT: "301"}, cfg.FLUSH_TIMEOUT, "at most 300"),
        ({cfg.FLUSH_TIMEOUT: "inf"}, cfg.FLUSH_TIMEOUT, "at most 300"),
        ({cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "abc"}, cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "seconds"),
        (
            {cfg.OTEL_EXPORTER_OTLP_COMPRESSION: "brotli"},
            cfg.OTEL_EXPORTER_OTLP_COMPRESSION,
            "deflate, gzip or none",
        ),
        (
            {cfg.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: "zstd"},
            cfg.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
            "deflate, gzip or none",
        ),
        ({cfg.OTEL_RESOURCE_ATTRIBUTES: "a=1,broken"}, cfg.OTEL_RESOURCE_ATTRIBUTES, "key=value"),
        ({cfg.OTEL_RESOURCE_ATTRIBUTES: "a=1,"}, cfg.OTEL_RESOURCE_ATTRIBUTES, "comma too many"),
        ({cfg.OTEL_RESOURCE_ATTRIBUTES: "=1"}, cfg.OTEL_RESOURCE_ATTRIBUTES, "key=value"),
        (
            {
                cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://c:4317",
                cfg.OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
            },
            cfg.OTEL_EXPORTER_OTLP_PROTOCOL,
            "http/protobuf",
        ),
        (
            {
                cfg.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "https://c:4318/v1/metrics",
                cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
            },
            cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
            "http/protobuf only",
        ),
        (
            {**GRAFANA, cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "grpc"},
            cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
            "http/protobuf",
        ),
        # Milliseconds, as the spec has it, where the Python exporter reads seconds.
        ({cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "10000"}, cfg.OTEL_EXPORTER_OTLP_TIMEOUT, "not milli"),
        (
            {cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "10", cfg.OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: "-1"},
            cfg.OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
            "seconds",
        ),
        (
            {cfg.OTEL_EXPORTER_OTLP_CERTIFICATE: "/nonexistent/ca.pem"},
            cfg.OTEL_EXPORTER_OTLP_CERTIFICATE,
            "No such file",
        ),
        (
            {cfg.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: "/nonexistent/ca.pem"},
            cfg.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
            "PEM",
        ),
        ({cfg.CALL_ID_LABEL: "maybe"}, cfg.CALL_ID_LABEL, "true or false"),
        (
            {k: v for k, v in GRAFANA.items() if k != cfg.GRAFANA_CLOUD_API_TOKEN},
            cfg.GRAFANA_CLOUD_API_TOKEN,
            "metrics:write",
        ),
        (
            {**GRAFANA, cfg.GRAFANA_CLOUD_INSTANCE_ID: "my-stack"},
            cfg.GRAFANA_CLOUD_INSTANCE_ID,
            "numeric instance ID",
        ),
        (
            {cfg.GRAFANA_CLOUD_API_TOKEN: TOKEN},
            cfg.GRAFANA_CLOUD_OTLP_ENDPOINT,
            "set it to your stack's OTLP endpoint",
        ),
    ],
)
def test_malformed_values_name_the_variable_and_the_fix(env, names, fix):
    if names in NO_SAFE_DEFAULT:
        with pytest.raises(ConfigError) as error:
            resolve(env)
        message = str(error.value)
    else:
        # A setting with a default: one notice naming it, its value and the default; the
        # rest of the configuration (the endpoint, if any) stands.
        config = resolve(env)
        (message,) = [notice for notice in config.notices if names in notice]
        assert "Using the default" in message
        assert names in config.refused
    assert names in message
    assert fix in message
    assert TOKEN not in message


# Variables whose malformed value turns export off: an endpoint, credentials, whom to trust.
NO_SAFE_DEFAULT = {
    cfg.OTEL_EXPORTER_OTLP_ENDPOINT,
    cfg.GRAFANA_CLOUD_OTLP_ENDPOINT,
    cfg.GRAFANA_CLOUD_INSTANCE_ID,
    cfg.GRAFANA_CLOUD_API_TOKEN,
    cfg.OTEL_EXPORTER_OTLP_HEADERS,
    cfg.OTEL_EXPORTER_OTLP_CERTIFICATE,
    cfg.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
}


def test_exporter_variables_that_work_pass(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    otel = {cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector:4318"}
    for env in (
        {cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "2.5"},
        {cfg.OTEL_EXPORTER_OTLP_CERTIFICATE: str(ca)},
        {cfg.OTEL_EXPORTER_OTLP_CERTIFICATE: str(tmp_path)},  # a directory of CAs works too
        {cfg.OTEL_EXPORTER_OTLP_COMPRESSION: "gzip"},
        {cfg.OTEL_EXPORTER_OTLP_COMPRESSION: " Deflate "},  # as the exporter reads it
        {cfg.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: "none"},
        {cfg.OTEL_RESOURCE_ATTRIBUTES: "service.namespace=support, team = a%2Cb"},
        {**otel, cfg.OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf"},
        {
            **otel,
            cfg.OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
            cfg.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/protobuf",
        },
        # The general protocol may be there for the application's traces: metrics going
        # to Grafana Cloud by the shortcut do not use it.
        {**GRAFANA, cfg.OTEL_EXPORTER_OTLP_PROTOCOL: "grpc"},
    ):
        assert resolve(env).notices == ()


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("export_interval_s", 0),
        ("export_interval_s", 0.05),
        ("export_interval_s", 3601),
        ("export_interval_s", 1e300),
        ("export_interval_s", float("nan")),
        ("flush_timeout_s", 0),
        ("flush_timeout_s", 301),
        ("flush_timeout_s", float("inf")),
    ],
)
def test_bad_arguments_raise_value_error(argument, value):
    with pytest.raises(ValueError, match=argument) as error:
        resolve({}, **{argument: value})
    assert not isinstance(error.value, ConfigError)


def test_bounds_are_inclusive():
    config = resolve(
        {cfg.OTEL_METRIC_EXPORT_INTERVAL: "3600000", cfg.OTEL_EXPORTER_OTLP_TIMEOUT: "300"},
        flush_timeout_s=300,
    )
    assert (config.export_interval_s, config.flush_timeout_s) == (3600, 300)
    assert resolve({cfg.OTEL_METRIC_EXPORT_INTERVAL: "100"}).export_interval_s == 0.1
    assert resolve({}, export_interval_s=0.1).export_interval_s == 0.1


def test_credentials_are_not_sent_in_clear_text_to_a_remote_host():
    env = {**GRAFANA, cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "http://otlp.example.com/otlp"}
    with pytest.raises(ConfigError, match="clear text") as error:
        resolve(env)
    assert cfg.ALLOW_INSECURE in str(error.value)
    assert resolve({**env, cfg.ALLOW_INSECURE: "true"}).enabled
    # Loopback is not the network: a local collector or test receiver is fine.
    assert resolve({**env, cfg.GRAFANA_CLOUD_OTLP_ENDPOINT: "http://127.0.0.1:4318"}).enabled
    headers_env = {
        cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://10.0.0.8:4318",
        cfg.OTEL_EXPORTER_OTLP_HEADERS: f"Authorization=Basic {TOKEN}",
    }
    with pytest.raises(ConfigError, match="clear text"):
        resolve(headers_env)
    # Without credentials there is nothing to leak.
    assert resolve({cfg.OTEL_EXPORTER_OTLP_ENDPOINT: "http://10.0.0.8:4318"}).enabled


def test_secrets_are_masked_in_repr_and_description():
    config = resolve(GRAFANA)
    encoded = base64.b64encode(f"123456:{TOKEN}".encode()).decode()
    for text in (repr(config), str(config), str(config.describe())):
        assert TOKEN not in text
        assert encoded not in text
    assert config.describe()["authorization"] == f"set (masked), from {cfg.GRAFANA_CLOUD_AUTH}"
