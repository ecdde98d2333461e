"""Unsupervised phase finding in spectral stacks: PCA and NMF (scikit-learn).

Spectra are energy-on-axis-0 arrays ``(E, ...)``; voxels are the samples. PCA tells how many
independent spectral components the data support (explained variance); NMF gives non-negative,
physically interpretable end-member spectra and their per-voxel abundances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from litomo.errors import DataError


@dataclass
class Decomposition:
    """Components (K, E) and per-voxel scores/abundances (K, ...)."""

    components: np.ndarray
    scores: np.ndarray
    explained_variance_ratio: np.ndarray | None
    reconstruction_error: float


def _as_samples(mu) -> tuple[np.ndarray, tuple[int, ...]]:
    a = np.asarray(mu, dtype=float)
    if a.ndim < 2:
        raise DataError(
            f"need spectra with energy on axis 0 and at least one voxel axis, got {a.shape}"
        )
    x = a.reshape(a.shape[0], -1).T
    keep = np.all(np.isfinite(x), axis=1)
    if keep.sum() < 2:
        raise DataError("fewer than two finite spectra to decompose")
    return x, keep, a.shape[1:]


def _scores_back(scores_kept: np.ndarray, keep: np.ndarray, spatial) -> np.ndarray:
    out = np.full((keep.size, scores_kept.shape[1]), np.nan)
    out[keep] = scores_kept
    return out.T.reshape((scores_kept.shape[1], *spatial))


def pca_spectra(mu, n_components: int) -> Decomposition:
    """Principal components of the spectra (mean-centred).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> basis = rng.random((2, 30))
    >>> mu = (rng.random((500, 2)) @ basis).T
    >>> d = pca_spectra(mu, 3)
    >>> bool(d.explained_variance_ratio[:2].sum() > 0.999)
    True
    """
    from sklearn.decomposition import PCA

    x, keep, spatial = _as_samples(mu)
    if not 1 <= n_components <= min(x.shape[1], keep.sum()):
        raise DataError(f"n_components must be between 1 and {min(x.shape[1], keep.sum())}")
    pca = PCA(n_components=n_components, svd_solver="full")
    s = pca.fit_transform(x[keep])
    rec = pca.inverse_transform(s)
    err = float(np.sqrt(np.mean((rec - x[keep]) ** 2)))
    return Decomposition(
        pca.components_, _scores_back(s, keep, spatial), pca.explained_variance_ratio_, err
    )


def nmf_spectra(mu, n_components: int, seed: int = 0, *, max_iter: int = 2000) -> Decomposition:
    """Non-negative matrix factorisation ``mu ~ abundances x components``.

    Small negative values (noise in the pre-edge of normalised spectra) are clipped to zero;
    values below ``-5 %`` of the maximum raise DataError (the data are not non-negative).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> basis = rng.random((2, 30))
    >>> d = nmf_spectra((rng.random((200, 2)) @ basis).T, 2, seed=0)
    >>> d.components.shape
    (2, 30)
    """
    from sklearn.decomposition import NMF

    x, keep, spatial = _as_samples(mu)
    xk = x[keep]
    if xk.min() < -0.05 * max(xk.max(), 1e-12):
        raise DataError("NMF needs non-negative spectra; shift or normalise them first")
    xk = np.clip(xk, 0.0, None)
    model = NMF(n_components=n_components, init="nndsvda", random_state=seed, max_iter=max_iter)
    s = model.fit_transform(xk)
    err = float(np.sqrt(np.mean((s @ model.components_ - xk) ** 2)))
    return Decomposition(model.components_, _scores_back(s, keep, spatial), None, err)
