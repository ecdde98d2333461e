"""Synthetic TXM projection series for the reconstruction tests: a volume of spheres projected by
astra's line-integral projector (independent of litomo's alignment and FBP code), shifted by known
jitter, with Poisson-noisy flats/darks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from litomo.io.projections import ProjectionSeries
from litomo.tomo.project import project_volume


def sphere_volume(n: int = 64, nz: int = 32, *, seed: int = 0) -> np.ndarray:
    """Twelve overlapping spheres (attenuation 0.02-0.05 per pixel) inside the middle of the field."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:nz, :n, :n]
    vol = np.zeros((nz, n, n), np.float32)
    zm = min(8, nz // 4)
    for _ in range(12):
        c = rng.uniform([zm, 0.3 * n, 0.3 * n], [nz - zm, 0.7 * n, 0.7 * n])
        r = rng.uniform(3, 7)
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r] += rng.uniform(0.02, 0.05)
    return vol


def txm_series(vol: np.ndarray, *, n_views: int = 241, span_deg: float = 240.0, jitter_px=(3.0, 5.0),
               seed: int = 0, photons: float = 2e4, scale: float = 1.0):
    """Raw series of ``vol * scale`` with uniform jitter up to (vertical, horizontal) pixels.

    Returns the series, the true (vertical, horizontal) displacements and the clean projections.
    """
    rng = np.random.default_rng(seed)
    nz, n = vol.shape[0], vol.shape[1]
    th = np.linspace(-span_deg / 2, span_deg / 2, n_views)
    proj = project_volume(vol * scale, th)
    true = np.stack([rng.uniform(-jitter_px[0], jitter_px[0], n_views),
                     rng.uniform(-jitter_px[1], jitter_px[1], n_views)], axis=1)
    moved = np.stack([ndimage.shift(proj[i], true[i], order=3, mode="nearest") for i in range(n_views)])
    flat = photons * (1 + 0.05 * np.sin(np.arange(n) / 5.0))[None, :] * np.ones((nz, 1))
    data = rng.poisson(flat * np.exp(-moved)) + rng.normal(100.0, 3.0, moved.shape)
    flats = rng.poisson(np.broadcast_to(flat, (10, nz, n))) + rng.normal(100.0, 3.0, (10, nz, n))
    darks = rng.normal(100.0, 3.0, (10, nz, n))
    series = ProjectionSeries(data.astype(np.float32), flats.astype(np.float32), darks.astype(np.float32), th, 0.03,
                              8353.0, {"source": "synthetic"})
    return series, true, proj


def corr_with_algotom(mine: np.ndarray, sino: np.ndarray, theta_deg: np.ndarray, center: float,
                      method: str = "fbp") -> float:
    """Correlation of litomo's slice with algotom's reconstruction at the same centre (inner 80 %).

    ``method``: ``"astra"`` (algotom's astra wrapper, ram-lak, no padding), ``"fbp"`` (algotom's
    CPU FBP, no padding) or ``"fbp_padded"`` (algotom's CPU FBP with its default edge padding).
    algotom's n x n grid is centred half a pixel away from litomo's (axis at n/2 vs the middle
    pixel): litomo's slice is moved by that half pixel in Fourier space before comparing.
    """
    import algotom.rec.reconstruction as rec

    n = sino.shape[1]
    th = np.deg2rad(theta_deg)
    if method == "astra":
        ref = rec.astra_reconstruction(sino, center, angles=th, method="FBP", filter_name="ram-lak",
                                       apply_log=False, ratio=None, pad=0)
    elif method == "fbp_padded":
        ref = rec.fbp_reconstruction(sino, center, angles=th, apply_log=False, gpu=False, filter_name=None,
                                     ratio=None, ncore=1)
    else:
        ref = rec.fbp_reconstruction(sino, center, angles=th, apply_log=False, gpu=False, filter_name=None,
                                     ratio=None, pad=0)
    mine = np.pad(mine, 2)
    m = (mine.shape[0] - 1) // 2
    crop = mine[m - n // 2 - 1 : m - n // 2 + n + 1, m - n // 2 - 1 : m - n // 2 + n + 1]
    moved = np.real(np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(crop), (-0.5, -0.5))))[1:-1, 1:-1]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    mask = np.hypot(yy, xx) < 0.4 * n
    return float(np.corrcoef(moved[mask], ref[mask])[0, 1])
