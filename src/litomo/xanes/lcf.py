"""Vectorised linear-combination fitting of normalised spectra (SPEC 2.2).

Every voxel's normalised spectrum is modelled as ``sum_r w_r ref_r(E)``. All voxels share the
design matrix, so the least-squares solution is one pseudo-inverse applied to all spectra at once
(closed form, like larch ``lincombo_fit`` but without one optimiser call per voxel):

* ``sum_to_one=True``: the constraint is eliminated: with the last reference as base,
  ``mu - ref_R = sum_{r<R} w_r (ref_r - ref_R)`` is an unconstrained fit for ``R - 1`` weights and
  ``w_R = 1 - sum w_r``.
* Uncertainty: ``sigma^2 (A^T A)^-1`` with ``sigma^2 = RSS / (E - p)`` per voxel (the usual
  least-squares covariance scaled by the residual, as lmfit/larch report it); the uncertainty of
  the eliminated weight uses the full covariance.
* ``nonneg=True``: voxels with a negative weight are refitted on every subset of the references
  (exact for the handful of references used in practice) and the feasible subset with the lowest
  residual wins; only the violating voxels are refitted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from litomo.errors import DataError
from litomo.xanes.spectra import Spectrum


@dataclass
class LcfResult:
    """Result of :func:`lcf_fit`; spatial shape of the input is kept.

    Attributes
    ----------
    weights : array (R, ...)
        Fitted weight of each reference.
    residual : array (...)
        Residual sum of squares per voxel.
    uncertainty : array (R, ...)
        One-sigma uncertainty of each weight.
    r_factor : array (...)
        ``sum(resid^2) / sum(mu^2)`` (larch's definition).
    names : list of str
        Reference names.
    """

    weights: np.ndarray
    residual: np.ndarray
    uncertainty: np.ndarray
    r_factor: np.ndarray
    names: list[str]


def _reference_matrix(energy_ev: np.ndarray, references) -> tuple[np.ndarray, list[str]]:
    if isinstance(references, np.ndarray):
        refs = np.asarray(references, dtype=float)
        if refs.ndim != 2 or refs.shape[1] != energy_ev.size:
            raise DataError(f"reference array must be (R, E={energy_ev.size}), got {refs.shape}")
        return refs, [f"ref{i}" for i in range(refs.shape[0])]
    refs = list(references)
    if not refs or not all(isinstance(r, Spectrum) for r in refs):
        raise DataError("references must be a list of Spectrum or an (R, E) array")
    return np.stack([r.at(energy_ev) for r in refs]), [r.name for r in refs]


def _fit_subset(a: np.ndarray, y: np.ndarray, sum_to_one: bool):
    """Closed-form fit of y (E, N) on the columns of a (E, k). Returns weights (k, N), rss, unc (k, N)."""
    n_e, k = a.shape
    if sum_to_one:
        if k == 1:
            w = np.ones((1, y.shape[1]))
            rss = ((y - a[:, :1]) ** 2).sum(axis=0)
            return w, rss, np.zeros((1, y.shape[1]))
        last = a[:, -1:]
        d = a[:, :-1] - last
        yy = y - last
    else:
        d, yy = a, y
    p = d.shape[1]
    gram = d.T @ d
    if np.linalg.matrix_rank(gram) < p:
        raise DataError("the reference spectra are linearly dependent on this energy grid")
    cov_unit = np.linalg.inv(gram)
    w_free = cov_unit @ (d.T @ yy)  # (p, N)
    resid = yy - d @ w_free
    rss = (resid**2).sum(axis=0)
    dof = max(n_e - p, 1)
    sigma2 = rss / dof
    if sum_to_one:
        w = np.vstack([w_free, 1.0 - w_free.sum(axis=0, keepdims=True)])
        var_last = cov_unit.sum()  # Var(1 - sum w) = 1^T C 1
        var = np.concatenate([np.diag(cov_unit), [var_last]])
    else:
        w = w_free
        var = np.diag(cov_unit)
    unc = np.sqrt(var[:, None] * sigma2[None])
    return w, rss, unc


def lcf_fit(
    energy_ev,
    mu_norm,
    references,
    *,
    sum_to_one: bool = True,
    nonneg: bool = False,
    fit_range_ev: tuple[float, float] | None = None,
) -> LcfResult:
    """Linear-combination fit of every spectrum (energy on axis 0) to the references.

    Parameters
    ----------
    energy_ev : array (E,)
        Energies in eV.
    mu_norm : array (E, ...)
        Normalised spectra.
    references : list of Spectrum or array (R, E)
        Spectra are interpolated onto ``energy_ev`` (DataError if they do not cover it).
    sum_to_one : bool
        Constrain the weights to sum to one.
    nonneg : bool
        Constrain the weights to be >= 0.
    fit_range_ev : (lo, hi), optional
        Use only energies in this range (eV), e.g. (E0 - 20, E0 + 30) as in Athena.

    Returns
    -------
    LcfResult

    Examples
    --------
    >>> e = np.linspace(8300, 8400, 51)
    >>> a, b = 1 / (1 + np.exp(-(e - 8340) / 2)), 1 / (1 + np.exp(-(e - 8344) / 2))
    >>> r = lcf_fit(e, 0.3 * a + 0.7 * b, np.stack([a, b]))
    >>> np.round(r.weights, 6).tolist()
    [0.3, 0.7]
    """
    e = np.asarray(energy_ev, dtype=float)
    y = np.asarray(mu_norm, dtype=float)
    if e.ndim != 1 or y.shape[:1] != e.shape:
        raise DataError(
            f"mu_norm must have the energy axis first with {e.size} values, got {y.shape}"
        )
    refs, names = _reference_matrix(e, references)
    if fit_range_ev is not None:
        sel = (e >= fit_range_ev[0]) & (e <= fit_range_ev[1])
        e, y, refs = e[sel], y[sel], refs[:, sel]
    n_r = refs.shape[0]
    if e.size <= n_r:
        raise DataError(f"{e.size} energies cannot constrain {n_r} reference weights")
    spatial = y.shape[1:]
    flat = y.reshape(y.shape[0], -1)
    finite = np.all(np.isfinite(flat), axis=0)
    work = np.where(finite[None], flat, 0.0)
    w, rss, unc = _fit_subset(refs.T, work, sum_to_one)
    if nonneg:
        viol = np.flatnonzero(np.any(w < 0, axis=0) & finite)
        if viol.size:
            best_rss = np.full(viol.size, np.inf)
            best_w = np.zeros((n_r, viol.size))
            best_u = np.zeros((n_r, viol.size))
            yv = work[:, viol]
            for size in range(1, n_r + 1):
                for subset in itertools.combinations(range(n_r), size):
                    ws, rs, us = _fit_subset(refs[list(subset)].T, yv, sum_to_one)
                    ok = np.all(ws >= -1e-12, axis=0) & (rs < best_rss)
                    if ok.any():
                        best_rss[ok] = rs[ok]
                        best_w[:, ok] = 0.0
                        best_u[:, ok] = 0.0
                        best_w[list(subset)] = np.where(
                            ok, np.maximum(ws, 0.0), best_w[list(subset)]
                        )
                        best_u[list(subset)] = np.where(ok, us, best_u[list(subset)])
            w[:, viol], rss[viol], unc[:, viol] = best_w, best_rss, best_u
    denom = (work**2).sum(axis=0)
    rfac = rss / np.where(denom > 0, denom, np.nan)
    w[:, ~finite] = np.nan
    unc[:, ~finite] = np.nan
    rss = np.where(finite, rss, np.nan)
    rfac = np.where(finite, rfac, np.nan)
    shape_r = (n_r, *spatial)

    def _out(a, shape):
        return float(a) if shape == () else a.reshape(shape)

    if spatial == ():
        return LcfResult(w[:, 0], float(rss[0]), unc[:, 0], float(rfac[0]), names)
    return LcfResult(
        w.reshape(shape_r), _out(rss, spatial), unc.reshape(shape_r), _out(rfac, spatial), names
    )
