"""Variance of bin means of spatially correlated noise (issue 16).

Why: the noise variance of a bin's x_Li (:mod:`litomo.xanes.noise`) scales the variance of the
binned images by ``bin_voxels / count`` for a mean over ``count`` voxels, which holds for
independent voxels only. Reconstructed noise is correlated across voxels (filtered
back-projection of Poisson counts; registration's interpolation), and then the variance of a
mean over ``n`` voxels is ``(1 / n^2) sum_{a, b} C(a - b)`` with ``C`` the noise
autocovariance, not ``C(0) / n``. The functions here estimate ``C`` from a noise field (the
difference of a volume and an independent estimate of it, e.g. a repeated scan or a noise-free
reconstruction) and return that sum for any region, exactly: the number of voxel pairs at each
lag is the region's own autocorrelation.

Measured on the Poisson + FBP forward model of the issue-16 suite (``tests/forward_models.py``,
noise = noisy FBP minus noise-free FBP of the same volume): in-plane lag-1 correlation 0.12,
none along z, and the variance of a 7^3 bin mean 0.66x the independent-voxel value: the ramp
filter's negative correlations make bins *quieter*, so correlation is not why the map's errors
there exceed the predicted noise (see docs/science.md, "Noise variance of the map's bins").
"""

from __future__ import annotations

import numpy as np

from litomo.errors import DataError


def _lag_window(a: np.ndarray, max_lag: int) -> np.ndarray:
    """Lags ``-max_lag..max_lag`` on each axis of a circular correlation (zero lag at index 0)."""
    idx = np.arange(-max_lag, max_lag + 1)
    return a[np.ix_(*[idx % s for s in a.shape])]


def noise_autocovariance(noise, mask=None, *, max_lag: int = 3) -> np.ndarray:
    """Autocovariance ``C(r)`` of a noise field for lags ``|r_i| <= max_lag``.

    Parameters
    ----------
    noise : array (z, y, x)
        A noise realisation (zero-mean in expectation; its mean over ``mask`` is removed).
    mask : bool array, optional
        Voxels to use (pairs count only where both voxels are in it); default all finite voxels.
    max_lag : int
        Largest lag per axis (voxels).

    Returns
    -------
    array ``(2 max_lag + 1,) * 3``
        ``C`` with zero lag at the centre: the mean of ``n(p) n(p + r)`` over the pairs in ``mask``.

    Examples
    --------
    White noise of variance 4: ``C(0) ~ 4``, other lags ~ 0.

    >>> rng = np.random.default_rng(0)
    >>> c = noise_autocovariance(rng.normal(0, 2, (32, 32, 32)), max_lag=1)
    >>> round(float(c[1, 1, 1]), 1), bool(abs(c[1, 1, 2]) < 0.1)
    (4.0, True)
    """
    d = np.asarray(noise, float)
    if d.ndim != 3:
        raise DataError(f"noise must be a 3-D (z, y, x) array, got shape {d.shape}")
    m = np.isfinite(d) if mask is None else (np.asarray(mask, bool) & np.isfinite(d))
    if m.sum() < 10:
        raise DataError("fewer than 10 voxels to estimate the noise autocovariance from")
    L = int(max_lag)
    d = np.where(m, d - d[m].mean(), 0.0)
    shape = [s + L for s in d.shape]  # zero padding: no wrap-around within |r| <= L
    fd = np.fft.rfftn(d, shape, axes=(0, 1, 2))
    fm = np.fft.rfftn(m.astype(float), shape, axes=(0, 1, 2))
    num = _lag_window(np.fft.irfftn(fd * np.conj(fd), shape, axes=(0, 1, 2)), L)
    den = _lag_window(np.fft.irfftn(fm * np.conj(fm), shape, axes=(0, 1, 2)), L)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0.5, num / np.maximum(den, 1.0), 0.0)


def region_mean_variance(acov: np.ndarray, region) -> float:
    """Variance of the mean over the voxels of ``region`` of noise with autocovariance ``acov``.

    ``(1 / n^2) sum_r C(r) P(r)``, ``P(r)`` = voxel pairs of the region at lag ``r`` (its
    autocorrelation); lags beyond ``acov``'s window count as uncorrelated.

    Examples
    --------
    Independent voxels: the variance of a mean over 8 voxels is ``C(0) / 8``.

    >>> c = np.zeros((3, 3, 3)); c[1, 1, 1] = 2.0
    >>> region_mean_variance(c, np.ones((2, 2, 2), bool))
    0.25
    """
    c = np.asarray(acov, float)
    r = np.asarray(region, bool)
    n = int(r.sum())
    if n == 0:
        return float("nan")
    L = (c.shape[0] - 1) // 2
    shape = [s + L for s in r.shape]
    fr = np.fft.rfftn(r.astype(float), shape, axes=(0, 1, 2))
    pairs = np.rint(_lag_window(np.fft.irfftn(fr * np.conj(fr), shape, axes=(0, 1, 2)), L))
    return float((c * pairs).sum() / n**2)


def box_mean_variance(acov: np.ndarray, shape: tuple[int, int, int]) -> float:
    """:func:`region_mean_variance` of a box of ``shape`` voxels (pairs counted analytically).

    Examples
    --------
    >>> c = np.zeros((3, 3, 3)); c[1, 1, 1] = 1.0; c[1, 1, 0] = c[1, 1, 2] = 0.5
    >>> box_mean_variance(c, (1, 1, 2))  # (2 C0 + 2 C1) / 4
    0.75
    """
    c = np.asarray(acov, float)
    L = (c.shape[0] - 1) // 2
    lags = np.arange(-L, L + 1)
    p = [np.clip(int(s) - np.abs(lags), 0, None).astype(float) for s in shape]
    pairs = p[0][:, None, None] * p[1][None, :, None] * p[2][None, None, :]
    return float((c * pairs).sum() / float(np.prod(shape)) ** 2)
