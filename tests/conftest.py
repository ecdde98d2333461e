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


# Test files in decreasing order of their measured time (2 xdist workers, start of session 7:
# durations_start.txt, seconds per file in the comments). scripts/test.sh runs pytest-xdist with
# --dist loadfile --no-loadscope-reorder, so workers take whole files in this order: the longest
# files start first and the many short ones (and the doctests) fill the end, so both workers finish
# together. xdist's default order (most tests first) put 2-test files of 17-28 s at rank ~140 of 209.
# Ordering only: every test runs, each file's tests keep their order and their module fixtures.
SLOW_FILES_FIRST = (
    "test_pipeline.py",  # 65
    "test_segment_streamed.py",  # 33
    "test_limap_robust.py",  # 29
    "test_report.py",  # 9 + 28 of the former test_report_browser.py - 11 shared
    "test_recon_projections.py",  # 26
    "test_map2d.py",  # 22
    "test_nenergy_run.py",  # 20
    "test_register_worker.py",  # 19
    "test_holo_chain.py",  # 18
    "test_recon_center_fbp.py",  # 18
    "test_pipeline_resume.py",  # 17
    "test_transport_petsc.py",  # 17
    "test_micro_chunked.py",  # 16
    "test_recon_cli.py",  # 8
    "test_holo.py",  # 7
    "test_preprocess.py",  # 6
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable sort
