#!/usr/bin/env bash
# A fleet gateway for pipecat-grafana: vmagent with stream aggregation, in the foreground.
#
# Bots push OTLP to http://$LISTEN/opentelemetry (OTEL_EXPORTER_OTLP_ENDPOINT, with
# PIPECAT_GRAFANA_HISTOGRAMS=classic); vmagent drops the labels that name one process or one
# call (stream-aggregation.yml beside this script), adds up the rest, and remote-writes the
# sums to REMOTE_WRITE_URL. The stored series then depend on services, models and labels,
# never on the number of calls. See docs/fleets.md.
#
# Environment:
#   REMOTE_WRITE_URL        required: the Prometheus remote-write URL (Grafana Cloud's
#                           .../api/prom/push, Mimir, Prometheus, VictoriaMetrics .../api/v1/write)
#   VMAGENT                 the vmagent binary (default: vmagent on the PATH)
#   LISTEN                  where bots push OTLP (default 127.0.0.1:8429; 0.0.0.0:8429 in a
#                           container)
#   DATA_DIR                vmagent's on-disk queue while the remote store is unreachable
#                           (default ./vmagent-data)
#   GATEWAY_ID              the value of the `gateway` label on everything this gateway writes
#                           (default: host name and start time; see "Restarts" in docs/fleets.md)
#   AGGREGATION_CONFIG      the stream-aggregation config (default: the shipped one)
#   REMOTE_WRITE_USER and REMOTE_WRITE_PASSWORD (or REMOTE_WRITE_PASSWORD_FILE): basic auth,
#                           e.g. Grafana Cloud's metrics instance ID and an access token
#   REMOTE_WRITE_BEARER_TOKEN (or REMOTE_WRITE_BEARER_TOKEN_FILE): a bearer token instead
# Extra arguments are passed to vmagent as they are.
#
# Secrets never reach vmagent's command line (which `ps` shows): a password or token given in
# the environment is written to a file only this user can read, in a private temporary folder
# removed when vmagent exits, and vmagent reads it from there. Nothing here prints them.
set -euo pipefail

die() { printf 'run-vmagent.sh: %s\n' "$*" >&2; exit 2; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VMAGENT="${VMAGENT:-vmagent}"
LISTEN="${LISTEN:-127.0.0.1:8429}"
DATA_DIR="${DATA_DIR:-./vmagent-data}"
AGGREGATION_CONFIG="${AGGREGATION_CONFIG:-$HERE/stream-aggregation.yml}"
GATEWAY_ID="${GATEWAY_ID:-$(hostname)-$(date -u +%Y%m%dT%H%M%SZ)}"

[[ -n "${REMOTE_WRITE_URL:-}" ]] \
    || die "REMOTE_WRITE_URL is not set: set it to the Prometheus remote-write URL of the store (Grafana Cloud: https://prometheus-prod-<zone>.grafana.net/api/prom/push)"
case "$REMOTE_WRITE_URL" in
    http://*|https://*) ;;
    *) die "REMOTE_WRITE_URL is not an http(s) URL: include the scheme, e.g. https://host/api/v1/write" ;;
esac
if [[ -n "${REMOTE_WRITE_PASSWORD:-}${REMOTE_WRITE_PASSWORD_FILE:-}" && -z "${REMOTE_WRITE_USER:-}" ]]; then
    die "REMOTE_WRITE_PASSWORD is set but REMOTE_WRITE_USER is not: set both (Grafana Cloud: the metrics instance ID and an access token)"
fi
if [[ -n "${REMOTE_WRITE_USER:-}" && -n "${REMOTE_WRITE_BEARER_TOKEN:-}${REMOTE_WRITE_BEARER_TOKEN_FILE:-}" ]]; then
    die "both REMOTE_WRITE_USER and REMOTE_WRITE_BEARER_TOKEN are set: use one way to sign in"
fi

command -v "$VMAGENT" >/dev/null 2>&1 \
    || die "VMAGENT=$VMAGENT is not an executable or on the PATH: install vmagent (Debian: apt install victoria-metrics) or set VMAGENT to its path"
[[ -r "$AGGREGATION_CONFIG" ]] || die "AGGREGATION_CONFIG=$AGGREGATION_CONFIG cannot be read"

SECRETS="$(mktemp -d)"  # mode 700: only this user reads what is written here
trap 'rm -rf "$SECRETS"' EXIT

# A secret's file: the one given, or one written here from the environment variable.
secret_file() {
    local value="$1" given="$2" name="$3"
    if [[ -n "$given" ]]; then
        [[ -r "$given" ]] || die "${name}_FILE=$given cannot be read"
        printf '%s' "$given"
        return
    fi
    (umask 077 && printf '%s' "$value" >"$SECRETS/$name")
    printf '%s' "$SECRETS/$name"
}

args=(
    "-httpListenAddr=$LISTEN"
    "-remoteWrite.url=$REMOTE_WRITE_URL"
    "-remoteWrite.tmpDataPath=$DATA_DIR"
    # OTLP names as Grafana Cloud, Prometheus and VictoriaMetrics store them (METRICS.md).
    "-opentelemetry.usePrometheusNaming"
    "-streamAggr.config=$AGGREGATION_CONFIG"
    # Store only the sums: a sample no rule matches would carry its process's label.
    "-streamAggr.dropInput"
    # Each gateway, and each start of one, writes series of its own (see docs/fleets.md).
    "-remoteWrite.label=gateway=$GATEWAY_ID"
    # One queue keeps the samples of a series in order (Mimir and Prometheus refuse
    # out-of-order ones); a gateway writes a few hundred series, which one queue carries.
    "-remoteWrite.queues=1"
)
if [[ -n "${REMOTE_WRITE_USER:-}" ]]; then
    args+=("-remoteWrite.basicAuth.username=$REMOTE_WRITE_USER")
    if [[ -n "${REMOTE_WRITE_PASSWORD:-}${REMOTE_WRITE_PASSWORD_FILE:-}" ]]; then
        file="$(secret_file "${REMOTE_WRITE_PASSWORD:-}" "${REMOTE_WRITE_PASSWORD_FILE:-}" REMOTE_WRITE_PASSWORD)"
        args+=("-remoteWrite.basicAuth.passwordFile=$file")
    fi
fi
if [[ -n "${REMOTE_WRITE_BEARER_TOKEN:-}${REMOTE_WRITE_BEARER_TOKEN_FILE:-}" ]]; then
    file="$(secret_file "${REMOTE_WRITE_BEARER_TOKEN:-}" "${REMOTE_WRITE_BEARER_TOKEN_FILE:-}" REMOTE_WRITE_BEARER_TOKEN)"
    args+=("-remoteWrite.bearerTokenFile=$file")
fi

printf 'run-vmagent.sh: OTLP in at http://%s/opentelemetry, aggregated by %s, gateway=%s\n' \
    "$LISTEN" "$AGGREGATION_CONFIG" "$GATEWAY_ID" >&2

# vmagent runs as a child, not exec'd, so that the secrets' folder is removed when it exits;
# SIGTERM and SIGINT are passed on, and vmagent's exit status is this script's.
"$VMAGENT" "${args[@]}" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
status=0
wait "$child" || status=$?
if kill -0 "$child" 2>/dev/null; then  # the wait was cut short by a signal: wait for the exit
    status=0
    wait "$child" || status=$?
fi
exit "$status"
