#!/usr/bin/env bash
# Install litomo with its test extra into ./.venv and run ruff and the test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || exit 1
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# the report's browser test needs Debian's chromium; without it that test skips with a message
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
python -m pip install -q -e ".[test]" || { echo "install failed"; exit 1; }
ruff check src tests benchmarks || exit 1
# one pytest worker per core, at most 4 (pytest-xdist; each worker holds its own imports and
# fixtures, ~1-2 GB at the peak); --dist loadfile keeps each test file in one worker, so
# module-scoped fixtures (phantom runs, real-data volumes) are built once, as in a serial run.
# --no-loadscope-reorder (xdist >= 3.8): files go to the workers in collection order, which
# tests/conftest.py sets to longest file first (SLOW_FILES_FIRST), so the workers finish together.
# LITOMO_TEST_WORKERS=0 runs serially; a -n given on the command line wins.
WORKERS=${LITOMO_TEST_WORKERS:-$(python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')}
python -m pytest -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder "$@"
rc=$?
# pytest exit code 5 means "no tests collected": that is a failure for us, not a pass
if [ $rc -eq 5 ]; then echo "no tests were collected"; exit 1; fi
exit $rc
