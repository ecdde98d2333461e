#!/usr/bin/env bash
# Install litomo into ./.venv and run the demo on the built-in synthetic operando electrode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e .
litomo demo --out "${1:-litomo-demo}" --force
