#!/usr/bin/env bash
# Install everything the tests need into .venv, then run ruff, mypy --strict and pytest (extra arguments go to
# pytest). Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
if command -v npm >/dev/null 2>&1; then
    npm install --prefix tests/official --no-audit --no-fund --loglevel=error
else
    echo "npm not found: the official Node.js client test will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
