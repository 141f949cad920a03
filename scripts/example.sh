#!/usr/bin/env bash
# The README's run command: the example bot, set up on first use.
#
#   scripts/example.sh [example_bot.py options]     e.g. --turns 8 --calls 5
#
# Creates .venv (Python 3.11 or newer) if missing, installs this package with the
# `example` extra (the real bot's services and Pipecat's runner), and runs
# example_bot.py with the options given. Without API keys it runs an offline call,
# for which the package alone suffices: if the extra cannot be installed on this
# machine, the package is installed without it and the offline call still runs.
# Later runs skip the installation until pyproject.toml changes.
#
# Environment:
#   PYTHON   the interpreter to create .venv with (default: the newest python3.x >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[example] %s\n' "$*" >&2; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3 python; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! python=$(find_python); then
    log "Python 3.11 or newer is needed; install it, or set PYTHON=/path/to/python3.11"
    exit 1
  fi
  log "creating .venv with $python"
  "$python" -m venv .venv
fi

# A stamp newer than pyproject.toml means the installation is current.
stamp=.venv/.pipecat-grafana-example
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  log "installing pipecat-grafana with the example extra (first run only; this takes a while)"
  if "${pip[@]}" -e ".[example]"; then
    echo example >"$stamp"
  else
    log "installing the example extra failed; installing the package alone (enough for the"
    log "offline call). To retry the extra later: rm $stamp"
    "${pip[@]}" -e .
    echo package >"$stamp"
  fi
fi

exec .venv/bin/python example_bot.py "$@"
