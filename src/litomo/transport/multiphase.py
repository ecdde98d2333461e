"""Multiphase diffusion: tortuosity with a per-voxel diffusivity, and transport classes of a phase.

The carbon-binder domain (CBD) is itself nano-porous (its porosity can reach ~47 %), so the
electrolyte also diffuses through it, more slowly than through the open pores. Here every voxel
carries a relative diffusivity ``D / D_0`` (1 in the open pores, ``D_CBD / D_0`` in the CBD, 0 in
the active material) and the same steady-state finite-volume problem as
:func:`litomo.transport.diffusion.tortuosity` is solved with face conductances
``g * 2 D_a D_b / (D_a + D_b)`` (harmonic mean: two half-voxel resistances in series, which makes
layered media exact) on the same matrix-free multigrid (:mod:`litomo.transport.multigrid`, whose
kernels take float face weights as well as the binary ones).

Definitions (as TauFactor's multiphase solver): ``D_eff / D_0 = F L / (A dC)`` from the total
flux; ``D_mean`` = volume mean of ``D / D_0`` over the box (the diffusivity-weighted volume
fraction; it is the porosity ``eps`` for a binary pore phase); tortuosity factor
``tau = D_mean / (D_eff / D_0)``; McMullin number ``N_M = D_0 / D_eff = tau / D_mean``. With a
single phase of ``D = 1`` these are the binary ``tau``, ``eps`` and ``N_M = tau / eps``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from litomo.errors import DataError
from litomo.phases import PHASE_CODES, to_canonical
from litomo.progress import ProgressCallback
from litomo.transport import multigrid
from litomo.transport.diffusion import (
    DEAD_END_FLUX_FRACTION,
    TortuosityResult,
    axis_index,
    conductances,
    percolating_mask,
    residual_progress,
    solve_grid,
)
from litomo.volume import as_voxel_size

# transport classes written by :func:`transport_classes`
FLOWING, STAGNANT, DEAD_END, ISOLATED = 1, 2, 3, 4
CLASS_NAMES = {0: "outside the phase", FLOWING: "through, flowing", STAGNANT: "through, stagnant (<2 % of max flux)",
               DEAD_END: "dead-end cluster (one face)", ISOLATED: "isolated cluster (no face)"}


@dataclass
class MultiphaseTortuosityResult(TortuosityResult):
    """:class:`~litomo.transport.diffusion.TortuosityResult` of a per-voxel diffusivity field.

    ``eps`` is the volume fraction of the conducting voxels (``D > 0``), ``d_mean`` the volume
    mean of ``D / D_0``, ``tau = d_mean / deff`` and ``mcmullin = 1 / deff``.
    """

    d_mean: float = math.nan


def cbd_relative_diffusivity(cbd_porosity: float, bruggeman_exponent: float = 1.5) -> float:
    """``D_CBD / D_0`` of a nano-porous carbon-binder domain by Bruggeman: ``eps_CBD ** alpha``.

    Examples
    --------
    >>> round(cbd_relative_diffusivity(0.47), 4)
    0.3222
    """
    if not 0.0 <= cbd_porosity <= 1.0:
        raise DataError(f"--cbd-porosity must lie in [0, 1], got {cbd_porosity:g}")
    return float(cbd_porosity) ** float(bruggeman_exponent)


def diffusivity_map(labels: np.ndarray, diffusivity: Mapping[str, float],
                    mapping: Mapping[str, int] | None = None) -> np.ndarray:
    """Per-voxel relative diffusivity ``D / D_0`` (float32) from a label volume.

    Parameters
    ----------
    labels : (z, y, x) integer array
    diffusivity : mapping
        ``{phase name: D / D_0}``; phases not named get 0 (e.g. ``{"pore": 1, "cbd": 0.32}``).
    mapping : mapping, optional
        Stored value of each phase (default ``pore=0, am=1, cbd=2``).

    Examples
    --------
    >>> diffusivity_map(np.array([[[0, 1, 2]]]), {"pore": 1.0, "cbd": 0.25}).tolist()
    [[[1.0, 0.0, 0.25]]]
    """
    canon = to_canonical(np.asarray(labels), dict(mapping) if mapping else None)
    lut = np.zeros(max(PHASE_CODES.values()) + 1, np.float32)
    for name, value in diffusivity.items():
        key = name.strip().lower()
        if key not in PHASE_CODES:
            raise DataError(f"unknown phase {name!r} in the diffusivities; known: {', '.join(PHASE_CODES)}")
        if not (math.isfinite(value) and value >= 0):
            raise DataError(f"diffusivity of {key} must be finite and >= 0, got {value!r}")
        lut[PHASE_CODES[key]] = value
    return lut[canon]


def _checked_field(diffusivity: np.ndarray) -> np.ndarray:
    d = np.asarray(diffusivity, np.float32)
    if d.ndim != 3:
        raise DataError(f"multiphase tortuosity needs a 3D (z, y, x) diffusivity field, got shape {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise DataError("multiphase tortuosity: the diffusivity field must be finite and >= 0")
    return d


def _faces(dp: np.ndarray, ax: int, g: tuple[float, float, float]) -> tuple[multigrid.Faces, np.ndarray, float]:
    """Stencil with harmonic-mean face weights, right-hand side grid and its scale."""
    ws = []
    for d in range(3):
        nb = np.roll(dp, -1, axis=d)
        s = dp + nb
        w = np.zeros(dp.shape, np.float32)
        np.divide(2.0 * dp * nb, s, out=w, where=s > 0)
        last = [slice(None)] * 3
        last[d] = -1
        w[tuple(last)] = 0.0  # no wrap: no-flux side faces
        ws.append(w)
    gb = 2.0 * g[ax]
    first = [slice(None)] * 3
    first[ax] = 0
    last = [slice(None)] * 3
    last[ax] = -1
    b = np.zeros(dp.shape, np.float32)
    b[tuple(first)] = dp[tuple(first)]
    dirichlet = b.copy()
    dirichlet[tuple(last)] = dp[tuple(last)]
    return multigrid.Faces(ws[0], ws[1], ws[2], dirichlet, (*g, gb)), b, gb


def multiphase_tortuosity(
    diffusivity: np.ndarray,
    axis: str | int = "z",
    *,
    voxel_size_um: float | tuple[float, float, float] = 1.0,
    rtol: float = 1e-6,
    flux_tol: float = 1e-3,
    maxiter: int = 2000,
    return_flux: bool = False,
    progress: ProgressCallback | None = None,
) -> MultiphaseTortuosityResult:
    """Tortuosity factor of a per-voxel relative diffusivity field along ``axis``.

    Parameters
    ----------
    diffusivity : (z, y, x) float array
        ``D / D_0`` per voxel (0 = blocking), e.g. from :func:`diffusivity_map`.
    axis : {"z", "y", "x"} or int
    voxel_size_um : float or (z, y, x) tuple
    rtol, flux_tol, maxiter : see :func:`litomo.transport.diffusion.tortuosity`
    return_flux : bool
        Also return the flux-density magnitude map (NaN where ``D = 0``).
    progress : callable, optional

    Returns
    -------
    MultiphaseTortuosityResult

    Examples
    --------
    >>> d = np.ones((8, 4, 4), np.float32); d[4:] = 0.25  # two layers in series
    >>> r = multiphase_tortuosity(d, "z")
    >>> round(r.deff, 6), round(r.tau, 6)  # D_eff = 1 / mean(1/D) = 0.4, tau = 0.625 / 0.4
    (0.4, 1.5625)
    """
    t0 = time.perf_counter()
    d = _checked_field(diffusivity)
    ax = axis_index(axis)
    name = "zyx"[ax]
    if d.shape[ax] < 2 or not (0.0 < rtol < 1.0 and 0.0 < flux_tol < 1.0 and maxiter >= 1):
        raise DataError(f"multiphase tortuosity: need >= 2 voxels along {name}, rtol and flux_tol in (0, 1)")
    voxel = as_voxel_size(voxel_size_um)
    cond = d > 0
    eps, d_mean = float(cond.mean()), float(d.mean(dtype=np.float64))
    perc = percolating_mask(cond, ax) if cond.any() else np.zeros(d.shape, bool)
    n = int(np.count_nonzero(perc))
    if n == 0:
        return MultiphaseTortuosityResult(
            tau=math.inf, eps=eps, deff=0.0, mcmullin=math.inf, converged=True, d_mean=d_mean, axis=name,
            reason=f"no face-connected path of conducting voxels joins the faces normal to {name}",
            elapsed_s=time.perf_counter() - t0)
    dp = np.where(perc, d, np.float32(0))
    g = conductances(voxel)
    faces, b_grid, gb = _faces(dp, ax, g)
    sl_in = tuple(0 if k == ax else slice(None) for k in range(3))
    sl_out = tuple(-1 if k == ax else slice(None) for k in range(3))

    def fluxes(c: np.ndarray) -> tuple[float, float]:
        return (float(gb * np.sum(dp[sl_in] * (1.0 - c[sl_in]))), float(gb * np.sum(dp[sl_out] * c[sl_out])))

    def balance(c: np.ndarray) -> float:
        fi, fo = fluxes(c)
        return abs(fi - fo) / max(0.5 * (fi + fo), 1e-300)

    report, n_dec = residual_progress(progress, f"multiphase tortuosity {name}: residual decades", rtol)
    shape1 = [1, 1, 1]
    shape1[ax] = d.shape[ax]
    x0 = np.where(perc, (1.0 - (np.arange(d.shape[ax]) + 0.5) / d.shape[ax]).reshape(shape1), 0.0)
    c, iters, rel, bal, ok = solve_grid(multigrid.build_hierarchy(faces), (b_grid, gb), x0, rtol, balance,
                                        flux_tol, maxiter, callback=report)
    f_in, f_out = fluxes(c)
    box_area = math.prod(d.shape[k] * voxel[k] for k in range(3) if k != ax)
    deff = 0.5 * (f_in + f_out) * d.shape[ax] * voxel[ax] / box_area
    flux = multigrid.flux_magnitude(c, faces, ax, (voxel[1] * voxel[2], voxel[0] * voxel[2], voxel[0] * voxel[1]))
    # conducting voxels below 2 % of the maximum flux (the non-percolating ones included)
    stagnant = int(np.count_nonzero(cond & (flux < DEAD_END_FLUX_FRACTION * float(flux.max())))) / int(cond.sum())
    np.copyto(flux, np.float32(np.nan), where=~cond)
    if progress is not None:
        progress(n_dec, n_dec, f"multiphase tortuosity {name}: residual decades")
    return MultiphaseTortuosityResult(
        tau=d_mean / deff if deff > 0 else math.inf, eps=eps, deff=float(deff),
        mcmullin=1.0 / deff if deff > 0 else math.inf, converged=bool(ok), flux_in=f_in, flux_out=f_out,
        flux_balance=float(bal), iterations=int(iters), residual=float(rel), elapsed_s=time.perf_counter() - t0,
        percolating_fraction=n / int(cond.sum()), stagnant_flux_fraction=stagnant,
        flux=flux if return_flux else None, axis=name, d_mean=d_mean,
        reason="" if ok else f"not converged after {iters} iterations (residual {rel:.2e}, balance {bal:.2e})")


def transport_classes(mask: np.ndarray, axis: str | int = "z", flux: np.ndarray | None = None) -> np.ndarray:
    """Label volume (uint8) of a phase's transport classes along ``axis``.

    ``1`` through-cluster voxels carrying at least 2 % of the maximum local flux (all
    through-cluster voxels when ``flux`` is None), ``2`` through-cluster voxels below that
    (stagnant pockets of the network), ``3`` clusters touching one face only (dead ends),
    ``4`` clusters touching neither (isolated), ``0`` outside the phase. Clusters are
    6-connected.

    Examples
    --------
    >>> m = np.zeros((4, 3, 3), bool); m[:, 0, 0] = True; m[:2, 2, 2] = True; m[2, 1, 1] = True
    >>> np.bincount(transport_classes(m, "z").ravel(), minlength=5).tolist()
    [29, 4, 0, 2, 1]
    """
    mask = np.asarray(mask, bool)
    ax = axis_index(axis)
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 1))
    first = np.zeros(n + 1, bool)
    last = np.zeros(n + 1, bool)
    first[np.take(lab, 0, axis=ax).ravel()] = True
    last[np.take(lab, -1, axis=ax).ravel()] = True
    lut = np.full(n + 1, ISOLATED, np.uint8)
    lut[first ^ last] = DEAD_END
    lut[first & last] = FLOWING
    lut[0] = 0
    out = lut[lab]
    if flux is not None:
        f = np.nan_to_num(np.asarray(flux, np.float32), nan=0.0)
        through = out == FLOWING
        fmax = float(f[through].max()) if through.any() else 0.0
        out[through & (f < DEAD_END_FLUX_FRACTION * fmax)] = STAGNANT
    return out
