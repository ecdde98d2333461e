"""Li maps from N-energy XANES stacks (SPEC 2.2, issue 16): normalisation, edge position, LCF.

TXM-XANES users often image 20-100 energies across the edge instead of three. For every voxel of
such a stack (registered, binned: the stage works on the arrays the three-energy path maps):

1. **normalisation** (:func:`litomo.xanes.normalize.normalize_spectra`, larch's ``pre_edge``):
   pre-edge line and post-edge curve fitted in windows set by the energies that were measured,
   around one E0 for all voxels (the references' half-jump energy: a per-voxel derivative
   maximum is unstable on noisy spectra and would move the windows from voxel to voxel);
2. **edge position**: the energy where the normalised spectrum crosses 0.5 (half jump);
3. **Li content**: linear-combination fit of the normalised spectrum with the two normalised
   references (weights summing to one, :func:`litomo.xanes.lcf.lcf_fit`) in
   ``E0 + fit_range_ev``; ``x_Li = li_charged + w_pristine * (li_pristine - li_charged)``;
   per-voxel R-factor (larch's ``sum(resid^2) / sum(data^2)``); a voxel whose R-factor is an
   outlier (the two references do not describe it) or whose weight is far outside [0, 1] is a
   **bad fit**: NaN in the map, counted, never silently mapped;
4. the active-material mask from the edge jump (:func:`litomo.xanes.threeenergy.jump_threshold`
   on the mean pre-edge and post-edge images) and the same classes as the three-energy map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from litomo.errors import DataError
from litomo.xanes.spectra import Spectrum

log = logging.getLogger(__name__)

#: an energy list must have at least two energies this far below E0 (pre-edge line) ...
PRE_EDGE_GAP_EV = 15.0
#: ... and two this far above it (post-edge normalisation)
POST_EDGE_GAP_EV = 40.0


@dataclass(frozen=True)
class NEnergyMap:
    """Result of :func:`map_li_spectra`; spatial arrays have the stack's spatial shape.

    Attributes
    ----------
    x_li : float32 array
        Li content; NaN outside the active material and where the fit is bad.
    edge_ev : float32 array
        Half-jump edge energy (eV); NaN outside the active material.
    r_factor : float32 array
        LCF R-factor; NaN outside the active material.
    bad_fit : bool array
        Active-material voxels whose fit was rejected.
    am : bool array
        Active-material mask (edge jump above the threshold).
    edge_step : float32 array
        Edge jump (units of the stack); NaN outside the active material.
    e0_ev : float
        E0 of the normalisation (eV).
    r_factor_max : float
        R-factor above which a fit is bad.
    classes : int8 array
        0 poor, 1 moderate, 2 rich, -1 unmapped (:func:`litomo.xanes.threeenergy.classify_li`).
    """

    x_li: np.ndarray
    edge_ev: np.ndarray
    r_factor: np.ndarray
    bad_fit: np.ndarray
    am: np.ndarray
    edge_step: np.ndarray
    e0_ev: float
    r_factor_max: float
    classes: np.ndarray

    @property
    def bad_fit_fraction(self) -> float:
        """Fraction of the active-material voxels with a rejected fit."""
        n = int(self.am.sum())
        return float(self.bad_fit.sum() / n) if n else float("nan")


def check_energy_list(energies_ev, *, e0_ev: float, n_stacks: int | None = None) -> np.ndarray:
    """Validate an energy list for N-energy mapping; returns it as a float array.

    Raises
    ------
    DataError
        Fewer than four energies, non-finite values, duplicates, energies out of order, fewer
        than two energies :data:`PRE_EDGE_GAP_EV` below E0 or :data:`POST_EDGE_GAP_EV` above it,
        or a stack count different from the number of energies.

    Examples
    --------
    >>> check_energy_list([8300, 8310, 8340, 8380, 8400], e0_ev=8333.0).size
    5
    >>> check_energy_list([8300, 8310, 8310, 8400, 8420], e0_ev=8333.0)
    Traceback (most recent call last):
    ...
    litomo.errors.DataError: energy 8310 eV is listed twice (positions 1 and 2)
    """
    e = np.asarray(energies_ev, dtype=float).ravel()
    if e.size < 4:
        raise DataError(f"need at least four energies across the edge, got {e.size}")
    if not np.all(np.isfinite(e)):
        raise DataError("energies must be finite numbers (eV)")
    for i in range(1, e.size):
        if e[i] == e[i - 1] or e[i] in e[:i]:
            j = int(np.flatnonzero(e[:i] == e[i])[0])
            raise DataError(f"energy {e[i]:g} eV is listed twice (positions {j} and {i})")
        if e[i] < e[i - 1]:
            raise DataError(f"energies must increase: {e[i]:g} eV follows {e[i - 1]:g} eV (position {i})")
    n_pre = int((e <= e0_ev - PRE_EDGE_GAP_EV).sum())
    n_post = int((e >= e0_ev + POST_EDGE_GAP_EV).sum())
    if n_pre < 2 or n_post < 2:
        raise DataError(
            f"the energies ({e[0]:g}-{e[-1]:g} eV) do not cover the edge at {e0_ev:g} eV: need two at or "
            f"below {e0_ev - PRE_EDGE_GAP_EV:g} eV (have {n_pre}) and two at or above "
            f"{e0_ev + POST_EDGE_GAP_EV:g} eV (have {n_post})")
    if n_stacks is not None and n_stacks != e.size:
        raise DataError(f"{n_stacks} image stacks for {e.size} energies")
    return e


def reference_e0(pristine: Spectrum, charged: Spectrum) -> float:
    """Half-jump energy of the mean of the two normalised references (eV)."""
    from litomo.xanes.normalize import edge_energy_half

    lo = max(pristine.range_ev[0], charged.range_ev[0])
    hi = min(pristine.range_ev[1], charged.range_ev[1])
    e = np.linspace(lo, hi, int((hi - lo) / 0.25) + 1)
    mean = 0.5 * (np.asarray(pristine.at(e)) + np.asarray(charged.at(e)))
    return float(edge_energy_half(e, mean))


def _auto_rfactor_max(r: np.ndarray) -> float:
    # noise alone spreads the R-factor over a narrow, skewed band; spectra the references cannot
    # describe lie far above it: median + 8 robust sigma
    r = r[np.isfinite(r)]
    if r.size < 10:
        return float("inf")
    med = float(np.median(r))
    return med + 8.0 * 1.4826 * float(np.median(np.abs(r - med)))


def map_li_spectra(energies_ev, mu, pristine: Spectrum, charged: Spectrum, *, li_pristine: float = 1.0,
                   li_charged: float = 0.38, e0_ev: float | None = None,
                   fit_range_ev: tuple[float, float] = (-20.0, 60.0), r_factor_max: float | None = None,
                   class_thresholds: tuple[float, float] = (0.6, 0.9)) -> NEnergyMap:
    """Li map of an N-energy stack (see the module docstring).

    Parameters
    ----------
    energies_ev : array (E,)
        Energies of the stack (eV, foil-corrected), increasing, covering the edge.
    mu : array (E, ...)
        Attenuation per voxel (registered), energy on axis 0; NaN voxels are left unmapped.
    pristine, charged : Spectrum
        Normalised references of the Li-rich and delithiated end members.
    li_pristine, li_charged : float
        Li content of the references.
    e0_ev : float, optional
        E0 of the normalisation; default :func:`reference_e0`.
    fit_range_ev : (lo, hi)
        LCF window relative to E0 (eV); Athena's default is (-20, 30).
    r_factor_max : float, optional
        Fits above it are bad; default: median + 8 robust sigma of the map's R-factors.
    class_thresholds : (poor_max, rich_min)
        Li class thresholds (:func:`litomo.xanes.threeenergy.classify_li`).

    Returns
    -------
    NEnergyMap

    Examples
    --------
    >>> from litomo.xanes.spectra import Spectrum
    >>> e = np.linspace(8250, 8500, 101)
    >>> a = Spectrum(e, 1 / (1 + np.exp(-(e - 8338) / 2)), "a")
    >>> b = Spectrum(e, 1 / (1 + np.exp(-(e - 8342) / 2)), "b")
    >>> w = np.array([0.0, 0.2, 0.5, 0.8, 1.0] * 4)
    >>> am = np.r_[np.ones(20), np.zeros(20)]  # 20 voxels of active material, 20 of pore
    >>> mu = (np.outer(a.at(e), w) + np.outer(b.at(e), 1 - w)) * am[:20].max() + 0.3
    >>> mu = np.concatenate([mu, np.full((e.size, 20), 0.3)], axis=1)
    >>> mu += np.random.default_rng(0).normal(0, 1e-4, mu.shape)
    >>> m = map_li_spectra(e, mu, a, b)
    >>> [round(float(v), 2) for v in m.x_li[:5]], int(m.am.sum())
    ([0.38, 0.5, 0.69, 0.88, 1.0], 20)
    """
    from litomo.xanes.lcf import lcf_fit
    from litomo.xanes.normalize import edge_energy_half, normalize_spectra
    from litomo.xanes.threeenergy import classify_li, jump_threshold

    mu = np.asarray(mu, dtype=np.float64)
    e0 = reference_e0(pristine, charged) if e0_ev is None else float(e0_ev)
    e = check_energy_list(energies_ev, e0_ev=e0, n_stacks=mu.shape[0])
    for ref in (pristine, charged):
        lo, hi = ref.range_ev
        if e[0] < lo or e[-1] > hi:
            raise DataError(f"reference '{ref.name}' covers {lo:g}-{hi:g} eV, the energies {e[0]:g}-{e[-1]:g} eV")
    spatial = mu.shape[1:]
    flat = mu.reshape(e.size, -1)
    finite = np.all(np.isfinite(flat), axis=0)
    pre_sel, post_sel = e <= e0 - PRE_EDGE_GAP_EV, e >= e0 + POST_EDGE_GAP_EV
    pre_mean = np.where(finite, flat[pre_sel].mean(axis=0), np.nan)
    post_mean = np.where(finite, flat[post_sel].mean(axis=0), np.nan)
    thr = jump_threshold(pre_mean[finite], post_mean[finite])
    am = finite & (post_mean - pre_mean >= thr)
    idx = np.flatnonzero(am)
    windows = {"e0": e0, "keep_curves": False, "pre_range": (e[0] - e0 - 1.0, -PRE_EDGE_GAP_EV + 0.5),
               "post_range": (POST_EDGE_GAP_EV - 0.5, e[-1] - e0 + 1.0),
               "post_order": 1 if int(post_sel.sum()) >= 4 else 0}
    norm = normalize_spectra(e, flat[:, idx], **windows)
    # the references are normalised again, at the measured energies with the same windows: their
    # own normalisation (over a longer, finer scan) differs from what a few post-edge energies
    # on EXAFS wiggles give, and the fit must compare like with like (30-energy model: x_Li
    # RMSE 0.047 with the references as given)
    refs = normalize_spectra(e, np.stack([np.asarray(pristine.at(e)), np.asarray(charged.at(e))], axis=1),
                             **windows).norm.T
    fit = lcf_fit(e, norm.norm, refs, sum_to_one=True, fit_range_ev=(e0 + fit_range_ev[0], e0 + fit_range_ev[1]))
    w = np.asarray(fit.weights[0], dtype=float)
    rf = np.asarray(fit.r_factor, dtype=float)
    rmax = _auto_rfactor_max(rf) if r_factor_max is None else float(r_factor_max)
    bad_sel = ~np.isfinite(w) | ~(rf <= rmax) | (w < -0.25) | (w > 1.25)

    def full(values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        out = np.full(flat.shape[1], fill, dtype=np.float32)
        out[idx] = values
        return out.reshape(spatial)

    x = np.where(bad_sel, np.nan, li_charged + w * (li_pristine - li_charged))
    bad = np.zeros(flat.shape[1], bool)
    bad[idx] = bad_sel
    if bad_sel.any():
        log.warning("%d of %d active-material voxels fitted badly (R-factor > %.3g or weight outside "
                    "[-0.25, 1.25]): left unmapped", int(bad_sel.sum()), idx.size, rmax)
    x_map = full(x)
    return NEnergyMap(x_li=x_map, edge_ev=full(edge_energy_half(e, norm.norm)), r_factor=full(rf),
                      bad_fit=bad.reshape(spatial), am=am.reshape(spatial), edge_step=full(norm.edge_step),
                      e0_ev=e0, r_factor_max=rmax,
                      classes=np.asarray(classify_li(x_map, poor_max=class_thresholds[0],
                                                     rich_min=class_thresholds[1])))
