"""Li content in its microstructural context, and what a 2-D projection of the 3-D map would show.

Three analyses of a calibrated x_Li map (NaN outside the active material, AM) with its particle
labels (issue 16, item 5; definitions in docs/science.md, "Li in context"):

- :func:`pore_proximity_li`: per particle, mean x_Li within ``distance_um`` of the particle's own
  internal voids (enclosed pores and enclosed cracks, :func:`litomo.metrics.internal_pores.internal_void_labels`)
  versus the rest of the particle (its bulk);
- :func:`cbd_contact_li`: per particle, the share of its surface voxels that touch the carbon-binder
  domain (CBD) and the mean x_Li of those surface voxels versus the free ones (needs a phase volume);
- :func:`projection_comparison`: the AM-weighted projection of the map along the beam (z), as a 2-D
  TXM-XANES image would record it, its Li classes against the 3-D classes, and the share of "false
  intermediate" columns: averaging a Li-poor and a Li-rich voxel along a column gives a 2-D value
  between the class thresholds although no voxel of the column is intermediate.

Means are weighted by ``weights`` (e.g. the AM fraction of each binned voxel, the Ni it holds);
voxels with NaN x_Li count for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from litomo.errors import DataError
from litomo.volume import as_voxel_size
from litomo.xanes.threeenergy import classify_li

#: classes of :func:`litomo.xanes.threeenergy.classify_li` (0 poor, 1 moderate, 2 rich)
_CLASS_NAMES = ("poor", "moderate", "rich")


def _check_inputs(x_li: Any, particles: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x_li)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"x_li must be a 3D (z, y, x) float array, got {x.dtype} {x.shape}")
    lab = np.asarray(particles)
    if lab.shape != x.shape or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"particle labels must be an integer array of the Li map's shape {x.shape}, got "
                        f"{lab.dtype} {lab.shape}")
    w = np.ones(x.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape:
        raise DataError(f"weights {w.shape} differ in shape from the Li map {x.shape}")
    w = np.where(np.isfinite(x) & np.isfinite(w), np.clip(w, 0.0, None), 0.0)
    return x, lab, w


def _weighted_means(lab: np.ndarray, x: np.ndarray, w: np.ndarray, sel: np.ndarray, n: int) -> tuple[Any, Any]:
    """Per label (0..n-1): weighted mean x_Li over ``sel`` voxels, and their voxel count."""
    ll = lab[sel].astype(np.intp)
    ws = w[sel]
    s0 = np.bincount(ll, weights=ws, minlength=n)
    s1 = np.bincount(ll, weights=ws * np.nan_to_num(x[sel]), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s0 > 0, s1 / s0, np.nan), np.bincount(ll, minlength=n)


def pore_proximity_li(x_li: Any, particles: Any, *, voxel_size_um: Any, distance_um: float,
                      weights: Any = None) -> pd.DataFrame:
    """Per particle: mean x_Li near its own internal voids versus in its bulk.

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    particles : array_like of int, (z, y, x)
        Particle labels (0 = none); a particle's internal voids are the 0-voxels it alone
        encloses (:func:`litomo.metrics.internal_pores.internal_void_labels`): cracks count
        only where they are closed, a crack open to the particle surface is surface.
    voxel_size_um : float or (z, y, x)
        Voxel size (um); distances are Euclidean with anisotropic voxels.
    distance_um : float
        A particle voxel whose centre lies within this distance of a centre of one of the
        particle's own void voxels is "near a void"; the others are the bulk.
    weights : array_like of float, optional
        Per-voxel weights of the means (e.g. AM fraction); default 1.

    Returns
    -------
    pandas.DataFrame
        One row per particle: ``particle, void_voxels, n_near_void, mean_li_near_void, n_bulk,
        mean_li_bulk, li_near_minus_bulk`` (NaN means where a set holds no mapped voxel; a
        particle without voids has ``n_near_void = 0``).

    Examples
    --------
    >>> lab = np.zeros((7, 7, 7), np.int32); lab[1:6, 1:6, 1:6] = 1; lab[3, 3, 3] = 0
    >>> x = np.where(lab > 0, 0.9, np.nan); x[2:5, 2:5, 2:5] = 0.3; x[3, 3, 3] = np.nan
    >>> t = pore_proximity_li(x, lab, voxel_size_um=1.0, distance_um=1.8)
    >>> t[["void_voxels", "n_near_void", "mean_li_near_void", "mean_li_bulk"]].round(6).values.tolist()
    [[1.0, 26.0, 0.3, 0.9]]
    """
    from litomo.metrics.internal_pores import internal_void_labels

    x, lab, w = _check_inputs(x_li, particles, weights)
    if not np.isfinite(distance_um) or distance_um < 0:
        raise DataError(f"distance_um must be >= 0, got {distance_um}")
    vs = as_voxel_size(voxel_size_um)
    voids = internal_void_labels(lab)
    near = np.zeros(x.shape, bool)
    # a particle's voids lie inside its bounding box (it encloses them), so the distance to
    # them is exact within that box
    for i, sl in enumerate(ndi.find_objects(lab)):
        if sl is None or not (voids[sl] == i + 1).any():
            continue
        dist = ndi.distance_transform_edt(voids[sl] != i + 1, sampling=vs)
        near[sl] |= (lab[sl] == i + 1) & (dist <= distance_um)
    n = int(lab.max()) + 1
    inside = lab > 0
    m_near, c_near = _weighted_means(lab, x, w, inside & near, n)
    m_bulk, c_bulk = _weighted_means(lab, x, w, inside & ~near, n)
    ids = np.unique(lab[inside])
    nvoid = np.bincount(voids.ravel(), minlength=n)
    return pd.DataFrame({"particle": ids, "void_voxels": nvoid[ids].astype(float),
                         "n_near_void": c_near[ids].astype(float), "mean_li_near_void": m_near[ids],
                         "n_bulk": c_bulk[ids].astype(float), "mean_li_bulk": m_bulk[ids],
                         "li_near_minus_bulk": m_near[ids] - m_bulk[ids]})


def cbd_contact_li(x_li: Any, particles: Any, phase_labels: Any, *, weights: Any = None) -> pd.DataFrame:
    """Per particle: share of its surface touching the CBD and mean x_Li there versus the free surface.

    A surface voxel is a particle voxel with a face neighbour outside its particle
    (:func:`litomo.statistics.surface_voxels`); it touches the CBD when one of its six face
    neighbours is CBD (phase code 2).

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    particles : array_like of int, (z, y, x)
        Particle labels (0 = none).
    phase_labels : array_like of int, (z, y, x)
        Canonical phases (0 pore, 1 AM, 2 CBD) on the same grid.
    weights : array_like of float, optional
        Per-voxel weights of the means; default 1.

    Returns
    -------
    pandas.DataFrame
        ``particle, n_surface_voxels, cbd_contact_fraction, mean_li_cbd_contact,
        mean_li_free_surface``.

    Examples
    --------
    >>> lab = np.zeros((5, 5, 5), np.int32); lab[1:4, 1:4, 1:4] = 1
    >>> ph = np.where(lab > 0, 1, 0); ph[0] = 2
    >>> x = np.where(lab > 0, 0.9, np.nan); x[1] = np.where(lab[1] > 0, 0.5, np.nan)
    >>> t = cbd_contact_li(x, lab, ph)
    >>> cols = ["n_surface_voxels", "cbd_contact_fraction", "mean_li_cbd_contact", "mean_li_free_surface"]
    >>> t[cols].round(4).values.tolist()
    [[26.0, 0.3462, 0.5, 0.9]]
    """
    from litomo.phases import PHASE_CODES
    from litomo.statistics import surface_voxels

    x, lab, w = _check_inputs(x_li, particles, weights)
    ph = np.asarray(phase_labels)
    if ph.shape != x.shape:
        raise DataError(f"phase labels {ph.shape} differ in shape from the Li map {x.shape}")
    surf = surface_voxels(lab)
    touch = surf & ndi.binary_dilation(ph == PHASE_CODES["cbd"], ndi.generate_binary_structure(3, 1))
    n = int(lab.max()) + 1
    m_touch, c_touch = _weighted_means(lab, x, w, touch, n)
    m_free, c_free = _weighted_means(lab, x, w, surf & ~touch, n)
    ids = np.unique(lab[lab > 0])
    n_surf = (c_touch + c_free)[ids].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = c_touch[ids] / n_surf
    return pd.DataFrame({"particle": ids, "n_surface_voxels": n_surf, "cbd_contact_fraction": frac,
                         "mean_li_cbd_contact": m_touch[ids], "mean_li_free_surface": m_free[ids]})


#: a map voxel outside the particles is CBD when at least this share of its fine voxels is CBD
CBD_MIN_SHARE = 0.25
#: the pore / CBD split of the post-edge image is used only when it is this bimodal (Otsu's
#: effectiveness, between-class over total variance): a single Gaussian gives 2/pi = 0.64; two
#: Gaussians of equal width, 30 % / 70 %, reach 0.75 at a separation of 3.8 widths
CBD_MIN_EFFECTIVENESS = 0.75


@dataclass
class CbdMask:
    """CBD voxels of a post-edge image (:func:`cbd_from_post_edge`); ``mask`` is None when not separable."""

    mask: np.ndarray | None
    #: post-edge value between pore and CBD (NaN when not separable)
    threshold: float
    #: Otsu's effectiveness of the pore / CBD split of the non-AM voxels
    effectiveness: float


def cbd_from_post_edge(post: Any, am_threshold: float) -> CbdMask:
    """CBD voxels of a post-edge image: the brighter Otsu class of the voxels below the AM threshold.

    Above the Ni K edge the active material absorbs far more than the carbon-binder domain,
    which absorbs more than empty pores. The AM is split off at ``am_threshold`` (the run's
    particle threshold); the rest is split in two by Otsu's threshold (two steps of a
    three-class threshold, the first fixed by the run so that pores and CBD do not share a
    class with the particles' partial-volume surfaces' majority). The split is kept only when
    the rest is bimodal (:data:`CBD_MIN_EFFECTIVENESS`): electrolyte-filled pores absorb about
    as much as binder, and a split of one noisy class would call half the pores CBD.

    Parameters
    ----------
    post : array_like of float
        Post-edge attenuation (any grid, e.g. the registration grid).
    am_threshold : float
        Attenuation above which a voxel is active material.

    Returns
    -------
    CbdMask

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.r_[rng.normal(0, 0.05, 700), rng.normal(1, 0.05, 300), rng.normal(10, 0.05, 500)]
    >>> c = cbd_from_post_edge(v, 5.0)
    >>> int(c.mask[700:1000].sum()), int(c.mask[1000:].sum()), c.effectiveness > 0.9
    (300, 0, True)
    >>> cbd_from_post_edge(rng.normal(0, 0.1, 1000), 5.0).mask is None
    True
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(post, np.float64)
    rest = v[np.isfinite(v) & (v <= am_threshold)]
    if rest.size < 16 or np.ptp(rest) == 0:
        return CbdMask(None, float("nan"), float("nan"))
    t = float(threshold_otsu(rest, nbins=256))
    lo, hi = rest[rest <= t], rest[rest > t]
    between = lo.size * hi.size / rest.size**2 * (hi.mean() - lo.mean()) ** 2
    eff = float(between / rest.var())
    if eff < CBD_MIN_EFFECTIVENESS:
        return CbdMask(None, float("nan"), eff)
    return CbdMask((v > t) & (v <= am_threshold), t, eff)


def map_grid_phases(cbd_fine: Any, particles: Any, fine_factor: Any, factor: Any) -> np.ndarray:
    """Pore / AM / CBD codes on the map grid from a CBD mask on a finer grid of the same volume.

    AM where ``particles`` > 0; elsewhere CBD when at least :data:`CBD_MIN_SHARE` of the fine
    voxels whose centres fall in the map voxel are CBD (both grids bin one full-resolution grid
    by ``fine_factor`` and ``factor``; the ratio need not be an integer); pore otherwise. Binder
    films thinner than that share of a map voxel are lost (docs/science.md).

    Examples
    --------
    >>> cbd = np.zeros((4, 4, 4), bool); cbd[:, :, 3] = True
    >>> lab = np.zeros((2, 2, 2), np.int32); lab[:, :, 0] = 1
    >>> map_grid_phases(cbd, lab, 1, 2)[0, 0].tolist()
    [1, 2]
    """
    from litomo.phases import PHASE_CODES

    lab = np.asarray(particles)
    c = np.asarray(cbd_fine, bool)
    ff = np.broadcast_to(np.asarray(fine_factor, float), 3)
    cf = np.broadcast_to(np.asarray(factor, float), 3)
    idx = [np.floor((np.arange(n) + 0.5) * ff[a] / cf[a]).astype(np.int64) for a, n in enumerate(c.shape)]
    keep = [np.flatnonzero(i < n) for i, n in zip(idx, lab.shape, strict=True)]
    iz, iy, ix = (i[k] for i, k in zip(idx, keep, strict=True))
    flat = ((iz[:, None, None] * lab.shape[1] + iy[None, :, None]) * lab.shape[2] + ix[None, None, :]).ravel()
    n = int(lab.size)
    share = np.bincount(flat, weights=c[np.ix_(*keep)].ravel(), minlength=n) / np.maximum(
        np.bincount(flat, minlength=n), 1)
    out = np.where(share.reshape(lab.shape) >= CBD_MIN_SHARE, PHASE_CODES["cbd"], PHASE_CODES["pore"])
    return np.where(lab > 0, PHASE_CODES["am"], out).astype(np.uint8)


def project_li(x_li: Any, weights: Any = None, *, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The x_Li a 2-D transmission image would record: the AM-weighted mean along the beam.

    A TXM-XANES pixel sees the absorbance summed along its ray; the edge ratio of that sum is
    the Ni-weighted mean Li content of the column (the references are linear in x_Li), so the
    2-D x_Li of a column is sum(w x) / sum(w) with w the AM (Ni) in each voxel.

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    weights : array_like of float, optional
        AM amount per voxel (e.g. the AM fraction of a binned voxel); default 1 per mapped voxel.
    axis : int
        Beam axis (default 0: z, through the electrode, as in a plan-view 2-D image).

    Returns
    -------
    map_2d : ndarray of float
        Projected x_Li, NaN for columns without AM.
    weight_2d : ndarray of float
        Summed weight per column (the AM the column holds).

    Examples
    --------
    >>> x = np.array([0.3, 0.95])[:, None, None] * np.ones((2, 1, 2))
    >>> m, w = project_li(x)
    >>> m.round(3).tolist(), w.tolist()
    ([[0.625, 0.625]], [[2.0, 2.0]])
    """
    x = np.asarray(x_li, dtype=np.float64)
    w = np.ones(x.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape:
        raise DataError(f"weights {w.shape} differ in shape from the Li map {x.shape}")
    w = np.where(np.isfinite(x) & np.isfinite(w), np.clip(w, 0.0, None), 0.0)
    s0 = w.sum(axis=axis)
    s1 = (w * np.nan_to_num(x)).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s0 > 0, s1 / s0, np.nan), s0


@dataclass
class ProjectionComparison:
    """The 2-D projection of a 3-D x_Li map against the 3-D map (:func:`projection_comparison`)."""

    #: projected x_Li (y, x), NaN where a column holds no AM
    map_2d: np.ndarray
    #: AM weight per column
    weight_2d: np.ndarray
    #: AM-weighted class fractions of the 3-D voxels and of the 2-D columns ("poor", "moderate", "rich")
    fractions_3d: dict[str, float]
    fractions_2d: dict[str, float]
    #: of the AM in columns that are intermediate (moderate) in 2-D, the share in voxels that are
    #: not moderate in 3-D (Li-poor or Li-rich): the false intermediate phase of the projection
    false_intermediate_fraction: float
    #: one row per bin: ``bin_left, bin_right, fraction_3d, fraction_2d`` (AM-weighted)
    histogram: pd.DataFrame

    def summary(self) -> dict[str, float]:
        """Flat scalars (for a table row or run.json)."""
        out = {f"frac_li_{k}_3d": v for k, v in self.fractions_3d.items()}
        out.update({f"frac_li_{k}_2d": v for k, v in self.fractions_2d.items()})
        out["moderate_2d_minus_3d"] = self.fractions_2d["moderate"] - self.fractions_3d["moderate"]
        out["false_intermediate_fraction"] = self.false_intermediate_fraction
        return out


def _class_fractions(cls: np.ndarray, w: np.ndarray) -> dict[str, float]:
    tot = float(w.sum())
    return {name: float(w[cls == k].sum()) / tot if tot > 0 else float("nan")
            for k, name in enumerate(_CLASS_NAMES)}


def projection_comparison(x_li: Any, weights: Any = None, *, poor_max: float = 0.6, rich_min: float = 0.9,
                          bins: Any = None) -> ProjectionComparison:
    """Project a 3-D x_Li map along z (:func:`project_li`) and compare its Li classes with the 3-D map.

    Parameters
    ----------
    x_li : array_like of float, (z, y, x)
        Li content, NaN outside the AM.
    weights : array_like of float, optional
        AM amount per voxel; default 1 per mapped voxel.
    poor_max, rich_min : float
        Class thresholds (:func:`litomo.xanes.threeenergy.classify_li`).
    bins : array_like, optional
        Histogram edges (default 0 to 1.2 in 0.02 steps).

    Returns
    -------
    ProjectionComparison

    Examples
    --------
    >>> x = np.ones((2, 3, 3)); x[0] = 0.3; x[1] = 0.95
    >>> c = projection_comparison(x)
    >>> c.fractions_3d["moderate"], c.fractions_2d["moderate"], c.false_intermediate_fraction
    (0.0, 1.0, 1.0)
    """
    x = np.asarray(x_li, dtype=np.float64)
    if x.ndim != 3:
        raise DataError(f"x_li must be a 3D (z, y, x) array, got shape {x.shape}")
    m2, w2 = project_li(x, weights)
    w3 = np.ones(x.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    w3 = np.where(np.isfinite(x) & np.isfinite(w3), np.clip(w3, 0.0, None), 0.0)
    c3 = classify_li(x, poor_max=poor_max, rich_min=rich_min)
    c2 = classify_li(m2, poor_max=poor_max, rich_min=rich_min)
    col_moderate = np.broadcast_to(c2 == 1, x.shape)
    w_mod = float(w3[col_moderate].sum())
    false = float(w3[col_moderate & (c3 != 1)].sum()) / w_mod if w_mod > 0 else float("nan")
    edges = np.linspace(0.0, 1.2, 61) if bins is None else np.asarray(bins, dtype=np.float64)
    ok3, ok2 = w3 > 0, w2 > 0
    h3 = np.histogram(x[ok3], bins=edges, weights=w3[ok3])[0]
    h2 = np.histogram(m2[ok2], bins=edges, weights=w2[ok2])[0]
    hist = pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:],
                         "fraction_3d": h3 / max(float(w3.sum()), 1e-300),
                         "fraction_2d": h2 / max(float(w2.sum()), 1e-300)})
    return ProjectionComparison(m2, w2, _class_fractions(c3, w3), _class_fractions(c2, w2), false, hist)


__all__ = ["CbdMask", "ProjectionComparison", "cbd_contact_li", "cbd_from_post_edge", "map_grid_phases", "pore_proximity_li", "project_li", "projection_comparison"]
