"""Centre of rotation: two independent automatic methods, their agreement, and the QA curve.

* :func:`center_vo` — algotom's ``find_center_vo`` (Vo et al. 2014: Fourier metric of the
  sinogram stitched with its mirrored 180-degree continuation). Searched over the middle 70 % of
  the detector, wider than algotom's default window, which misses strongly off-centre axes.
* :func:`center_entropy` and the sharpness estimate (:mod:`litomo.tomo.slicemetric`) —
  reconstructions over a range of trial centres scored by the histogram entropy of the slice
  (Donath et al. 2006; tomopy's ``find_center``) and by its mean gradient magnitude (algotom's
  slice-metric "sharpness"): the lowest wins. Trial sinograms are shifted in Fourier space, not by
  interpolation, so half-pixel trials are not smoothed (an interpolating shift makes the metric
  oscillate with a 1-pixel period; measured on tooth.h5). The minimum of the 0.25 px curve is
  refined by a parabola through its 5 nearest trials (sub-pixel).
* :func:`center_opposite` — for scans that hold views exactly 180 degrees apart (>= 180-degree
  scans): each such view is the mirror image of its partner about the axis; the median of the
  sub-pixel mirror registrations of up to 64 pairs. It needs no reconstruction and, unlike the
  entropy search, works on truncated data (a sample wider than the field of view).

:func:`find_center_auto` uses the first *confident* of Vo, opposite views, entropy, sharpness (a
measurable confidence each, :class:`CenterResult`) and checks it against another one.

Centres are in detector pixels from column 0 (pixel centres), so the detector middle is
``(n - 1) / 2``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import DataError
from litomo.tomo.project import check_angles

# center_sinogram and center_entropy are re-exported: their callers import them from here
from litomo.tomo.sinogram import center_sinogram as center_sinogram
from litomo.tomo.sinogram import sinogram_180
from litomo.tomo.slicemetric import center_entropy as center_entropy
from litomo.tomo.slicemetric import slice_metric_search

log = logging.getLogger(__name__)


#: Vo's metric must rise by this fraction 2 px either side of its minimum for Vo to be trusted
#: (measured: tooth.h5 1.34, K11 0.0375; dendrite, flat on that truncated noisy sinogram: 0.0055 at
#: bin 2, 0.0216 at bin 4, where Vo reads 2.5 binned px below algotom's slice metrics). Narrow margins.
VO_MIN_DEPTH = 0.03
#: the opposite-view pairs must agree within this median absolute deviation (px) to be trusted
OPPOSITE_MAX_SPREAD_PX = 1.0
METHOD_ORDER = ("vo", "opposite", "entropy", "sharpness")


@dataclass
class CenterResult:
    """Outcome of the automatic centre search.

    Attributes
    ----------
    center_px : float
        The centre used: that of ``method``.
    vo_px, entropy_px : float
        Vo's estimate and the minimum-entropy one.
    trial_px, entropy : ndarray
        The entropy curve (QA figure).
    opposite_px : float or None
        The opposite-view estimate (None when the scan has no views 180 degrees apart).
    method : {"vo", "opposite", "entropy", "sharpness"}
        The method whose centre is used: the first confident one in :data:`METHOD_ORDER`.
    vo_depth : float
        Relative rise of Vo's metric 2 px either side of its minimum (confident when
        >= :data:`VO_MIN_DEPTH`).
    entropy_interior : bool
        The entropy minimum lies inside its search window, not at an edge (confident when True).
    opposite_spread_px : float or None
        Median absolute deviation of the opposite-view pairs' centres (confident when
        <= :data:`OPPOSITE_MAX_SPREAD_PX`).
    sharpness_px : float or None
        The minimum-sharpness (mean gradient magnitude) estimate, on the entropy search's trials.
    sharpness_interior : bool
        The sharpness minimum lies inside the search window (confident when True).
    agree : bool
        ``|center_px - check_px| <= tolerance_px``.
    """

    center_px: float
    vo_px: float
    entropy_px: float
    tolerance_px: float
    trial_px: np.ndarray = field(repr=False)
    entropy: np.ndarray = field(repr=False)
    opposite_px: float | None = None
    method: str = "vo"
    vo_depth: float = float("inf")
    entropy_interior: bool = True
    opposite_spread_px: float | None = None
    sharpness_px: float | None = None
    sharpness_interior: bool = False

    def confident(self, method: str) -> bool:
        """Whether ``method``'s estimate passed its confidence measure."""
        if method == "vo":
            return bool(self.vo_depth >= VO_MIN_DEPTH)
        if method == "opposite":
            return self.opposite_px is not None and (self.opposite_spread_px or 0.0) <= OPPOSITE_MAX_SPREAD_PX
        if method == "sharpness":
            return self.sharpness_px is not None and bool(self.sharpness_interior)
        return bool(self.entropy_interior)

    def estimate(self, method: str) -> float:
        """The centre ``method`` found (``nan`` for ``"opposite"`` without opposite views)."""
        value = {"vo": self.vo_px, "opposite": self.opposite_px, "entropy": self.entropy_px,
                 "sharpness": self.sharpness_px}[method]
        return float("nan") if value is None else float(value)

    @property
    def check_method(self) -> str:
        """The independent estimate the used one is checked against.

        For Vo: the opposite views when the scan has them, else the entropy search. For another
        method: the first other confident one in :data:`METHOD_ORDER` (else Vo).
        """
        if self.method == "vo":
            return "entropy" if self.opposite_px is None else "opposite"
        others = [m for m in METHOD_ORDER if m != self.method and self.confident(m)]
        return others[0] if others else "vo"

    @property
    def check_px(self) -> float:
        return self.estimate(self.check_method)

    @property
    def agree(self) -> bool:
        return abs(self.center_px - self.check_px) <= self.tolerance_px

    def to_json(self) -> dict[str, Any]:
        return {"center_px": self.center_px, "method": self.method, "vo_px": self.vo_px,
                "entropy_px": self.entropy_px, "opposite_px": self.opposite_px, "check_method": self.check_method,
                "check_px": self.check_px, "difference_px": self.center_px - self.check_px, "agree": self.agree,
                "vo_depth": self.vo_depth, "entropy_interior": self.entropy_interior,
                "opposite_spread_px": self.opposite_spread_px, "sharpness_px": self.sharpness_px,
                "sharpness_interior": self.sharpness_interior}


def center_vo(sino: np.ndarray, theta_deg: Any, *, search_fraction: float = 0.25, step_px: float = 0.05,
              ratio: float = 0.5) -> float:
    """Centre by Vo's Fourier metric (algotom's ``coarse_search_cor`` / ``fine_search_cor``) on 180 degrees.

    The first 180 degrees of the scan are stitched with their mirror image (algotom's metric),
    searched over the middle ``search_fraction`` of the detector (on a detector binned to about
    160 columns), then in half pixels and finally in ``step_px`` steps.

    Why not ``find_center_vo`` itself: it smooths the 180-degree sinogram along the angle axis
    (Gaussian, sigma 3 then 2 rows, reflected at 0 and 180 degrees) before stitching it with its
    mirror. The reflection puts a centre-dependent mismatch at the 180-degree seam, which pulls
    the minimum on asymmetric samples: on tooth.h5 (1-degree angles) sigma 0/1/2/4 rows gave
    295.5/295.2/294.7/294.0 px. Here the stitched 360-degree sinogram is smoothed periodically
    instead, which is the same as weighting its Fourier magnitude by the Gaussian's transfer
    function (sigma 2 rows) inside Vo's double-wedge mask: 295.5 px for any sigma. Along the
    detector the sinogram is smoothed in real space with edge extension (sigma 2 columns; a
    periodic filter there wraps a truncated sample's edges onto each other: K11 13.45 vs 12.5).
    The search window (``+- n/8`` by default) is twice algotom's default ``+- n/16``, which misses
    strongly off-centre axes; it is not wider because the metric falls towards the window edges
    when most of the mirrored half is filler (tooth.h5: at 530 px it is lower than at the true
    296 px).

    Parameters
    ----------
    sino : ndarray
        Sinogram ``(n_angles, n)`` (-log data), angles in ``theta_deg`` (at least 180 degrees).
    theta_deg : array-like
        Projection angles in degrees.
    search_fraction : float, optional
        Fraction of the detector (around its middle) searched for the axis.
    step_px : float, optional
        Sub-pixel step of the fine search.
    ratio : float, optional
        algotom's ratio of the sample width to the detector width (double-wedge mask).

    Returns
    -------
    float
        Centre in detector pixels from column 0.

    Examples
    --------
    >>> from scipy import ndimage
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 120, endpoint=False)
    >>> img = np.zeros((64, 64)); img[20:30, 35:50] = 1; img[40:50, 10:25] = 2
    >>> s = ndimage.shift(Projector2D(64, th).forward(img), (0, 4.0), order=1)  # axis at 35.5
    >>> abs(center_vo(s, th) - 35.5) <= 0.25
    True
    """
    s180, _ = sinogram_180(sino, theta_deg)
    from scipy import ndimage

    # detector smoothing in real space (edge-extended: truncated samples are not wrapped around);
    # a symmetric filter commutes with the mirror, so it cannot move the minimum
    s = ndimage.gaussian_filter1d(np.asarray(s180, np.float64), 2.0, axis=1, mode="nearest")
    n = s.shape[1]
    half = 0.5 * float(np.clip(search_fraction, 0.05, 1.0)) * (n - 1)
    lo, hi = (n - 1) / 2.0 - half, (n - 1) / 2.0 + half
    d = max(1, n // 160)  # coarse pass on a binned detector: the minimum is within a binned pixel
    sb = s[:, : n // d * d].reshape(s.shape[0], n // d, d).mean(axis=2)
    nb = sb.shape[1]
    coarse = np.arange(np.ceil((lo - (d - 1) / 2) / d), np.floor((hi - (d - 1) / 2) / d) + 1)
    coarse = coarse[(coarse >= 0) & (coarse <= nb - 1)]
    best = float(coarse[int(np.argmin(_vo_metric(sb, coarse, ratio)))]) * d + (d - 1) / 2.0
    if not (lo + d < best < hi - d):
        log.warning("centre of rotation: Vo's minimum %.1f px is at the edge of its search window "
                    "(%.0f .. %.0f px)", best, lo, hi)
    mid = np.arange(best - d - 0.5, best + d + 0.51, 0.5)
    mid = mid[(mid >= 0) & (mid <= n - 1)]
    best = float(mid[int(np.argmin(_vo_metric(s, mid, ratio)))])
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, step_px)
    fine = fine[(fine >= 0) & (fine <= n - 1)]
    return float(fine[int(np.argmin(_vo_metric(s, fine, ratio)))])


def vo_depth(sino: np.ndarray, theta_deg: Any, center_px: float, *, offset_px: float = 2.0,
             ratio: float = 0.5) -> float:
    """How sharp Vo's minimum is: the relative rise of its metric ``offset_px`` either side of ``center_px``.

    Examples
    --------
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 120, endpoint=False)
    >>> img = np.zeros((64, 64)); img[20:30, 35:50] = 1; img[40:50, 10:25] = 2
    >>> s = Projector2D(64, th).forward(img)  # axis at 31.5
    >>> bool(vo_depth(s, th, 31.5) > VO_MIN_DEPTH)
    True
    """
    from scipy import ndimage

    s180, _ = sinogram_180(sino, theta_deg)
    s = ndimage.gaussian_filter1d(np.asarray(s180, np.float64), 2.0, axis=1, mode="nearest")
    n = s.shape[1]
    c = float(center_px)
    trials = np.array([c, *(t for t in (c - offset_px, c + offset_px) if 0 <= t <= n - 1)])
    m = _vo_metric(s, trials, ratio)
    return float((m[1:].mean() - m[0]) / m[0]) if trials.size > 1 and m[0] > 0 else 0.0


def _vo_metric(s: np.ndarray, centres: np.ndarray, ratio: float, sigma: float = 2.0) -> np.ndarray:
    """Vo's metric (algotom's ``calculate_center_metric``) with periodic angular denoising; see :func:`center_vo`.

    The mirrored half is moved by a Fourier shift (no interpolation smoothing that depends on the
    sub-pixel part); the columns it leaves empty are filled, as algotom does, from the sinogram
    reversed in angle.
    """
    from algotom.prep.calculation import make_inverse_double_wedge_mask

    nrow, n = s.shape
    mask = make_inverse_double_wedge_mask(2 * nrow, n, 0.5 * ratio * n)
    fv = np.fft.fftshift(np.fft.fftfreq(2 * nrow))[:, None]
    weight = mask * np.exp(-2.0 * np.pi**2 * sigma**2 * fv**2)
    flip, comp = s[:, ::-1], s[::-1]
    k = np.fft.fftfreq(2 * n)
    spec = np.fft.fft(np.pad(flip, ((0, 0), (0, n))), axis=1)
    out = np.empty(len(centres))
    for i, c in enumerate(centres):
        shift = 2.0 * (float(c) - (n - 1) / 2.0)
        moved = np.real(np.fft.ifft(spec * np.exp(-2j * np.pi * k * shift), axis=1))[:, :n]
        edge = int(np.ceil(shift)) if shift >= 0 else int(np.floor(shift))
        if edge > 0:
            moved[:, :edge] = comp[:, :edge]
        elif edge < 0:
            moved[:, edge:] = comp[:, edge:]
        out[i] = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(np.vstack((s, moved))))) * weight)
    return out


def center_opposite(sino: np.ndarray, theta_deg: Any, *, max_pairs: int = 64,
                    max_mismatch_deg: float | None = None) -> float | None:
    """Centre from views 180 degrees apart: median of the mirror registrations of up to ``max_pairs`` pairs.

    A parallel-beam view at ``theta + 180`` is the mirror image of the view at ``theta`` about the
    axis; the sub-pixel shift (``skimage.registration.phase_cross_correlation``, 1/50 px) between
    a view and its mirrored partner is ``2 c - (n - 1)``. Pairs count when their angles differ
    from 180 degrees by at most ``max_mismatch_deg`` (default: a tenth of the angular step).

    Returns
    -------
    float or None
        None when the scan has no such pair (e.g. a ``[0, 180)`` scan).

    Examples
    --------
    >>> x = np.arange(64.0); th = np.array([0.0, 90.0, 180.0])
    >>> s = np.stack([np.exp(-0.5 * ((x - 40) / 3) ** 2), np.zeros(64), np.exp(-0.5 * ((x - 20) / 3) ** 2)])
    >>> round(center_opposite(s, th), 2)
    30.0
    """
    centres = _opposite_centres(sino, theta_deg, max_pairs, max_mismatch_deg)
    return float(np.median(centres)) if centres.size else None


def _opposite_centres(sino: np.ndarray, theta_deg: Any, max_pairs: int = 64,
                      max_mismatch_deg: float | None = None) -> np.ndarray:
    """The centre from each opposite-view pair (see :func:`center_opposite`); empty without pairs."""
    from skimage.registration import phase_cross_correlation

    th = check_angles(theta_deg)
    s = np.asarray(sino, np.float64)
    if s.ndim != 2 or s.shape[0] != th.size:
        raise DataError(f"sinogram must be (n_angles={th.size}, n), got {s.shape}")
    srt = np.sort(th)
    step = float(np.median(np.diff(srt))) if th.size > 2 else 180.0
    tol = 0.1 * step if max_mismatch_deg is None else max_mismatch_deg
    j = np.searchsorted(srt, th + 180.0)
    pairs = []
    for i in range(th.size):
        for jj in (j[i] - 1, j[i]):
            if 0 <= jj < th.size and abs(srt[jj] - th[i] - 180.0) <= tol:
                pairs.append((i, int(np.nonzero(th == srt[jj])[0][0])))
                break
    if not pairs:
        return np.zeros(0)
    pick = np.unique(np.linspace(0, len(pairs) - 1, min(max_pairs, len(pairs))).round().astype(int))
    n = s.shape[1]
    centres = []
    for k in pick:
        a, b = s[pairs[k][0]], s[pairs[k][1]][::-1]
        if np.ptp(a) <= 0 or np.ptp(b) <= 0:
            continue
        # 2-D arrays so phase_cross_correlation treats axis 1 as the detector axis
        shift, _, _ = phase_cross_correlation(np.tile(b, (4, 1)), np.tile(a, (4, 1)), upsample_factor=50,
                                              normalization=None)
        centres.append((n - 1 - shift[1]) / 2.0)
    return np.asarray(centres, float)


def find_center_auto(
    sino: np.ndarray,
    theta_deg: Any,
    *,
    tolerance_px: float = 0.5,
    search_px: float = 10.0,
) -> CenterResult:
    """Automatic centre: the first *confident* method of Vo, opposite views, entropy, sharpness; another one checks it.

    Each method has a measurable confidence (:class:`CenterResult`): Vo's metric must have a
    minimum deeper than :data:`VO_MIN_DEPTH` (on the dendrite sinogram it is flat and Vo reads 3 px
    low), the opposite-view pairs must agree within :data:`OPPOSITE_MAX_SPREAD_PX`, and the entropy
    and sharpness minima must lie inside their search window (centred on Vo's estimate,
    ``+- search_px``; always run, for the QA curve). When no method is confident Vo's value is
    used with a warning, and a warning is also given when the used centre and its check differ by
    more than ``tolerance_px``.
    """
    vo = center_vo(sino, theta_deg)
    search = slice_metric_search(sino, theta_deg, init=vo, search_px=search_px)
    n = np.asarray(sino).shape[1]
    lo, hi = max(1.0, vo - search_px), min(n - 2.0, vo + search_px)
    pairs = _opposite_centres(sino, theta_deg)
    opp = float(np.median(pairs)) if pairs.size else None
    spread = float(np.median(np.abs(pairs - opp))) if opp is not None else None
    res = CenterResult(vo, vo, search.entropy_px, tolerance_px, search.trial_px, search.entropy, opp,
                       vo_depth=vo_depth(sino, theta_deg, vo), opposite_spread_px=spread,
                       entropy_interior=bool(lo + 1.0 <= search.entropy_px <= hi - 1.0),
                       sharpness_px=search.sharpness_px,
                       sharpness_interior=bool(lo + 1.0 <= search.sharpness_px <= hi - 1.0))
    confident = [m for m in METHOD_ORDER if res.confident(m)]
    if confident:
        res.method = confident[0]
        res.center_px = res.estimate(res.method)
    else:
        log.warning("centre of rotation: no automatic method is confident (Vo depth %.4f, entropy minimum at its "
                    "window edge%s); Vo's %.2f px is used: check the centre-search figure or give --center",
                    res.vo_depth, ", no opposite views" if opp is None else "", vo)
    if res.method != "vo":
        log.info("centre of rotation: Vo's metric is flat (depth %.4f < %.2f); using the %s estimate %.2f px",
                 res.vo_depth, VO_MIN_DEPTH, res.method, res.center_px)
    if not res.agree:
        log.warning("centre of rotation: %s %.2f px and %s %.2f px%s differ by more than %.1f px; "
                    "check the centre-search figure or give --center", res.method, res.center_px, res.check_method,
                    res.check_px, "" if res.confident(res.check_method) else " (not confident)", tolerance_px)
    return res
