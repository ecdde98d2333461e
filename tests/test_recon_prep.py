"""Projection pre-processing (issue 14): clipped transmission is reported, zinger removal leaves
clean data alone and finds injected zingers.

Truth: clean projections of a sphere phantom by astra (independent of the zinger code), the real
tooth.h5 series (no visible zingers), and the positions of injected zingers.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from litomo.io.projections import ProjectionSeries, read_projections
from litomo.tomo.prep import normalize, remove_zingers
from recon_helpers import sphere_volume, txm_series


@pytest.fixture(scope="module")
def clean_proj():
    series, _, _ = txm_series(sphere_volume(64, 16, seed=0), n_views=121, span_deg=180.0, jitter_px=(0.0, 0.0),
                              seed=1, photons=2e4)
    return normalize(series)


def test_normalize_warns_once_with_count_and_fraction(caplog):
    data = np.full((4, 2, 5), 50.0)
    data[1, 0, :2] = 0.01  # 2 of 40 pixels transmit 1e-4 < 1e-3
    s = ProjectionSeries(data, np.full((3, 2, 5), 100.0), np.zeros((0, 2, 5)), [0, 45, 90, 135])
    with caplog.at_level(logging.WARNING, logger="litomo"):
        p = normalize(s)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "2 pixels" in msgs[0] and "5 %" in msgs[0], msgs
    assert float(p.max()) == pytest.approx(-np.log(1e-3), rel=1e-6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="litomo"):
        normalize(ProjectionSeries(np.full((2, 1, 3), 50.0), np.full((2, 1, 3), 100.0), np.zeros((0, 1, 3)), [0, 90]))
    assert not caplog.records  # nothing clipped, nothing said


def test_zingers_leave_clean_data_bit_identical(clean_proj, shared_data):
    q, n = remove_zingers(clean_proj)
    assert n == 0 and q.tobytes() == clean_proj.tobytes()
    tooth = normalize(read_projections(shared_data / "recon" / "tomopy" / "tooth.h5"))
    q, n = remove_zingers(tooth)
    assert n == 0 and q.tobytes() == tooth.tobytes()  # the previous rule replaced 23 pixels here


def test_injected_zingers_found(clean_proj):
    rng = np.random.default_rng(5)
    idx = rng.choice(clean_proj.size, 200, replace=False)
    amp = rng.uniform(0.3, 2.0, idx.size) * rng.choice([-1.0, 1.0], idx.size)  # 26-86 % intensity spikes
    hit = clean_proj.copy()
    hit.flat[idx] += amp
    q, n = remove_zingers(hit)
    changed = np.flatnonzero(q.ravel() != hit.ravel())
    found = np.isin(idx, changed)
    # measured: 195 of 200 found (the misses sit next to a steeper neighbour), no clean pixel touched
    assert found.sum() >= 190 and n == found.sum(), (found.sum(), n)
    assert np.isin(changed, idx).all()
    err = np.abs(q.ravel()[idx[found]] - clean_proj.ravel()[idx[found]])
    print(f"zingers found {found.sum()}/200, replaced-value error median {np.median(err):.4f} p90 "
          f"{np.percentile(err, 90):.4f}")
    # the 3x3 median restores the pixel to the phantom's pixel-scale texture, not exactly: measured
    # median 0.011, p90 0.082 against zinger amplitudes 0.3-2.0
    assert float(np.median(err)) < 0.025 and float(np.percentile(err, 90)) < 0.16


def test_blockwise_correction_and_zingers_match_whole_series(monkeypatch):
    """The series is corrected and de-zingered in ~16-MB blocks of views (memory); results must not depend on it."""
    import litomo.tomo.correct as correct
    import litomo.tomo.prep as prep

    assert correct.view_block((721, 512, 512)) == 16
    monkeypatch.setattr(correct, "view_block", lambda shape: 7)  # three blocks of a 20-view series
    monkeypatch.setattr(prep, "view_block", lambda shape: 7)
    rng = np.random.default_rng(3)
    shape = (20, 32, 48)
    flat = rng.poisson(2e4, (4, *shape[1:])).astype(np.uint16)
    dark = rng.normal(100.0, 3.0, (4, *shape[1:])).astype(np.uint16)
    data = rng.poisson(np.full(shape, 1e4)).astype(np.uint16)  # transmission 0.5, 1 % noise
    data[16, 5, 5] = 0  # below the minimum transmission: clipped in the last block
    got = correct.flat_dark_correct(data, flat, dark, min_transmission=1e-3)
    f, d = np.median(flat.astype(np.float32), 0), np.median(dark.astype(np.float32), 0)
    want = -np.log(np.maximum((data.astype(np.float32) - d) / (f - d), np.float32(1e-3)))
    assert got.dtype == np.float32 and np.array_equal(got, want)
    got[3, 10, 10] += 2.0
    got[9, 20, 17] += 2.0  # zingers in the first and second blocks
    fixed, n = remove_zingers(got)
    bad, med = prep._zinger_pixels(got, 5.0, 0.02, 3)  # the whole series at once
    assert n == bad.size and {np.ravel_multi_index(i, shape) for i in ((3, 10, 10), (9, 20, 17), (16, 5, 5))} == \
        set(bad.tolist())
    whole = got.copy()
    whole.flat[bad] = med.flat[bad]
    assert np.array_equal(fixed, whole)
