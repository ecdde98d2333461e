"""Flat/dark correction, -log, and centre-of-rotation search for real projection data.

Projection stacks are ``(n_angles, n_rows, n_columns)`` (DXchange order); a sinogram of one
detector row is ``(n_angles, n_columns)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage

from litomo.errors import DataError
from litomo.tomo.project import check_angles

log = logging.getLogger(__name__)


def flat_dark_correct(
    data: np.ndarray,
    flats: np.ndarray,
    darks: np.ndarray | None = None,
    *,
    min_transmission: float = 1e-6,
    log_transform: bool = True,
) -> np.ndarray:
    """Normalise projections ``(data - dark) / (flat - dark)`` and optionally take ``-log``.

    Flats and darks are averaged over their first axis (median for robustness to zingers).
    Transmission is clipped to ``[min_transmission, inf)`` before the log so dead pixels give
    large finite values instead of inf/NaN.

    Parameters
    ----------
    data : ndarray (n_angles, n_rows, n_columns)
    flats, darks : ndarray (n_frames, n_rows, n_columns) or (n_rows, n_columns)
    min_transmission : float
    log_transform : bool
        Return line integrals ``-ln T`` (default) instead of transmission ``T``.

    Examples
    --------
    >>> d = np.full((3, 2, 4), 60.0); f = np.full((5, 2, 4), 110.0); k = np.full((5, 2, 4), 10.0)
    >>> bool(np.allclose(flat_dark_correct(d, f, k), -np.log(0.5)))
    True
    """
    data = np.asarray(data)  # converted block by block below (a uint16 series is not copied whole)
    if data.ndim == 2:
        data = data[:, None, :]
    if data.ndim != 3:
        raise DataError(f"projections must be (n_angles, n_rows, n_columns), got shape {data.shape}")
    flat = np.asarray(flats, dtype=np.float32)
    flat = np.median(flat, axis=0) if flat.ndim == 3 else flat.reshape(data.shape[1:])
    if darks is None:
        dark = np.zeros(data.shape[1:], np.float32)
    else:
        dark = np.asarray(darks, dtype=np.float32)
        dark = np.median(dark, axis=0) if dark.ndim == 3 else dark.reshape(data.shape[1:])
    if flat.shape != data.shape[1:] or dark.shape != data.shape[1:]:
        raise DataError(f"flat {flat.shape} / dark {dark.shape} frames do not match projections {data.shape[1:]}")
    denom = flat - dark
    if np.mean(denom <= 0) > 0.5:
        raise DataError("flat field is not brighter than the dark field for most pixels: are flats and darks swapped?")
    denom = np.where(denom > 0, denom, np.nan)
    # in ~16-MB blocks of views into one output: the whole-array expression held ~6 float32 copies of the
    # series at once (raw as float, difference, ratio, finite test, clip, log)
    out = np.empty(data.shape, np.float32)
    step = view_block(data.shape)
    n_low = 0
    for i in range(0, data.shape[0], step):
        t = out[i : i + step]
        np.subtract(data[i : i + step], dark, out=t, dtype=np.float32, casting="unsafe")
        t /= denom
        t[~np.isfinite(t)] = 1.0  # pixels with no flat signal carry no information
        low = t < min_transmission
        n_low += int(np.count_nonzero(low))
        t[low] = min_transmission
        if log_transform:
            np.log(t, out=t)
            np.negative(t, out=t)
    if n_low:
        _warn_clipped(n_low, out.size, min_transmission)
    return out


def view_block(shape: tuple[int, ...], block_mb: float = 16.0) -> int:
    """Views per block so that one float32 block of ``(n_angles, rows, cols)`` holds ~``block_mb`` MB.

    Examples
    --------
    >>> view_block((721, 512, 512))
    16
    """
    return max(1, int(block_mb * 2**20 // (4 * int(np.prod(shape[1:])))))


def _warn_clipped(n: int, size: int, min_transmission: float) -> None:
    log.warning("transmission below %g in %d pixels (%.3g %% of the projections): clipped to %g, so their "
                "line integrals are floors; check flats/darks or exposure", min_transmission, n,
                100.0 * n / size, min_transmission)


def clip_transmission(t: np.ndarray, min_transmission: float) -> np.ndarray:
    """``max(t, min_transmission)``, with one warning giving the count and fraction clipped.

    Clipping keeps ``-log`` finite for dead or fully absorbing pixels, but a clipped pixel's line
    integral is a floor, not a measurement, so it is never done in silence.

    Examples
    --------
    >>> clip_transmission(np.array([0.5, 0.0, 1e-5]), 1e-3)
    array([0.5  , 0.001, 0.001])
    """
    t = np.asarray(t)
    low = t < min_transmission
    n = int(np.count_nonzero(low))
    if n:
        _warn_clipped(n, t.size, min_transmission)
        return np.where(low, np.asarray(min_transmission, t.dtype), t)
    return t


def shift_sinogram(sino: np.ndarray, center_px: float) -> np.ndarray:
    """Shift a sinogram ``(n_angles, n)`` along the detector so the rotation axis lands at ``(n-1)/2``."""
    s = np.asarray(sino, dtype=np.float32)
    shift = (s.shape[1] - 1) / 2.0 - float(center_px)
    return ndimage.shift(s, (0, shift), order=1, mode="nearest")


def center_from_opposite_views(sino: np.ndarray, theta_deg: Any, *, max_mismatch_deg: float = 2.0) -> float:
    """Rotation centre (detector pixels from column 0) from two views about 180 degrees apart.

    A parallel-beam view at theta + 180 is the mirror of the view at theta about the rotation
    axis; the sub-pixel shift between one view and the mirrored other (phase correlation,
    ``skimage.registration.phase_cross_correlation``) gives ``2 c - (n - 1)``.

    Examples
    --------
    >>> x = np.arange(64.0); th = np.array([0.0, 180.0])
    >>> p0 = np.exp(-0.5 * ((x - 40) / 3) ** 2); p180 = np.exp(-0.5 * ((x - 20) / 3) ** 2)
    >>> round(center_from_opposite_views(np.stack([p0, p180]), th), 1)
    30.0
    """
    from skimage.registration import phase_cross_correlation

    th = check_angles(theta_deg)
    s = np.asarray(sino, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != th.size:
        raise DataError(f"sinogram must be (n_angles={th.size}, n), got {s.shape}")
    diff = np.abs(th[None, :] - th[:, None] - 180.0)
    i, j = np.unravel_index(np.argmin(diff), diff.shape)
    if diff[i, j] > max_mismatch_deg:
        raise DataError(f"no pair of views about 180 degrees apart (closest differ by {180 + diff[i, j]:.1f} deg)")
    a, b = s[i], s[j][::-1]
    # 2D arrays so phase_cross_correlation treats axis 1 as the detector axis
    shift, _, _ = phase_cross_correlation(np.tile(b, (4, 1)), np.tile(a, (4, 1)), upsample_factor=20,
                                          normalization=None)
    n = s.shape[1]
    return float((n - 1 - shift[1]) / 2.0)


def _sharpness(img: np.ndarray) -> float:
    """Negative histogram entropy of a reconstruction (higher = sharper; tomopy's criterion)."""
    n = img.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    vals = img[np.hypot(yy, xx) < 0.45 * n]
    hist, _ = np.histogram(vals, bins=128, range=(np.percentile(vals, 0.5), np.percentile(vals, 99.5)))
    p = hist[hist > 0] / hist.sum()
    return float(np.sum(p * np.log(p)))


def find_center(
    sino: np.ndarray,
    theta_deg: Any,
    *,
    search_px: float = 8.0,
    step_px: float = 0.5,
    init: float | None = None,
) -> float:
    """Centre of rotation (detector pixels from column 0) of a parallel-beam sinogram.

    A first estimate comes from two opposite views (:func:`center_from_opposite_views`) when the
    scan has them (otherwise the detector centre), then FBP reconstructions over
    ``init +- search_px`` in steps of ``step_px`` are scored by histogram entropy (sharpest wins),
    as in tomopy's ``find_center``.

    Parameters
    ----------
    sino : ndarray (n_angles, n), -log corrected
    theta_deg : array-like
    search_px, step_px : float
        Refinement window half-width and step in pixels.
    init : float, optional
        Start value; skips the opposite-view estimate.

    Examples
    --------
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 90, endpoint=False)
    >>> img = np.zeros((48, 48)); img[10:20, 25:40] = 1; img[30:38, 8:20] = 2
    >>> s = shift_sinogram(Projector2D(48, th).forward(img), 23.5 - 3)  # axis moved to 26.5
    >>> abs(find_center(s, th) - 26.5) <= 1.0
    True
    """
    from litomo.tomo.recon import reconstruct_fbp

    th = check_angles(theta_deg)
    s = np.asarray(sino, dtype=np.float32)
    if s.ndim != 2 or s.shape[0] != th.size:
        raise DataError(f"sinogram must be (n_angles={th.size}, n), got {s.shape}")
    n = s.shape[1]
    if init is None:
        try:
            init = center_from_opposite_views(s, th)
        except DataError:
            init = (n - 1) / 2.0
        if not (0.25 * n < init < 0.75 * n):
            log.warning("opposite-view centre estimate %.1f px is far off the detector centre; ignoring it", init)
            init = (n - 1) / 2.0
    candidates = np.arange(init - search_px, init + search_px + 1e-9, step_px)
    # Score on a detector-binned sinogram (bin so n <= 256): the entropy optimum does not move,
    # and each trial FBP is bin_factor^2 cheaper.
    bin_factor = max(1, n // 256)
    nb = n // bin_factor
    sb = s[:, : nb * bin_factor].reshape(s.shape[0], nb, bin_factor).mean(axis=2)
    scores = [_sharpness(reconstruct_fbp(shift_sinogram(sb, (c + 0.5) / bin_factor - 0.5), th))
              for c in candidates]
    best = float(candidates[int(np.argmax(scores))])
    log.info("centre of rotation: start %.2f px, best %.2f px", init, best)
    return best
