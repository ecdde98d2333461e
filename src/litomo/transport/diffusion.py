"""Diffusion tortuosity factor by a steady-state finite-volume solve (SPEC 4).

The conducting phase is reduced to its face-connected (6-connectivity) clusters that touch both
faces normal to the transport axis; everything else carries no flux and is excluded from the
linear system. On the remaining voxels the 7-point finite-volume Laplace system is assembled with
conductances ``g = area / length`` per direction (so anisotropic voxels are exact), with

* fixed concentrations ``c = 1`` and ``c = 0`` at the two box faces normal to the axis, applied
  at the voxel faces, i.e. half a voxel from the first/last voxel centre (conductance ``2 g``) --
  the TauFactor convention, so its published values are reproduced;
* no flux through the side faces, or periodic side faces (``periodic=True``).

``tau = eps / (D_eff / D_0)`` with ``eps`` the phase volume fraction of the whole box (including
non-percolating voxels) and ``D_eff / D_0 = F L / (A dC)`` from the total flux ``F`` -- the
definition used by TauFactor (Cooper et al., SoftwareX 5 (2016) 203; Kench et al., JOSS 8 (2023)
5358). The system is solved on the voxel grid itself by conjugate gradients preconditioned with
an aggregation multigrid W-cycle (:mod:`litomo.transport.multigrid`, matrix-free, both cores, ~30 bytes per voxel): the
matrix is SPD and multigrid keeps the iteration count almost independent of the volume size,
whereas TauFactor's over-relaxed Jacobi/SOR needs iterations growing with the edge length.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse.csgraph import connected_components

from litomo.errors import DataError
from litomo.phases import PHASE_CODES, to_canonical
from litomo.progress import ProgressCallback
from litomo.transport import multigrid
from litomo.transport.gridsystem import (  # noqa: F401 (re-exported: multiphase, electrode, petsc use them)
    amg_hierarchy,
    amg_preconditioner,
    conductances,
    grid_system,
    neighbour_pairs,
    residual_progress,
    solve_grid,
)
from litomo.volume import as_voxel_size

log = logging.getLogger(__name__)

AXES: dict[str, int] = {"z": 0, "y": 1, "x": 2}
DEAD_END_FLUX_FRACTION = 0.02  # SPEC 4: below 2 % of the maximum local flux is "dead-end"


@dataclass
class TortuosityResult:
    """Result of :func:`tortuosity` along one axis.

    Attributes
    ----------
    tau : float
        Tortuosity factor ``eps / (D_eff / D_0)``; ``inf`` if the phase does not percolate.
    eps : float
        Volume fraction of the phase in the whole box.
    deff : float
        ``D_eff / D_0 = eps / tau`` (0 if not percolating).
    mcmullin : float
        McMullin number ``N_M = tau / eps`` (= ``D_0 / D_eff``).
    converged : bool
        Both the residual and the inlet/outlet flux balance met their tolerances.
    flux_in, flux_out : float
        Total flux through the inlet and outlet faces for ``dC = 1`` and ``D_0 = 1``
        (units: um, i.e. um^2 of area per um of length).
    flux_balance : float
        ``|flux_in - flux_out| / mean(flux_in, flux_out)``.
    iterations : int
        Total preconditioned CG iterations.
    residual : float
        Final relative residual ``||b - A c|| / ||b||``.
    elapsed_s : float
        Wall time of the whole call in seconds.
    percolating_fraction : float
        Fraction of the phase voxels in clusters touching both faces.
    stagnant_flux_fraction : float
        Fraction of the phase voxels whose local flux magnitude is below 2 % of the maximum
        (non-percolating voxels count as stagnant). Flow-based: not the connectivity measure
        ``dead_end_cluster_fraction`` of :mod:`litomo.metrics.summary`.
    reason : str
        Why ``tau`` is infinite or the solve did not converge; empty otherwise.
    flux : numpy.ndarray or None
        With ``return_flux=True``: float32 flux-density magnitude (units of ``D_0 dC / um``),
        0 in non-percolating phase voxels, NaN outside the phase.
    axis : str
        The transport axis (``"z"``, ``"y"`` or ``"x"``).
    """

    tau: float
    eps: float
    deff: float
    mcmullin: float
    converged: bool
    flux_in: float = 0.0
    flux_out: float = 0.0
    flux_balance: float = 0.0
    iterations: int = 0
    residual: float = 0.0
    elapsed_s: float = 0.0
    percolating_fraction: float = 0.0
    stagnant_flux_fraction: float = 1.0
    reason: str = ""
    flux: np.ndarray | None = field(default=None, repr=False)
    axis: str = "z"

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields as a dict (no flux map), e.g. for JSON output."""
        return {k: v for k, v in self.__dict__.items() if k != "flux"}


def axis_index(axis: str | int) -> int:
    """Map ``"z"/"y"/"x"`` (or 0/1/2) to the array axis index."""
    if isinstance(axis, (int, np.integer)) and int(axis) in (0, 1, 2):
        return int(axis)
    key = str(axis).strip().lower()
    if key in AXES:
        return AXES[key]
    raise DataError(f"axis must be 'z', 'y' or 'x' (or 0, 1, 2), got {axis!r}")


def percolating_mask(mask: np.ndarray, axis: int, periodic: bool = False) -> np.ndarray:
    """Voxels of ``mask`` in 6-connected clusters touching both faces normal to ``axis``.

    With ``periodic=True`` clusters are also joined across the side faces (the two axes other
    than ``axis``).

    Examples
    --------
    >>> m = np.zeros((3, 2, 2), bool); m[:, 0, 0] = True; m[0, 1, 1] = True
    >>> int(percolating_mask(m, 0).sum())
    3
    """
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 1))
    if n == 0:
        return np.zeros(mask.shape, bool)
    if periodic:
        pairs = []
        for side in range(3):
            if side == axis:
                continue
            a = np.take(labels, 0, axis=side).ravel()
            b = np.take(labels, -1, axis=side).ravel()
            ok = (a > 0) & (b > 0)
            pairs.append(np.stack([a[ok], b[ok]]))
        pairs_arr = np.concatenate(pairs, axis=1)
        graph = sp.coo_matrix(
            (np.ones(pairs_arr.shape[1], np.int8), (pairs_arr[0], pairs_arr[1])), shape=(n + 1, n + 1)
        )
        _, root = connected_components(graph, directed=False)
        # Node 0 (background) has no edges, so it alone keeps component id 0.
        root = root.astype(np.int32) + 1
        root[0] = 0
        labels = root[labels]
    first = np.unique(np.take(labels, 0, axis=axis))
    last = np.unique(np.take(labels, -1, axis=axis))
    both = np.intersect1d(first, last)
    both = both[both > 0]
    if both.size == 0:
        return np.zeros(mask.shape, bool)
    keep = np.zeros(int(labels.max()) + 2, bool)
    keep[both] = True
    out = keep[labels]
    out &= mask
    return out


def _checked_mask(mask: np.ndarray, rtol: float, flux_tol: float, maxiter: int) -> np.ndarray:
    """``mask`` as a 3D bool array; raises :class:`DataError` on a bad mask or bad tolerances."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise DataError(f"tortuosity needs a 3D (z, y, x) mask, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(np.unique(mask), (0, 1)).all():
            raise DataError("tortuosity: mask must be boolean (or 0/1); map labels to a phase first")
        mask = mask.astype(bool)
    if not (0.0 < rtol < 1.0 and 0.0 < flux_tol < 1.0 and maxiter >= 1):
        # a negative tolerance is never met: the solver would iterate for ever (issue #20)
        raise DataError(f"tortuosity: rtol and flux_tol must lie in (0, 1) and maxiter >= 1, got "
                        f"rtol={rtol:g}, flux_tol={flux_tol:g}, maxiter={maxiter}")
    return mask


def _face_fluxes(perc: np.ndarray, ax: int, gb: float):
    """``fluxes(c) -> (F_in, F_out)``: boundary fluxes through the inlet (c=1) and outlet (c=0) faces."""
    inlet_sl = [slice(None)] * 3
    inlet_sl[ax] = 0
    outlet_sl = [slice(None)] * 3
    outlet_sl[ax] = -1
    inlet_sl, outlet_sl = tuple(inlet_sl), tuple(outlet_sl)
    perc_in, perc_out = perc[inlet_sl], perc[outlet_sl]

    def fluxes(c: np.ndarray) -> tuple[float, float]:
        return (float(gb * np.sum(1.0 - c[inlet_sl][perc_in])),
                float(gb * np.sum(c[outlet_sl][perc_out])))

    return fluxes


def _flux_density(c_grid: np.ndarray, faces, ax: int, voxel: tuple[float, float, float], mask: np.ndarray,
                  n_perc: int, return_flux: bool) -> tuple[np.ndarray | None, int]:
    """(flux-density map or None, number of percolating voxels below the dead-end flux threshold)."""
    # Local flux density: per direction, the mean of the two face fluxes of each voxel.
    mag = multigrid.flux_magnitude(c_grid, faces, ax, (voxel[1] * voxel[2], voxel[0] * voxel[2],
                                                       voxel[0] * voxel[1]))
    thresh = DEAD_END_FLUX_FRACTION * float(mag.max())
    # mag is 0 outside the percolating voxels, which count as dead-end anyway
    n_dead_perc = int(np.count_nonzero(mag < thresh)) - (mask.size - n_perc) if thresh > 0 else 0
    if not return_flux:
        return None, n_dead_perc
    np.copyto(mag, np.float32(np.nan), where=~mask)
    return mag, n_dead_perc


def _no_path(reason: str, mask: np.ndarray, ax_name: str, return_flux: bool, t0: float) -> TortuosityResult:
    """The result without a percolating path: infinite tortuosity, zero effective diffusivity."""
    log.info("tortuosity along %s: %s", ax_name, reason)
    n_phase = int(np.count_nonzero(mask))
    flux = np.where(mask, np.float32(0), np.float32(np.nan)) if return_flux else None
    return TortuosityResult(
        tau=math.inf, eps=n_phase / mask.size, deff=0.0, mcmullin=math.inf, converged=True,
        percolating_fraction=0.0, stagnant_flux_fraction=1.0 if n_phase else 0.0,
        reason=reason, flux=flux, axis=ax_name, elapsed_s=time.perf_counter() - t0,
    )


def tortuosity(
    mask: np.ndarray,
    axis: str | int = "z",
    *,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    periodic: bool = False,
    rtol: float = 1e-6,
    flux_tol: float = 1e-3,
    return_flux: bool = False,
    maxiter: int = 2000,
    progress: ProgressCallback | None = None,
) -> TortuosityResult:
    """Diffusion tortuosity factor of the ``True`` phase of ``mask`` along ``axis``.

    Parameters
    ----------
    mask : (z, y, x) bool array
        The conducting phase (e.g. ``labels == 0`` for the pores).
    axis : {"z", "y", "x"} or int
        Transport direction.
    voxel_size_um : float or (z, y, x) tuple
        Voxel edge lengths in um; anisotropic voxels set conductances ``area / length``.
    periodic : bool
        Periodic instead of no-flux side faces.
    rtol : float
        Relative residual ``||b - A c|| / ||b||`` to reach.
    flux_tol : float
        Required inlet/outlet flux balance ``|F_in - F_out| / mean``; the residual tolerance is
        tightened (10x steps) until it is met.
    return_flux : bool
        Also return the float32 flux-density magnitude map (NaN outside the phase).
    maxiter : int
        Cap on the total number of CG iterations.
    progress : callable, optional
        ``progress(done, total, description)``.

    Returns
    -------
    TortuosityResult

    Examples
    --------
    >>> m = np.zeros((8, 6, 6), bool); m[:, 1:3, 1:3] = True
    >>> r = tortuosity(m, "z")
    >>> round(r.tau, 6), round(r.eps, 4)
    (1.0, 0.1111)
    """
    t0 = time.perf_counter()
    mask = _checked_mask(mask, rtol, flux_tol, maxiter)
    ax = axis_index(axis)
    ax_name = "zyx"[ax]
    voxel = as_voxel_size(voxel_size_um)
    if mask.shape[ax] < 2:
        raise DataError(f"tortuosity: the volume needs at least 2 voxels along axis {ax_name}")
    n_phase = int(np.count_nonzero(mask))
    eps = n_phase / mask.size
    desc = f"tortuosity {ax_name}: residual decades"
    report, n_decades = residual_progress(progress, desc, rtol)
    if progress is not None:
        progress(0, n_decades, desc)

    perc = percolating_mask(mask, ax, periodic=periodic) if n_phase else None
    n = int(np.count_nonzero(perc)) if n_phase else 0
    if n == 0:
        if progress is not None:
            progress(n_decades, n_decades, desc)
        reason = ("the phase is absent (no voxels)" if n_phase == 0 else
                  f"no face-connected path of the phase joins the two faces normal to {ax_name}")
        return _no_path(reason, mask, ax_name, return_flux, t0)

    g = conductances(voxel)
    faces, b_grid, gb = grid_system(perc, ax, g, periodic)
    levels = multigrid.build_hierarchy(faces)
    fluxes = _face_fluxes(perc, ax, gb)

    def balance(c: np.ndarray) -> float:
        fi, fo = fluxes(c)
        return abs(fi - fo) / max(0.5 * (fi + fo), 1e-300)

    # Linear profile as start: exact for straight channels, good elsewhere.
    shape1 = [1, 1, 1]
    shape1[ax] = mask.shape[ax]
    profile = (1.0 - (np.arange(mask.shape[ax]) + 0.5) / mask.shape[ax]).reshape(shape1)
    x0 = np.where(perc, profile, 0.0)
    c_grid, iters, rel, bal, ok = solve_grid(levels, (b_grid, gb), x0, rtol, balance, flux_tol, maxiter,
                                              callback=report)
    del levels, b_grid, x0
    f_in, f_out = fluxes(c_grid)
    f_mean = 0.5 * (f_in + f_out)
    box_len = mask.shape[ax] * voxel[ax]
    box_area = math.prod(mask.shape[k] * voxel[k] for k in range(3) if k != ax)
    deff = f_mean * box_len / box_area
    tau = eps / deff if deff > 0 else math.inf

    flux_map, n_dead_perc = _flux_density(c_grid, faces, ax, voxel, mask, n, return_flux)
    del c_grid, faces, perc
    n_dead = n_dead_perc + (n_phase - n)

    reason = ""
    if not ok:
        reason = (f"not converged after {iters} iterations: residual {rel:.2e} (rtol {rtol:g}), "
                  f"flux balance {bal:.2e} (flux_tol {flux_tol:g})")
        log.warning("tortuosity along %s %s", ax_name, reason)
    if progress is not None:
        progress(n_decades, n_decades, desc)
    return TortuosityResult(
        tau=float(tau), eps=float(eps), deff=float(deff), mcmullin=float(tau / eps),
        converged=bool(ok), flux_in=f_in, flux_out=f_out, flux_balance=float(bal),
        iterations=int(iters), residual=float(rel), elapsed_s=time.perf_counter() - t0,
        percolating_fraction=n / n_phase, stagnant_flux_fraction=n_dead / n_phase, reason=reason,
        flux=flux_map, axis=ax_name,
    )


def phase_mask(labels: np.ndarray, phase: str | int = "pore", mapping: dict[str, int] | None = None) -> np.ndarray:
    """Boolean mask of one phase of a label volume (``phase`` a name or a canonical code).

    Examples
    --------
    >>> phase_mask(np.array([[[0, 85, 170]]]), "am", {"pore": 0, "am": 85, "cbd": 170}).tolist()
    [[[False, True, False]]]
    """
    if isinstance(phase, str):
        key = phase.strip().lower()
        if key not in PHASE_CODES:
            raise DataError(f"unknown phase {phase!r}; known phases are {', '.join(PHASE_CODES)}")
        code = PHASE_CODES[key]
    else:
        code = int(phase)
    return to_canonical(labels, mapping) == code


def phase_tortuosity(
    labels: np.ndarray,
    phase: str | int = "pore",
    axes: tuple[str, ...] | list[str] = ("z",),
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    mapping: dict[str, int] | None = None,
    **kw: Any,
) -> dict[str, TortuosityResult]:
    """Tortuosity factor of one phase of a label volume along several axes.

    Parameters
    ----------
    labels : (z, y, x) integer array
        Label volume; ``mapping`` says which stored value is which phase (SPEC 1 default
        ``pore=0, am=1, cbd=2``).
    phase : {"pore", "am", "cbd"}
        Conducting phase (pores for ionic, CBD for electronic transport).
    axes : sequence of {"z", "y", "x"}
        Transport axes.
    voxel_size_um : float or (z, y, x) tuple
        Voxel size in um.
    **kw
        Passed to :func:`tortuosity`.

    Returns
    -------
    dict
        ``{axis: TortuosityResult}``.

    Examples
    --------
    >>> lab = np.ones((6, 4, 4), np.uint8); lab[:, :2, :2] = 0
    >>> round(phase_tortuosity(lab, "pore", ("z",))["z"].tau, 6)
    1.0
    """
    mask = phase_mask(labels, phase, mapping)
    return {"zyx"[axis_index(a)]: tortuosity(mask, a, voxel_size_um=voxel_size_um, **kw) for a in axes}
