"""Projection alignment (TXM stage jitter and run-out): a fast consistency pass and an iterative
reprojection alignment with a stopping rule.

No pip-installable library does reprojection alignment on the CPU (tomopy is conda-only, hotopy
and tike need CUDA), so the loop is written here from maintained pieces: astra's 2D CPU
projectors (via :class:`litomo.tomo.project.Projector2D`) and
``skimage.registration.phase_cross_correlation`` with ``normalization=None`` (with the default
phase normalisation the estimates barely correlated with the true jitter on thin projections).

Conventions: ``shifts`` are ``(n_angles, 2)`` arrays of (vertical, horizontal) *displacements* of
each measured projection in pixels; :func:`apply_shifts` with ``-shifts`` undoes them. A
horizontal shift ``a + b cos(theta) + c sin(theta)`` (rotation-axis offset plus an object
translation) and a constant vertical shift cannot be observed from the projections (the
reconstruction just moves): :func:`remove_rigid_motion` projects them out, both during the
iterations (so the solution cannot drift along them) and before shifts are scored. Inside the
reprojection loop the centre is fixed, which makes the constant horizontal part observable: it
is kept there, so a given ``--center`` is honoured rather than silently redefined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from litomo.errors import DataError
from litomo.progress import ProgressCallback
from litomo.tomo.project import Projector2D, check_angles

log = logging.getLogger(__name__)


@dataclass
class AlignmentResult:
    """Per-projection shifts and how the iterations went.

    Attributes
    ----------
    shifts_px : ndarray (n_angles, 2)
        Estimated (vertical, horizontal) displacement of each projection (pixels).
    method : str
    history : list of dict
        Per iteration: ``iteration``, ``update_rms_px`` (RMS change of the shifts),
        ``residual`` (relative reprojection misfit).
    converged : bool
        True when the stopping rule ended the iterations (not the iteration limit).
    best_iteration : int
        The iteration whose shifts are returned (lowest reprojection residual).
    """

    shifts_px: np.ndarray
    method: str
    history: list[dict[str, float]] = field(default_factory=list)
    converged: bool = True
    best_iteration: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "converged": self.converged, "best_iteration": self.best_iteration,
                "shift_rms_px": np.sqrt(np.mean(self.shifts_px**2, axis=0)).tolist(),
                "shift_max_px": np.abs(self.shifts_px).max(axis=0).tolist(), "history": self.history}


def remove_rigid_motion(shifts_px: np.ndarray, theta_deg: Any, *, keep_offset: bool = False) -> np.ndarray:
    """Remove the unobservable part: constant vertical, ``a + b cos + c sin`` horizontal.

    ``keep_offset=True`` keeps the constant horizontal part ``a``: with the rotation centre fixed
    it is observable (it is a centre error), so the reprojection loop may correct it.

    Examples
    --------
    >>> th = np.linspace(-120, 120, 50)
    >>> s = np.stack([np.full(50, 2.0), 3 + 2 * np.cos(np.deg2rad(th))], axis=1)
    >>> bool(np.abs(remove_rigid_motion(s, th)).max() < 1e-9)
    True
    """
    th = np.deg2rad(check_angles(theta_deg))
    s = np.asarray(shifts_px, np.float64).copy()
    s[:, 0] -= s[:, 0].mean()
    basis = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    if keep_offset:
        basis = basis[:, 1:]
    coef, *_ = np.linalg.lstsq(basis, s[:, 1], rcond=None)
    s[:, 1] -= basis @ coef
    return s


def apply_shifts(proj: np.ndarray, shifts_px: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Shift each projection ``(n_angles, rows, cols)`` by ``shifts_px[i] = (dy, dx)`` (cubic spline, edge values).

    ``out`` may be ``proj`` itself (views are shifted one at a time): no second copy of the series.
    """
    p = np.asarray(proj, np.float32)
    out = np.empty_like(p) if out is None else out
    for i in range(p.shape[0]):
        dy, dx = shifts_px[i]
        out[i] = ndimage.shift(p[i], (dy, dx), order=3, mode="nearest") if (dy or dx) else p[i]
    return out


def _register(ref: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Displacement (dy, dx) of ``moving`` relative to ``ref`` (sub-pixel, unnormalised cross-correlation)."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(ref, moving, upsample_factor=20, normalization=None)
    return -np.asarray(shift, float)


def align_consistency(proj: np.ndarray, theta_deg: Any) -> AlignmentResult:
    """Fast first pass from two projection invariants of parallel-beam data.

    * Vertical: every view sees the same mass per detector row, so each view's row profile
      (sum over columns) is registered to the median profile (1-D cross-correlation).
    * Horizontal: the centre of mass of each view's column profile follows
      ``a + b cos(theta) + c sin(theta)``; the misfit of that sinusoid is the jitter (valid when the
      object stays inside the field of view, as for a TXM particle or pillar).
    """
    th = check_angles(theta_deg)
    p = np.asarray(proj, np.float32)
    if p.ndim != 3 or p.shape[0] != th.size:
        raise DataError(f"projections must be (n_angles={th.size}, rows, cols), got {p.shape}")
    rows = p.sum(axis=2)
    ref = np.median(rows, axis=0)
    dy = np.array([_register(np.tile(ref, (4, 1)).T, np.tile(r, (4, 1)).T)[0] for r in rows])
    cols = np.clip(p, 0, None).sum(axis=1)
    mass = cols.sum(axis=1)
    if np.any(mass <= 0):
        raise DataError("a projection has no attenuation (empty or wrongly normalised view)")
    com = (cols * np.arange(p.shape[2])).sum(axis=1) / mass
    shifts = remove_rigid_motion(np.stack([dy, com], axis=1), th)
    return AlignmentResult(shifts, "consistency")


def _reconstruct_reproject(p: np.ndarray, P: Projector2D, center_px: float) -> tuple[np.ndarray, slice]:
    """FBP every row (centred on the axis), forward-project again; returns reprojections on the detector."""
    from litomo.tomo.center import center_sinogram
    from litomo.tomo.recon import reconstruct_fbp

    n, rows = p.shape[2], p.shape[1]
    out = np.empty(p.shape, np.float32)
    lo = 0
    # a few rows at a time, written straight into the (angles, rows, cols) result: the padded
    # sinograms and reprojections of the whole series were ~3 more copies of it in flight
    step = 8
    for r0 in range(0, rows, step):
        sinos = center_sinogram(np.moveaxis(p[:, r0 : r0 + step], 1, 0), center_px)  # (rows, angles, n')
        m = (sinos.shape[-1] - 1) // 2
        lo = int(round(m - center_px))
        rep = np.empty(sinos.shape, np.float32)
        for k in range(sinos.shape[0]):
            rec = reconstruct_fbp(sinos[k], P.theta_deg)
            np.maximum(rec, 0, out=rec)  # attenuation is non-negative; clipping removes streak energy
            rep[k] = P.forward(rec)
        # back to detector columns: centred column j' = j + (m - c); integer part only is exact
        frac = (m - center_px) - lo
        rep = ndimage.shift(rep, (0, 0, -frac), order=3, mode="nearest") if abs(frac) > 1e-6 else rep
        out[:, r0 : r0 + step] = np.moveaxis(rep[..., lo : lo + n], 0, 1)
    return out, slice(lo, lo + n)


def align_reprojection(
    proj: np.ndarray,
    theta_deg: Any,
    center_px: float,
    *,
    init: AlignmentResult | None = None,
    max_iter: int = 10,
    tol_px: float = 0.05,
    progress: ProgressCallback | None = None,
) -> AlignmentResult:
    """Iterative reprojection alignment: reconstruct, reproject, register each view, repeat.

    Stopping rule: stop when the RMS change of the shifts falls below ``tol_px``, or when the
    reprojection residual has not improved for two iterations; the shifts of the iteration with
    the lowest residual are returned (the loop otherwise drifts back after its optimum).

    Parameters
    ----------
    proj : ndarray (n_angles, rows, cols)
        -log projections.
    center_px : float
        Rotation centre (detector column).
    init : AlignmentResult, optional
        Starting shifts (e.g. from :func:`align_consistency`).
    """
    th = check_angles(theta_deg)
    p = np.asarray(proj, np.float32)
    if p.ndim != 3 or p.shape[0] != th.size:
        raise DataError(f"projections must be (n_angles={th.size}, rows, cols), got {p.shape}")
    from litomo.tomo.center import center_sinogram

    width = center_sinogram(p[:1, :1, :], center_px).shape[-1]
    P = Projector2D(width, th, use_matrix=False)
    shifts = np.zeros((th.size, 2)) if init is None else init.shifts_px.copy()
    best = (np.inf, shifts.copy(), 0)
    history: list[dict[str, float]] = []
    stalls, converged = 0, False
    for it in range(1, max_iter + 1):
        corrected = apply_shifts(p, -shifts)
        rep, _ = _reconstruct_reproject(corrected, P, center_px)
        residual = float(np.linalg.norm(rep - corrected) / max(np.linalg.norm(corrected), 1e-12))
        if residual < best[0]:
            best, stalls = (residual, shifts.copy(), it - 1), 0
        else:
            stalls += 1
        delta = np.array([_register(rep[i], corrected[i]) for i in range(th.size)])
        new = remove_rigid_motion(shifts + delta, th, keep_offset=True)
        update = float(np.sqrt(np.mean(np.sum((new - shifts) ** 2, axis=1))))
        history.append({"iteration": it, "update_rms_px": update, "residual": residual})
        log.info("reprojection alignment %d: residual %.4g, shift update %.3f px RMS", it, residual, update)
        if progress is not None:
            progress(it, max_iter, "reprojection alignment")
        if stalls >= 2:
            converged = True
            break
        shifts = new
        if update < tol_px:
            converged = True
            break
    final, best_it = best[1], best[2]
    if converged and stalls < 2:  # stopped on a small update: the last shifts are the solution
        final, best_it = shifts, len(history)
    return AlignmentResult(final, "reprojection", history, converged, best_it)


def register_to_reference(proj: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-view displacement of ``proj`` relative to an aligned ``reference`` series (XANES energies).

    Both ``(n_angles, rows, cols)``, same angles; returns ``(n_angles, 2)``. Each pair is
    registered after subtracting its mean and applying a Tukey window (alpha 0.3): the FFT
    correlation is circular, and a sample that fills the field of view (TXM) wraps its top edge
    onto its bottom one. On the 64-px synthetic XANES series against the exactly aligned post-edge
    projections this took the error from 0.47 / 0.30 px RMS (vertical / horizontal) to 0.20 / 0.21.
    """
    from skimage.filters import window

    a = np.asarray(proj, np.float32)
    b = np.asarray(reference, np.float32)
    if a.shape != b.shape:
        raise DataError(f"projection series of shape {a.shape} cannot be registered to {b.shape}")
    w = window(("tukey", 0.3), a.shape[1:]).astype(np.float32)
    return np.array([_register((b[i] - b[i].mean()) * w, (a[i] - a[i].mean()) * w) for i in range(a.shape[0])])


def align_to_reference(proj: np.ndarray, reference: np.ndarray, theta_deg: Any, center_px: float, *,
                       refine: bool = True, max_iter: int = 10,
                       progress: ProgressCallback | None = None) -> AlignmentResult:
    """Shifts of another energy's projections in the frame of an aligned ``reference`` series.

    :func:`register_to_reference` fixes the frame: its shifts' rigid part (mean vertical,
    ``cos``/``sin`` horizontal), averaged over all views, is the offset between the two energies.
    Its per-view part is limited by single-view correlation across a change of contrast (64-px
    synthetic XANES series, 721 views: 0.23 px RMS per view, against 0.02-0.04 px for the
    reprojection-aligned reference). With ``refine`` the per-view part is then refined by
    :func:`align_reprojection` of this series itself (its own contrast, every view consistent
    with one volume), which observes everything but that rigid part; the registration's rigid
    part is added back, so the volumes of all energies share the reference's frame.
    """
    th = check_angles(theta_deg)
    registered = register_to_reference(proj, reference)
    if not refine:
        return AlignmentResult(registered, "registered")
    rigid = registered - remove_rigid_motion(registered, th, keep_offset=True)
    init = AlignmentResult(registered - rigid, "registered")
    res = align_reprojection(proj, th, center_px, init=init, max_iter=max_iter, progress=progress)
    return AlignmentResult(res.shifts_px + rigid, "registered+reprojection", res.history, res.converged,
                           res.best_iteration)

