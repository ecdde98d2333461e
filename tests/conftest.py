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
