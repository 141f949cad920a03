#!/usr/bin/env bash
# The test command: sets up .venv and the test backends if needed, lints, runs the tests.
# Extra arguments go to pytest (for example: scripts/test.sh -m e2e). It runs every test;
# `python -m pytest` alone runs the fast ones.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,docs]"

# The end-to-end tests need a real metrics database; CI must have it, elsewhere
# they skip with the reason when it cannot be installed.
if ! scripts/install-backends.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: installing the test backends failed" >&2
    exit 1
  fi
  echo "test.sh: test backends unavailable; end-to-end tests will skip" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Every test: -m "" lifts the fast selection of `python -m pytest` (pyproject.toml); a -m
# given here wins over it.
exec .venv/bin/python -m pytest -m "" "$@"
