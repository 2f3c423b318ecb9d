#!/usr/bin/env bash
# Install everything the tests need into .venv (and, as root, redis-server, redis-tools and npm through apt), then
# run ruff, mypy --strict and pytest on the main Python (extra arguments go to this pytest run), the strict docs
# build, then, through nox (noxfile.py), the suite on CPython 3.10, 3.12 and 3.13 (-x -q, official-client tests left
# out) and the release build (python -m build, twine check). Used by the README and by CI (with CI=true a missing
# Python fails).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # redis-cli builds the tests' Redis Cluster
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "not installed: ${missing[*]} (the Redis store / official Node.js client tests will be skipped)" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
if command -v npm >/dev/null 2>&1; then
    npm install --prefix tests/official --no-audit --no-fund --loglevel=error
fi
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# the docs site (docs/, mkdocs.yml): any warning fails the build; output goes to the ignored site/
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site
.venv/bin/nox --sessions tests release
