"""Denoising filters: chunk-wise results equal whole-array results; quality figure."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from litomo.denoise import (
    denoise_nlm,
    denoise_pipeline,
    median_filter,
    otsu_interclass_variance,
    unsharp_mask,
)
from litomo.errors import DataError, LitomoError
from litomo.preprocess import bin_array, bin_multi


@pytest.fixture(scope="module")
def noisy_two_phase() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    z, y, x = np.indices((28, 30, 26))
    truth = ((z - 14) ** 2 + (y - 15) ** 2 + (x - 12) ** 2 < 81) | (x > 20)
    grey = (np.where(truth, 150.0, 50.0) + rng.normal(0, 30, truth.shape)).astype(np.float32)
    return grey, truth


def test_nlm_chunked_equals_whole(noisy_two_phase):
    grey, _ = noisy_two_phase
    kw = {"sigma": 30.0, "h": 24.0, "patch_size": 3, "patch_distance": 3}
    whole = denoise_nlm(grey, **kw)
    chunked = denoise_nlm(grey, chunks=(10, 11, 9), **kw)  # chunks not dividing the shape
    assert chunked.shape == grey.shape and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-4)
    lazy = denoise_nlm(da.from_array(grey, chunks=14), **kw)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=1e-4)


def test_unsharp_and_median_chunked_equal_whole(noisy_two_phase):
    grey, _ = noisy_two_phase
    w = unsharp_mask(grey, radius=1.5, amount=0.7)
    np.testing.assert_array_equal(unsharp_mask(grey, radius=1.5, amount=0.7, chunks=9), w)
    # the definition, with scipy's reflecting edges
    ref = grey + 0.7 * (grey - ndimage.gaussian_filter(grey, 1.5, mode="reflect"))
    np.testing.assert_allclose(w, ref, atol=1e-3)
    m = median_filter(grey, 3)
    np.testing.assert_array_equal(median_filter(grey, 3, chunks=(7, 8, 9)), m)
    np.testing.assert_array_equal(m, ndimage.median_filter(grey, 3, mode="reflect"))


def test_pipeline_estimates_sigma_once_and_chunking_does_not_matter(noisy_two_phase):
    grey, truth = noisy_two_phase
    steps = ("nlm", "unsharp")
    params = {"nlm": {"patch_size": 3, "patch_distance": 3}, "unsharp": {"radius": 1.0, "amount": 0.3}}
    whole, rec = denoise_pipeline(grey, steps, params=params, return_record=True)
    chunked, rec_c = denoise_pipeline(grey, steps, chunks=12, params=params, return_record=True)
    np.testing.assert_allclose(chunked, whole, atol=1e-3)
    assert rec[0]["sigma"] == rec_c[0]["sigma"]
    # the estimated noise is the one we added (30 grey levels), within 15 %
    assert rec[0]["sigma"] == pytest.approx(30.0, rel=0.15)
    assert [r["step"] for r in rec] == list(steps)
    # denoising makes the two phases easier to separate
    assert otsu_interclass_variance(whole) > otsu_interclass_variance(grey) + 0.1
    err_before = np.abs(grey - np.where(truth, 150, 50)).mean()
    err_after = np.abs(denoise_nlm(grey, sigma=30.0, patch_size=3, patch_distance=3) - np.where(truth, 150, 50)).mean()
    assert err_after < 0.6 * err_before


def test_otsu_interclass_variance_analytic():
    # two equal classes at +-d/2 with Gaussian noise s: between/total = (d^2/4) / (d^2/4 + s^2)
    rng = np.random.default_rng(0)
    d, s = 100.0, 10.0
    a = np.concatenate([rng.normal(-d / 2, s, 100_000), rng.normal(d / 2, s, 100_000)]).reshape(20, 100, 100)
    expected = (d**2 / 4) / (d**2 / 4 + s**2)
    assert otsu_interclass_variance(a) == pytest.approx(expected, abs=0.005)
    binary = np.zeros((4, 4, 4))
    binary[:, :, :1] = 7
    assert otsu_interclass_variance(binary) == pytest.approx(1.0)


def test_bad_input():
    a = np.ones((8, 8, 8), np.float32)
    a[1, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        denoise_pipeline(a, ("median",))
    with pytest.raises(DataError, match="unknown denoising step"):
        denoise_pipeline(np.ones((8, 8, 8)), ("bilateral",))
    with pytest.raises(DataError, match="constant"):
        otsu_interclass_variance(np.ones((4, 4, 4)))
    with pytest.raises(DataError, match="3D"):
        median_filter(np.ones((8, 8)))


def test_bin_multi_equals_bin_array_for_each_factor():
    rng = np.random.default_rng(8)
    vols = [rng.integers(0, 4000, (58, 30, 31), dtype=np.uint16) for _ in range(2)]  # uneven edges
    arrays = [da.from_array(v, chunks=(12, 30, 31)) for v in vols]  # 12 = lcm(3, 4)
    out = bin_multi(arrays, [3, (4, 2, 5)])
    for v, got in zip(vols, out, strict=True):
        np.testing.assert_allclose(got[0], bin_array(v, 3), rtol=1e-6)
        np.testing.assert_allclose(got[1], bin_array(v, (4, 2, 5)), rtol=1e-6)
    with pytest.raises(LitomoError, match="multiples of 4"):
        bin_multi([da.from_array(vols[0], chunks=(6, 30, 31))], [4])


def test_interior_mask_drops_the_surface_shell_of_a_ball():
    from scipy import ndimage

    from litomo.preprocess import interior_mask

    z, y, x = np.ogrid[:31, :31, :31]
    r = np.sqrt((z - 15) ** 2 + (y - 15) ** 2 + (x - 15) ** 2)
    ball = (r <= 10).astype(np.float32)
    inner = interior_mask(ball, 0.5, 1)
    # exactly the voxels whose six face neighbours are all in the ball
    shell = ball.astype(bool) & ~inner
    assert inner.sum() < ball.sum() and (inner <= ball.astype(bool)).all()
    assert np.array_equal(inner, ndimage.binary_erosion(ball > 0.5))
    assert r[shell].min() > 8.9  # only the surface layer goes
    # the array's own faces are not surfaces: a full block stays full
    assert interior_mask(np.ones((5, 6, 7)), 0.5, 2).all()
    assert np.array_equal(interior_mask(ball, 0.5, 0), ball > 0.5)
    with pytest.raises(DataError):
        interior_mask(ball[0], 0.5)
    with pytest.raises(DataError):
        interior_mask(ball, 0.5, -1)


def test_bin_masked_means_and_counts():
    from litomo.preprocess import bin_masked

    rng = np.random.default_rng(0)
    a = rng.random((8, 6, 9)).astype(np.float32)
    m = rng.random(a.shape) < 0.4
    m[:4, :3, :3] = False
    mean, count = bin_masked(a, m, (4, 3, 3))
    assert mean.shape == count.shape == (2, 2, 3)
    for idx in np.ndindex(mean.shape):
        sl = tuple(slice(i * f, (i + 1) * f) for i, f in zip(idx, (4, 3, 3), strict=True))
        assert count[idx] == m[sl].sum()
        if m[sl].any():
            assert mean[idx] == pytest.approx(a[sl][m[sl]].mean(), rel=1e-5)
        else:
            assert np.isnan(mean[idx])
    with pytest.raises(DataError):
        bin_masked(a, m[:4], 2)
