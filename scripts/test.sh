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
# the distributed-tortuosity test (tests/test_transport_petsc.py, 2 MPI ranks) needs petsc4py built
# against an installed PETSc: PyPI has only sources, and Debian's python3-petsc4py does not import
# with numpy 2 (docs/scale.md). As root with apt-get: Debian's PETSc + OpenMPI, then petsc4py of the
# same minor version built here (~2.5 min); otherwise, or if that fails, the test skips with a message.
# LITOMO_NO_PETSC=1 leaves it out.
if [ -z "${LITOMO_NO_PETSC:-}" ] && ! python -c "import petsc4py, mpi4py" 2>/dev/null \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (
    set -e
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq petsc-dev libopenmpi-dev openmpi-bin; } \
      >/dev/null 2>&1
    pdir=$(ls -d /usr/lib/petscdir/petsc3.*/x86_64-linux-gnu-real | head -1)
    minor=$(basename "$(dirname "$pdir")" | sed 's/^petsc//')
    cons=$(mktemp)
    printf 'Cython<3\nsetuptools<65\n' > "$cons"
    CFLAGS="-I$(python -c 'import numpy; print(numpy.get_include())')" PETSC_DIR="$pdir" PETSC_ARCH= \
      python -m pip install -q --build-constraint "$cons" "petsc4py==${minor}.*" mpi4py >/dev/null 2>&1
    rm -f "$cons"
  ) || echo "note: could not build petsc4py; the 2-rank PETSc test will be skipped"
fi
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
