#!/usr/bin/env bash
# Install the metrics backends the end-to-end tests run, into .tools/ of this repo.
#
#   victoria-metrics, vmagent  from Debian's package `victoria-metrics` (suite $VM_SUITE, trixie)
#   prometheus                 from Debian's package `prometheus` (suite $PROM_SUITE, the host's)
#   promtool                   from Debian's package `promtool` (suite $PROMTOOL_SUITE, trixie:
#                              2.53, the first Debian release whose rule unit tests take native
#                              histograms)
#
# Nothing is installed system-wide. The .deb files are fetched by `apt-get download` with a
# private apt configuration (its own sources list, state and cache in a temp dir), whose mirror
# address and signing keyring are taken from this machine's own apt configuration, and they are
# unpacked with `dpkg-deb -x`. apt verifies the suites' signed Release files as usual; if the
# host's keyring lacks the newer suite's keys, Debian's current debian-archive-keyring package
# is fetched from the host's own (verified) suite into .tools/keyrings and used instead.
#
# Usage: scripts/install-backends.sh [--force]
#   --force   reinstall even if .tools/bin already holds every binary
# Environment:
#   VM_SUITE    Debian suite to take victoria-metrics from (default: trixie)
#   PROM_SUITE  Debian suite to take prometheus from (default: the host's codename)
#   PROMTOOL_SUITE  Debian suite to take promtool from (default: trixie)
set -euo pipefail

log() { printf '[install-backends] %s\n' "$*"; }
die() { printf '[install-backends] ERROR: %s\n' "$*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO_ROOT/.tools"
BIN="$TOOLS/bin"
TOOLS_WANTED=(victoria-metrics vmagent prometheus promtool)

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

print_versions() {
    log "installed in $BIN:"
    if [[ -f "$TOOLS/versions.txt" ]]; then
        sed 's/^/    /' "$TOOLS/versions.txt"
    fi
    # The Debian builds of VictoriaMetrics print an empty -version, so the package version in
    # versions.txt is the reference for those; Prometheus reports its own.
    printf '    %s\n' "$("$BIN/prometheus" --version 2>&1 | head -n1)"
    printf '    %s\n' "$("$BIN/promtool" --version 2>&1 | head -n1)"
}

all_present() {
    local t
    for t in "${TOOLS_WANTED[@]}"; do
        [[ -x "$BIN/$t" ]] || return 1
    done
}

if [[ $FORCE -eq 0 ]] && all_present; then
    log "already installed (use --force to reinstall)"
    print_versions
    exit 0
fi

for cmd in apt-get dpkg-deb awk; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found: this script needs a Debian-based machine"
done

mkdir -p "$TOOLS"
# Serialise concurrent runs (two test sessions starting at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.install.lock"
    flock 9
    if [[ $FORCE -eq 0 ]] && all_present; then
        log "installed by a concurrent run"
        print_versions
        exit 0
    fi
fi

# --- the mirror and keyring, from this machine's apt configuration -------------------------
HOST_CODENAME=""
if [[ -r /etc/os-release ]]; then
    # shellcheck source=/dev/null
    HOST_CODENAME="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
fi
VM_SUITE="${VM_SUITE:-trixie}"
PROM_SUITE="${PROM_SUITE:-$HOST_CODENAME}"
PROMTOOL_SUITE="${PROMTOOL_SUITE:-trixie}"
[[ -n "$PROM_SUITE" ]] || die "cannot tell this machine's Debian codename; set PROM_SUITE"

# Print "URI<TAB>SUITE<TAB>SIGNED-BY" for every enabled `deb` entry of the given files, which are
# deb822 (*.sources) or one-line (sources.list, *.list) apt sources.
list_apt_entries() {
    local f
    for f in "$@"; do
        [[ -r "$f" ]] || continue
        case "$f" in
            *.sources)
                awk '
                    function flush(   n, m, i, j, us, ss) {
                        if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/ && uris != "") {
                            n = split(uris, us, /[ \t]+/); m = split(suites, ss, /[ \t]+/)
                            for (i = 1; i <= n; i++) {
                                if (us[i] == "") continue
                                for (j = 1; j <= m; j++)
                                    if (ss[j] != "") print us[i] "\t" ss[j] "\t" signed
                            }
                        }
                        types = ""; uris = ""; suites = ""; signed = ""; enabled = ""; key = ""
                    }
                    /^#/ { next }
                    /^[ \t]*$/ { flush(); next }
                    /^[ \t]/ { next }   # continuation line (e.g. an inline key): ignored
                    {
                        key = tolower($0); sub(/:.*/, "", key)
                        val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
                        if (key == "types") types = val
                        else if (key == "uris") uris = val
                        else if (key == "suites") suites = val
                        else if (key == "signed-by") signed = val
                        else if (key == "enabled") enabled = tolower(val)
                    }
                    END { flush() }
                ' "$f"
                ;;
            *)
                awk '
                    { sub(/#.*/, "") }
                    $1 == "deb" {
                        signed = ""; i = 2
                        if ($2 ~ /^\[/) {
                            opts = ""
                            for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
                            if (match(opts, /signed-by=[^ \]]+/))
                                signed = substr(opts, RSTART + 10, RLENGTH - 10)
                        }
                        if (i + 1 <= NF) print $i "\t" $(i + 1) "\t" signed
                    }
                ' "$f"
                ;;
        esac
    done
}

shopt -s nullglob
APT_FILES=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
shopt -u nullglob
ENTRIES="$(list_apt_entries "${APT_FILES[@]}")"
[[ -n "$ENTRIES" ]] || die "no 'deb' entries found in this machine's apt configuration (${APT_FILES[*]})"

# The main archive entry: the one for the host's own suite (not -updates, not -security).
MAIN_ENTRY="$(awk -F'\t' -v s="$HOST_CODENAME" '$2 == s { print; exit }' <<<"$ENTRIES")"
[[ -n "$MAIN_ENTRY" ]] || MAIN_ENTRY="$(awk -F'\t' '$2 !~ /-(security|updates|backports)$/ && $2 !~ /\// { print; exit }' <<<"$ENTRIES")"
[[ -n "$MAIN_ENTRY" ]] || die "no main Debian archive entry found in this machine's apt configuration"
MIRROR="$(cut -f1 <<<"$MAIN_ENTRY")"
KEYRING="$(cut -f3 <<<"$MAIN_ENTRY")"
if [[ -z "$KEYRING" || "$KEYRING" != /* ]]; then
    # No (or an inline) Signed-By: fall back to Debian's archive keyring file if there is one,
    # else to apt's trusted.gpg.d (used when no signed-by option is given).
    KEYRING=""
    [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] && KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
fi
log "mirror: $MIRROR (from this machine's apt configuration)"
log "keyring: ${KEYRING:-the trusted.gpg.d of apt}"

# --- private apt configuration -------------------------------------------------------------
WORK="$(mktemp -d "$TOOLS/.install.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# apt downloads as the unprivileged _apt user when run as root: let it reach the work dir.
chmod 755 "$WORK"
mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/promtool" "$WORK/root"
if [[ $EUID -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$WORK/debs" "$WORK/promtool"
fi

write_sources() {  # $1: keyring path or empty
    local opt=""
    [[ -n "$1" ]] && opt="[signed-by=$1] "
    local suite
    for suite in $(printf '%s\n' "$VM_SUITE" "$PROM_SUITE" "$PROMTOOL_SUITE" | awk '!seen[$0]++'); do
        printf 'deb %s%s %s main\n' "$opt" "$MIRROR" "$suite"
    done >"$WORK/sources.list"
}

APT_OPTS=(
    -o "Dir::State=$WORK/state"
    -o "Dir::State::status=$WORK/state/status"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::Etc::SourceList=$WORK/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "APT::Update::Error-Mode=any"
    -o "Debug::NoLocking=1"
    -q
)
: >"$WORK/state/status"

apt_update() {
    log "apt-get update (private sources list, suites:$(awk '{ printf " %s", $(NF-1) }' "$WORK/sources.list"))"
    apt-get "${APT_OPTS[@]}" update >"$WORK/update.log" 2>&1
}

signature_failed() {
    grep -qE 'NO_PUBKEY|EXPKEYSIG|is not signed|could not be verified|signatures were invalid' \
        "$WORK/update.log"
}

write_sources "$KEYRING"
if ! apt_update; then
    if ! signature_failed || [[ -z "$HOST_CODENAME" ]]; then
        cat "$WORK/update.log" >&2
        die "apt-get update with the private sources list failed (see above)"
    fi
    # The keyring lacks the newer suite's keys (bookworm's debian-archive-keyring gained the
    # trixie keys only in a point release). Fetch Debian's current archive keyring package
    # from the host's own suite, which the host's keyring does verify, and use that.
    sed 's/^/    /' "$WORK/update.log" >&2
    log "signature check failed with ${KEYRING:-the default keys of apt};" \
        "fetching debian-archive-keyring from $HOST_CODENAME"
    printf 'deb %s%s %s main\n' "${KEYRING:+[signed-by=$KEYRING] }" "$MIRROR" "$HOST_CODENAME" \
        >"$WORK/sources.list"
    apt_update || { cat "$WORK/update.log" >&2; die "apt-get update of $HOST_CODENAME failed"; }
    (cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download debian-archive-keyring) \
        >"$WORK/download.log" 2>&1 || {
        cat "$WORK/download.log" >&2
        die "could not download debian-archive-keyring"
    }
    dpkg-deb -x "$WORK"/debs/debian-archive-keyring_*.deb "$WORK/keyring"
    rm -f "$WORK"/debs/*.deb
    mkdir -p "$TOOLS/keyrings"
    cp "$WORK/keyring/usr/share/keyrings/debian-archive-keyring.gpg" "$TOOLS/keyrings/"
    KEYRING="$TOOLS/keyrings/debian-archive-keyring.gpg"
    log "keyring: $KEYRING (debian-archive-keyring from $HOST_CODENAME)"
    write_sources "$KEYRING"
    if ! apt_update; then
        cat "$WORK/update.log" >&2
        if signature_failed; then
            die "the Release files do not verify even with Debian's current archive keyring;" \
                "refusing to continue without signature verification"
        fi
        die "apt-get update with the private sources list failed (see above)"
    fi
fi

# --- download and unpack -------------------------------------------------------------------
apt_download() {
    log "apt-get download $*"
    (cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "$@") >"$WORK/download.log" 2>&1 || {
        cat "$WORK/download.log" >&2
        die "apt-get download failed (see above)"
    }
}
apt_download "victoria-metrics/$VM_SUITE" "prometheus/$PROM_SUITE"
# Bookworm ships promtool inside `prometheus`; since trixie it is a package of its own, and the
# one installed is always that package's (unpacked last, so it replaces bookworm's).
(cd "$WORK/promtool" && apt-get "${APT_OPTS[@]}" download "promtool/$PROMTOOL_SUITE") \
    >"$WORK/download.log" 2>&1 || {
    cat "$WORK/download.log" >&2
    die "apt-get download promtool/$PROMTOOL_SUITE failed (see above)"
}

: >"$WORK/versions.txt"
for deb in "$WORK"/debs/*.deb "$WORK"/promtool/*.deb; do
    name="$(dpkg-deb -f "$deb" Package)"
    version="$(dpkg-deb -f "$deb" Version)"
    log "unpacking $name $version"
    dpkg-deb -x "$deb" "$WORK/root"
    printf '%s %s\n' "$name" "$version" >>"$WORK/versions.txt"
    # Report the declared run-time dependencies; the checks below prove the binaries run.
    log "    Depends: $(dpkg-deb -f "$deb" Depends)"
done

# The binaries' real names inside the packages.
declare -A SRC=(
    [victoria-metrics]=usr/bin/victoria-metrics
    [vmagent]=usr/bin/vmagent
    [prometheus]=usr/bin/prometheus
    [promtool]=usr/bin/promtool
)
for t in "${TOOLS_WANTED[@]}"; do
    [[ -x "$WORK/root/${SRC[$t]}" ]] || die "package did not contain ${SRC[$t]}"
done

# Missing shared libraries would only show at run time: check now. (The Debian builds of
# VictoriaMetrics link libzstd.so.1 dynamically; Prometheus needs only libc.)
if command -v ldd >/dev/null 2>&1; then
    for t in "${TOOLS_WANTED[@]}"; do
        if missing="$(ldd "$WORK/root/${SRC[$t]}" 2>&1 | grep 'not found')"; then
            die "$t needs shared libraries this machine lacks: $missing"
        fi
    done
fi

# Install: only the four binaries (the packages also carry vmbackup, vmctl, web assets, ...).
mkdir -p "$BIN"
for t in "${TOOLS_WANTED[@]}"; do
    mv -f "$WORK/root/${SRC[$t]}" "$BIN/$t.new"
    mv -f "$BIN/$t.new" "$BIN/$t"
done
mv "$WORK/versions.txt" "$TOOLS/versions.txt"
rm -rf "$TOOLS/pkgs"  # layout of earlier versions of this script

# Smoke-test every binary. LD_BIND_NOW resolves every dynamic symbol at start-up, so this
# also proves this machine's libraries suffice: the VictoriaMetrics package declares
# libzstd1 (>= 1.5.5) while bookworm has 1.5.4, but every libzstd symbol it uses is there.
export LD_BIND_NOW=1
"$BIN/prometheus" --version >/dev/null 2>&1 || die "prometheus does not run"
"$BIN/promtool" --version >/dev/null 2>&1 || die "promtool does not run"
"$BIN/victoria-metrics" -version >/dev/null 2>&1 || die "victoria-metrics does not run"
"$BIN/vmagent" -version >/dev/null 2>&1 || die "vmagent does not run"
unset LD_BIND_NOW

log "done"
print_versions
