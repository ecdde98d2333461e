"""Shared fixtures: paths to the real third-party data in ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# itk-elastix runs in this test process, not in one worker process per registration stage
# (each worker pays the ~17 s itk import again); tests/test_register_worker.py turns it on
os.environ.setdefault("LITOMO_ELASTIX_WORKER", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` from the project root; tests needing it skip if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _collect_stray_output_before_capture(request):
    """Tests that read captured output (``capsys``) start from a clean slate.

    Garbage left by an earlier test of the same worker (an unretrieved dask.distributed future,
    whose exception asyncio logs when the future is collected) is collected here and its output
    dropped, not in the middle of a CLI call whose stderr the test counts: seen once in CI, where
    ``test_recon_cli.py``'s one-line error check read 111 lines of such a traceback.
    """
    if "capsys" in request.fixturenames:
        import gc

        gc.collect()
        request.getfixturevalue("capsys").readouterr()
    yield


# Test files in decreasing order of their measured cost (session 8: CPU seconds per file in a
# clean copy with an empty numba cache, in the comments). scripts/test.sh runs pytest-xdist with
# --dist loadfile --no-loadscope-reorder, so workers take whole files in this order: the longest
# files start first and the many short ones (and the doctests) fill the end, so both workers finish
# together. xdist's default order (most tests first) put 2-test files of 17-28 s at rank ~140 of 209.
# Ordering only: every test runs, each file's tests keep their order and their module fixtures.
SLOW_FILES_FIRST = (
    "test_scheduler_cli.py",  # 61, 45 of it the first multigrid solve compiling (session 9: -10)
    "test_pipeline.py",  # 60
    "test_limap_robust.py",  # 40 (session 10: 55)
    # after test_scheduler_cli.py: that file compiles segment.forest_eval._walk (~20 s of CPU)
    # and writes numba's cache; queued third, this file compiled the same signature at the same
    # time in the other worker (session 10 profile). Fourth, it loads the kernel from the cache.
    "test_segment_streamed.py",  # 41 (session 10: 89, 40 of it the peak-memory subprocess)
    "test_recon_projections.py",  # 38
    "test_holo_chain.py",  # 38 before its forward projector went sparse (-10)
    # not right after test_recon_projections.py: both compile tomo.backproject first thing, and
    # side by side in the two workers they compiled it twice (~2.5 s CPU, clean-cache profile)
    "test_recon_center_fbp.py",  # 33
    "test_recon_limap.py",  # session 10: 50 (was unlisted, so queued among the short files)
    "test_micro_chunked.py",  # 24
    "test_register_worker.py",  # 20
    "test_pipeline_resume.py",  # 19
    "test_report.py",  # 19
    "test_nenergy_run.py",  # 30 before its resume test stopped rebuilding the report (-12)
    "test_map2d.py",  # 14
    "test_recon_cli.py",  # 13
    "test_phantom.py",  # 13
    "test_micro_cli.py",  # 12
    "test_holo.py",  # 10
    "test_faults_cli.py",  # 10 (8 of it compiles the multigrid kernels)
    "test_preprocess.py",  # 10
    # 7, most of it compiling the multigrid kernels for float32 faces; queued here, away from
    # test_transport_multiphase.py (its neighbour in name order), which compiles the same ones
    "test_transport_mg.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable sort
