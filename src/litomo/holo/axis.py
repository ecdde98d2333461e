"""Rotation axis of holotomography scans: automatic centre, and half-acquisition (offset-axis) stitching.

* :func:`find_phase_center` -- the automatic centre. Full scans use
  :func:`litomo.tomo.center.find_center_auto` on the phase sinogram (Vo's Fourier metric,
  checked by the entropy search), the same code as ``litomo reconstruct``; half-acquisition
  scans use :func:`center_half_acquisition` on the holograms (each view against the mirrored
  view 180 degrees on, over their overlap around the axis; Vo et al., Opt. Express 29, 2021
  describe the same geometry).
* :func:`stitch_opposite_views` -- in a 360-degree scan with the axis near one detector edge,
  each image and the mirrored one 180 degrees on make one image about twice as wide (algotom's
  ``stitch_image``, linear blending over the overlap); done on the holograms, before phase
  retrieval, so the retrieval sees the whole object and ordinary FBP reconstructs.

Centres are detector columns from 0 (pixel centres), as in :mod:`litomo.tomo.center`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from litomo.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AxisResult:
    """The rotation axis used and how it was found (``to_json`` goes into ``phase.json``).

    ``curve`` holds the entropy search ``(trial_px, entropy)`` of the automatic centre of a
    full scan (the report's centre QA figure); None when the axis was given or mirror-matched.
    """

    center_px: float
    method: str
    details: dict[str, Any]
    curve: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"center_px": self.center_px, "method": self.method, **self.details}


def sinogram_band(sino: np.ndarray) -> np.ndarray:
    """Mean sinogram of the middle third of the rows of ``(n_angles, rows, n)`` projections.

    Examples
    --------
    >>> sinogram_band(np.arange(24.0).reshape(2, 3, 4)).shape
    (2, 4)
    """
    r = sino.shape[1]
    return np.asarray(sino[:, r // 3 : max(r // 3 + 1, 2 * r // 3), :], np.float32).mean(axis=1)


def check_half_acquisition_angles(theta_deg: Any) -> tuple[np.ndarray, bool]:
    """Angles of the stitched 180-degree scan of a half-acquisition scan, and whether to close it.

    The scan must be evenly spaced over 360 degrees, either without its end (``n`` even views,
    the last ``360 - step``) or with it (``n`` odd, the last ``first + 360``). View ``i`` is
    paired with view ``i + n // 2`` of a scan that includes its end (algotom's pairing), so a
    scan without it is closed by repeating its first view (``True`` second value); anything else
    would be stitched wrong in silence.

    Examples
    --------
    >>> th, close = check_half_acquisition_angles(np.linspace(0, 360, 8, endpoint=False))
    >>> th.tolist(), close
    ([0.0, 45.0, 90.0, 135.0, 180.0], True)
    """
    th = np.asarray(theta_deg, dtype=float).ravel()
    n = th.size
    step = np.diff(th) if n > 1 else np.zeros(1)
    med = float(np.median(step))
    if n < 4 or med <= 0 or np.ptp(step) > 0.05 * med:
        raise DataError(f"--half-acquisition needs evenly spaced, increasing angles over 360 degrees ({n} views given)")
    span = th[-1] - th[0]
    close = abs(span + med - 360.0) <= 0.5 * med and n % 2 == 0
    if not close and not (abs(span - 360.0) <= 0.5 * med and n % 2 == 1):
        raise DataError(f"--half-acquisition needs a 360-degree scan, got {th[0]:g} .. {th[-1]:g} deg in {n} views")
    k = n // 2 if close else (n - 1) // 2
    return th[0] + med * np.arange(k + 1), bool(close)


def find_phase_center(band: np.ndarray, theta_deg: Any, *, half_acquisition: bool = False) -> AxisResult:
    """Automatic rotation centre from a sinogram ``(n_angles, n)`` (e.g. :func:`sinogram_band`).

    Full scans: the first confident automatic method, checked by another
    (:func:`litomo.tomo.center.find_center_auto`), on the phase sinogram. Half-acquisition:
    :func:`center_half_acquisition`, best on ``-ln I`` of the closest distance: holograms are
    mirror-symmetric like projections (free-space propagation commutes with a mirror), while
    the phase retrieved from a truncated field carries padding artefacts from the cut edge
    (on the test scan: 23.55 px from the holograms, 24.15 px from the retrieved phase, truth 23.5).

    Examples
    --------
    >>> from scipy import ndimage
    >>> from litomo.tomo.project import Projector2D
    >>> th = np.linspace(0, 180, 120, endpoint=False)
    >>> img = np.zeros((64, 64)); img[20:30, 35:50] = 1; img[40:50, 10:25] = 2
    >>> s = ndimage.shift(Projector2D(64, th).forward(img), (0, 3.0), order=1)  # axis at 34.5
    >>> abs(find_phase_center(s, th).center_px - 34.5) <= 0.5
    True
    """
    band = np.asarray(band, np.float32)
    if half_acquisition:
        _, close = check_half_acquisition_angles(theta_deg)
        if close:  # view i + n // 2 is view i turned by 180 degrees in a scan that includes 360
            band = np.concatenate([band, band[:1]])
        k = band.shape[0] // 2
        cor, cost = center_half_acquisition(band[: k + 1], band[k : 2 * k + 1])
        return AxisResult(cor, "mirror match of opposite views", {"mismatch": cost})
    from litomo.tomo.center import find_center_auto

    res = find_center_auto(band, theta_deg)
    return AxisResult(res.center_px, f"{res.method} ({res.check_method} check)", {k: v for k, v in res.to_json().items() if k != "center_px"},
                      curve=(np.asarray(res.trial_px, float), np.asarray(res.entropy, float)))


def _mirror_mismatch(top: np.ndarray, bottom: np.ndarray, c: float, margin: int) -> float:
    """Mean squared difference of ``top(x)`` and ``bottom(2c - x)`` over their overlap, per unit variance."""
    n = top.shape[1]
    lo, hi = max(0.0, 2 * c - (n - 1)), min(n - 1.0, 2 * c)
    x = np.arange(np.ceil(lo + margin), np.floor(hi - margin) + 1)
    if x.size < 4:
        return np.inf
    cols = np.arange(n, dtype=float)
    mirrored = np.stack([np.interp(2 * c - x, cols, row) for row in bottom])
    a = top[:, x.astype(int)]
    return float(np.mean((a - mirrored) ** 2) / max(float(np.var(a)), 1e-30))


def center_half_acquisition(top: np.ndarray, bottom: np.ndarray, *, margin: int = 3) -> tuple[float, float]:
    """Axis of a half-acquisition scan: where each view best matches the mirrored view 180 degrees on.

    ``top`` holds the views at ``theta`` and ``bottom`` those at ``theta + 180`` (same rows). A
    parallel-beam view turned by 180 degrees is its mirror about the axis, ``v(x) = w(2c - x)``,
    over the overlap of the two. ``c`` minimises the normalised squared mismatch there (0.5 px
    grid over the whole detector, then 0.05 px), ``margin`` columns at each end of the overlap
    excluded: the phase retrieval's padding leaves artefacts at the truncated detector edge.
    Written here because algotom's ``find_center_360`` missed the axis by 0.96 px on retrieved
    phase sinograms of the test scan (its correlation window needs a wider overlap) and fails on
    sinograms that are 0 in air.

    Returns
    -------
    center_px, mismatch : float

    Examples
    --------
    >>> x = np.arange(40.0)
    >>> top = np.stack([np.exp(-0.5 * ((x - 30 - s) / 2) ** 2) + 0.3 * np.sin(x / 3) for s in range(3)])
    >>> bottom = np.stack([np.interp(2 * 33.2 - x, x, t) for t in top])
    >>> round(center_half_acquisition(top, bottom)[0], 1)
    33.2
    """
    t, b = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
    n = t.shape[1]
    coarse = np.arange(0.0, n - 0.99, 0.5)
    costs = [_mirror_mismatch(t, b, c, margin) for c in coarse]
    best = float(coarse[int(np.argmin(costs))])
    fine = np.arange(best - 0.5, best + 0.5001, 0.05)
    costs = [_mirror_mismatch(t, b, c, margin) for c in fine]
    i = int(np.argmin(costs))
    if not np.isfinite(costs[i]):
        raise DataError("half-acquisition: no overlap between opposite views; give --center-px")
    return float(fine[i]), float(costs[i])


def _overlap(n: int, center_px: float) -> tuple[float, int]:
    """Overlap width (columns) of a view and its mirrored opposite, and the side (0 left, 1 right) of the axis."""
    c = float(center_px)
    if not (0 < c < n - 1):
        raise DataError(f"--center-px {c:g} is outside the detector (0 .. {n - 1}) of a half-acquisition scan")
    return (2 * c + 1, 0) if c <= (n - 1) / 2 else (2 * (n - c) - 1, 1)


def stitched_center(n: int, center_px: float) -> float:
    """The axis in the stitched image of :func:`stitch_opposite_views` (middle of the overlap).

    Examples
    --------
    >>> stitched_center(32, 26.0), stitched_center(32, 5.0)
    (26.0, 26.0)
    """
    overlap, _ = _overlap(n, center_px)
    return float(n - int(np.round(overlap + 1e-3)) / 2.0 - 0.5)


def stitch_opposite_views(view: np.ndarray, opposite: np.ndarray, center_px: float) -> tuple[np.ndarray, float]:
    """Image ``(rows, n)`` at theta and the one at theta + 180 -> one wide image of the full object.

    The opposite view is mirrored and joined on the axis side with algotom's ``stitch_image``
    (linear blend over the overlap ``2 c + 1`` or ``2 (n - c) - 1`` columns, sub-pixel part by
    interpolation, no intensity normalisation), the same pairing as its
    ``convert_sinogram_360_to_180``. Used on holograms, before phase retrieval.

    Returns
    -------
    image : ndarray (rows, m)
    center_px : float
        The axis in the stitched image.

    Examples
    --------
    >>> img = np.ones((4, 32), np.float32)
    >>> out, c = stitch_opposite_views(img, img, 26.0)
    >>> out.shape, c, bool(np.allclose(out, 1.0))
    ((4, 53), 26.0, True)
    """
    from algotom.prep.conversion import stitch_image

    a, b = np.asarray(view, np.float32), np.asarray(opposite, np.float32)
    n = a.shape[1]
    overlap, side = _overlap(n, center_px)
    out = stitch_image(a, np.fliplr(b), overlap, side, norm=False)
    return np.asarray(out, np.float32), stitched_center(n, center_px)
