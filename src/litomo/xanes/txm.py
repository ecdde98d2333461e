"""Transmission X-ray microscope (TXM) frames: optical density, edge-jump maps and noise.

``OD = -ln((I - dark) / (I0 - dark))`` per pixel, with the flat field ``I0`` taken at the same
energy. The Ni K-edge jump ``OD(edge) - OD(pre-edge)`` isolates Ni-bearing particles; its
contrast-to-noise ratio and the per-pixel noise from repeated exposures tell whether a map is
quantitative. Repeated exposures also give the detector's photon-transfer curve
(variance proportional to mean counts for shot-noise-limited frames).
"""

from __future__ import annotations

import numpy as np

from litomo.errors import DataError


def optical_density(
    sample,
    flat,
    dark=None,
    *,
    sample_exposure_s: float | None = None,
    flat_exposure_s: float | None = None,
    floor_counts: float | None = 0.5,
) -> np.ndarray:
    """Optical density ``-ln(I / I0)`` of a TXM frame (dimensionless, natural log).

    Parameters
    ----------
    sample, flat : array (y, x) or (..., y, x)
        Raw counts with and without the sample (same energy).
    dark : array or float, optional
        Dark counts subtracted from both.
    sample_exposure_s, flat_exposure_s : float, optional
        Exposure times; counts are scaled to the same exposure when both are given.
    floor_counts : float or None
        Dark-subtracted counts below this are raised to it before the logarithm, so zero or
        negative counts give a finite, saturated OD (``-ln(floor / I0)`` is the largest OD a
        frame can measure). ``None`` gives NaN there instead.

    Returns
    -------
    ndarray (float64)

    Examples
    --------
    >>> optical_density(np.array([100.0, 0.0]), np.array([1000.0, 1000.0])).round(3).tolist()
    [2.303, 7.601]
    """
    s = np.asarray(sample, dtype=float)
    f = np.asarray(flat, dtype=float)
    try:
        np.broadcast_shapes(s.shape, f.shape)
    except ValueError:
        raise DataError(f"sample {s.shape} and flat {f.shape} frames differ in shape") from None
    if dark is not None:
        s = s - dark
        f = f - dark
    if (sample_exposure_s is None) != (flat_exposure_s is None):
        raise DataError("give both sample_exposure_s and flat_exposure_s, or neither")
    if sample_exposure_s is not None:
        if sample_exposure_s <= 0 or flat_exposure_s <= 0:
            raise DataError("exposure times must be positive")
        f = f * (sample_exposure_s / flat_exposure_s)
    if floor_counts is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            od = -np.log(s / f)
        return np.where((s > 0) & (f > 0), od, np.nan)
    if floor_counts <= 0:
        raise DataError(f"floor_counts must be positive, got {floor_counts}")
    return -np.log(np.maximum(s, floor_counts) / np.maximum(f, floor_counts))


def edge_jump_map(od_pre, od_edge):
    """Edge jump ``OD(edge) - OD(pre-edge)``: large only where the element of the edge is.

    Examples
    --------
    >>> edge_jump_map(np.array([0.5, 0.5]), np.array([0.5, 1.5])).tolist()
    [0.0, 1.0]
    """
    a, b = np.asarray(od_pre, dtype=float), np.asarray(od_edge, dtype=float)
    if a.shape != b.shape:
        raise DataError(f"pre-edge {a.shape} and edge {b.shape} maps differ in shape")
    return b - a


def contrast_to_noise(image, mask) -> float:
    """Contrast-to-noise ratio ``|mean(inside) - mean(outside)| / std(outside)``.

    The background standard deviation is the noise (Rose criterion convention: features with
    CNR below about 3-5 are not reliably detectable).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(0, 1, 10000); m = np.zeros(10000, bool); m[:5000] = True; img[m] += 10
    >>> 9 < contrast_to_noise(img, m) < 11
    True
    """
    img = np.asarray(image, dtype=float)
    m = np.asarray(mask, dtype=bool)
    if img.shape != m.shape:
        raise DataError(f"image {img.shape} and mask {m.shape} differ in shape")
    fin = np.isfinite(img)
    inside, outside = img[m & fin], img[~m & fin]
    if inside.size < 2 or outside.size < 2:
        raise DataError("the mask must leave at least two finite pixels inside and outside")
    sd = outside.std(ddof=1)
    if sd == 0:
        raise DataError("the background is constant: noise is zero")
    return float(abs(inside.mean() - outside.mean()) / sd)


def noise_from_repeats(frames) -> np.ndarray:
    """Per-pixel standard deviation (ddof=1) over repeated exposures on axis 0.

    Examples
    --------
    >>> noise_from_repeats(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [1.4142135623730951, 0.0]
    """
    a = np.asarray(frames, dtype=float)
    if a.ndim < 2 or a.shape[0] < 2:
        raise DataError(f"need at least two repeated frames on axis 0, got shape {a.shape}")
    return a.std(axis=0, ddof=1)


def photon_transfer(frames, *, n_bins: int = 10) -> dict:
    """Photon-transfer curve from repeated raw frames: variance versus mean counts.

    For shot-noise-limited frames ``var = gain * mean + read_var`` with ``gain`` in detector
    units (ADU) per photon; ``gain = 1`` is a photon-counting detector. The fit uses the pixel
    means binned into quantiles of intensity (1st to 99th percentile).

    Returns
    -------
    dict
        ``gain_adu_per_photon``, ``read_variance_adu2``, ``r2`` (of the linear fit over bins),
        ``bins`` (list of (mean, variance, variance/mean)).
    """
    a = np.asarray(frames, dtype=float)
    mean = a.mean(axis=0).ravel()
    var = noise_from_repeats(a).ravel() ** 2
    edges = np.percentile(mean, np.linspace(1, 99, n_bins + 1))
    idx = np.digitize(mean, edges)
    rows = []
    for k in range(1, n_bins + 1):
        sel = idx == k
        if sel.sum() >= 10:
            m, v = float(mean[sel].mean()), float(var[sel].mean())
            rows.append((m, v, v / m if m > 0 else float("nan")))
    if len(rows) < 3:
        raise DataError("too few distinct intensity levels for a photon-transfer fit")
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    slope, icpt = np.polyfit(x, y, 1)
    pred = slope * x + icpt
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {
        "gain_adu_per_photon": float(slope),
        "read_variance_adu2": float(icpt),
        "r2": float(r2),
        "bins": rows,
    }


def expected_od_noise(sample_counts, flat_counts=None, *, gain_adu_per_photon: float = 1.0):
    """Shot-noise standard deviation of OD: ``sqrt(gain / I + gain / I0)``.

    Leave ``flat_counts`` out for the scatter between repeats that share one flat field.
    """
    s = np.asarray(sample_counts, dtype=float)
    with np.errstate(divide="ignore"):
        v = gain_adu_per_photon / s
        if flat_counts is not None:
            v = v + gain_adu_per_photon / np.asarray(flat_counts, dtype=float)
    return np.sqrt(v)
