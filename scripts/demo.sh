#!/usr/bin/env bash
# Install the package into .venv, run the quickstart on the embedded mock server, then the lifecycle demo
# (nacos-token demo: refresh past 90 %, invalidate, key rotation and idle freeze survived; about 12 seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/python examples/quickstart.py
echo
.venv/bin/nacos-token demo
